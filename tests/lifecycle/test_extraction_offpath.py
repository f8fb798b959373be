"""Development mode (no broker, eager Celery): a hanging extraction LLM holds neither the call
that ended, nor other calls, nor the process's exit, and ends ``failed`` after its bound."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
from django.utils import timezone

from calls import inline_tasks, services
from calls.models import Call, ExtractionStatus
from tests.fake_vendor import FakeVendor, Reply
from tests.server_process import ROOT, database_url

pytestmark = pytest.mark.django_db(transaction=True)

HANG_S = 120  # the fake LLM answers after this long: longer than any test waits


@pytest.fixture
def hanging_llm(settings):
    with FakeVendor() as fake:
        fake.default["chat"] = Reply.chat("{}", delay_s=HANG_S)
        settings.GROQ_API_KEY = "gsk-test"
        settings.GROQ_BASE_URL = fake.groq_base_url
        yield fake


def _call_with_speech(profile) -> Call:
    call = services.call_start(profile=profile, channel="browser")
    now = timezone.now()
    services.turn_record(
        call_id=call.id, role="user", text="A table for two, please.", started_at=now, ended_at=now
    )
    return call


def _wait_for_extraction(call: Call, timeout_s: float) -> Call:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        call.refresh_from_db()
        if call.extraction_status not in (ExtractionStatus.PENDING, "running"):
            return call
        time.sleep(0.1)
    return call


def test_call_end_returns_at_once_and_other_calls_go_on_while_the_extraction_llm_hangs(
    profile, hanging_llm, settings
):
    settings.EXTRACTION_TIMEOUT_SECONDS = 2.0
    ended = _call_with_speech(profile)

    started = time.monotonic()
    services.call_end(call_id=ended.id, reason="caller_hangup")
    assert time.monotonic() - started < 1.0, "call_end waited for the extraction"

    # Another call's database work is not queued behind the hanging extraction.
    started = time.monotonic()
    other = _call_with_speech(profile)
    services.turn_record(
        call_id=other.id,
        role="assistant",
        text="For when?",
        started_at=timezone.now(),
        ended_at=timezone.now(),
    )
    assert time.monotonic() - started < 1.0

    ended = _wait_for_extraction(ended, timeout_s=15)
    assert hanging_llm.calls("chat"), "the extraction never asked the LLM"
    assert ended.extraction_status == ExtractionStatus.FAILED
    assert "timed out after 2s" in ended.extraction_error
    assert inline_tasks.wait_idle(5)


def test_the_process_exits_at_once_although_an_extraction_llm_hangs(profile, hanging_llm):
    """SIGTERM needed SIGKILL when the extraction ran in a thread the exit waits for."""
    call = _call_with_speech(profile)
    script = textwrap.dedent(
        f"""
        import django
        django.setup()
        from calls import services
        services.call_end(call_id="{call.id}", reason="caller_hangup")
        print("ended", flush=True)
        import time
        time.sleep(1.5)  # the server runs on a little; the extraction's request is in flight
        """
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "voiceapp.settings",
        "DATABASE_URL": database_url(),
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",
        "GROQ_API_KEY": "gsk-test",
        "GROQ_BASE_URL": hanging_llm.groq_base_url,
        "EXTRACTION_TIMEOUT_SECONDS": "60",
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    try:
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert b"ended" in out and process.returncode == 0
    assert time.monotonic() - started < 15, "the exit waited for the hanging extraction"
    # The chat request was made (the extraction had started) before the process left.
    assert hanging_llm.calls("chat")
