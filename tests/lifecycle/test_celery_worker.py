"""Extraction through a real Celery worker and the real Redis broker (CI sets REDIS_URL)."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from calls import services
from calls.models import Call, ExtractionStatus
from tests.fake_vendor import FakeVendor, Reply

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_real_worker_extracts_an_ended_call_via_the_redis_broker(profile, settings, celery_eager):
    if not settings.REDIS_URL or connection.vendor != "postgresql":
        pytest.skip(
            "needs the real Redis broker and PostgreSQL (REDIS_URL and DATABASE_URL set, as in CI)"
        )
    queue = f"test-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    with FakeVendor() as vendor:
        vendor.default["chat"] = Reply.chat(
            json.dumps({"summary": "Booked.", "intent": "book_table", "sentiment": "neutral",
                        "extracted_entities": {}, "next_action": "none"})
        )  # fmt: skip
        env = {
            **os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_QUEUE": queue,
            "GROQ_API_KEY": "gsk-test",
            "GROQ_BASE_URL": vendor.groq_base_url,
        }
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "voiceapp", "worker", "--pool", "solo",
             "--concurrency", "1", "--without-gossip", "--without-mingle", "-l", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        celery_eager.conf.task_always_eager = False
        celery_eager.conf.task_default_queue = queue
        try:
            call = services.call_start(profile=profile, channel="twilio")
            now = timezone.now()
            services.turn_record(
                call_id=call.id, role="user", text="table for two", started_at=now, ended_at=now
            )
            settings.GROQ_API_KEY = "gsk-test"
            services.call_end(call_id=call.id, reason="caller_hangup")

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and worker.poll() is None:
                status = Call.objects.get(pk=call.pk).extraction_status
                if status != ExtractionStatus.PENDING:
                    break
                time.sleep(0.25)
        finally:
            celery_eager.conf.task_always_eager = True
            celery_eager.conf.task_default_queue = settings.CELERY_TASK_DEFAULT_QUEUE
            worker.terminate()
            output = worker.communicate(timeout=30)[0].decode(errors="replace")
        call.refresh_from_db()
        assert call.extraction_status == ExtractionStatus.DONE, output[-2000:]
        assert call.extraction["intent"] == "book_table"
        assert len(vendor.calls("chat")) == 1
