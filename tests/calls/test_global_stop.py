import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from calls import global_stop
from calls.models import GlobalStopEvent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def policy(settings):
    settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW = 3
    settings.GLOBAL_STOP_WINDOW_SECONDS = 60
    settings.ADMIN_NOTIFICATION_WEBHOOK_URL = ""


@pytest.mark.django_db
def test_calls_stop_after_max_errors_in_the_window_and_resume_on_reset():
    assert global_stop.calls_allowed()
    assert not global_stop.report_critical_error(reason="groq 500", call_id="a")
    assert not global_stop.report_critical_error(reason="groq 500", call_id="b")
    assert global_stop.report_critical_error(reason="groq 500", call_id="c")
    assert not global_stop.calls_allowed()
    # Further errors do not stop (and notify) again.
    assert not global_stop.report_critical_error(reason="groq 500", call_id="d")
    assert GlobalStopEvent.objects.filter(action="stop").count() == 1

    assert global_stop.reset(actor="alice")
    assert global_stop.calls_allowed()
    assert GlobalStopEvent.objects.filter(action="reset", actor="alice").exists()


def _database_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@pytest.mark.django_db(transaction=True)
def test_errors_counted_in_another_process_stop_calls_here(settings):
    if not settings.REDIS_URL or connection.vendor != "postgresql":
        pytest.skip(
            "needs the real Redis and PostgreSQL (REDIS_URL and DATABASE_URL set, as in CI)"
        )
    script = (
        "import django; django.setup()\n"
        "from calls import global_stop\n"
        "for i in range(3): global_stop.report_critical_error(reason='azure timeout', call_id=str(i))\n"
    )
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "voiceapp.settings",
        "GLOBAL_STOP_MAX_ERRORS_IN_WINDOW": "3",
        "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
        "ADMIN_NOTIFICATION_WEBHOOK_URL": "",
    }
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=60)

    assert not global_stop.calls_allowed()
    state = global_stop.state()
    assert state.stopped and len(state.recent_errors) == 3
    assert state.recent_errors[0]["reason"] == "azure timeout"


@pytest.mark.django_db
def test_reset_api_requires_the_admin_api_key(client, settings):
    settings.ADMIN_API_KEY = "s3cret-key"
    for _ in range(3):
        global_stop.report_critical_error(reason="x")
    assert client.post("/api/global-stop/reset/").status_code == 401
    wrong = client.post("/api/global-stop/reset/", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403
    assert not global_stop.calls_allowed()

    ok = client.post("/api/global-stop/reset/", HTTP_AUTHORIZATION="Bearer s3cret-key")
    assert ok.status_code == 200 and ok.json()["was_stopped"] is True
    assert global_stop.calls_allowed()
    assert GlobalStopEvent.objects.filter(action="reset", actor="api").exists()


@pytest.mark.django_db
def test_admin_global_stop_page_shows_state_and_resets(staff_client):
    for _ in range(3):
        global_stop.report_critical_error(reason="tts down", channel="twilio")
    page = staff_client.get("/admin/global-stop/")
    assert (
        page.status_code == 200
        and b"globally stopped" in page.content
        and b"tts down" in page.content
    )
    response = staff_client.post("/admin/global-stop/")
    assert response.status_code == 302 and global_stop.calls_allowed()
    assert GlobalStopEvent.objects.filter(action="reset", actor="staff").exists()


def test_admin_global_stop_page_is_staff_only(client):
    response = client.get("/admin/global-stop/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_admin_is_notified_once_per_stop(settings, httpserver_calls):
    url, received = httpserver_calls
    settings.ADMIN_NOTIFICATION_WEBHOOK_URL = url
    threads = []
    original = global_stop._notify_admin_in_background

    def spy(payload):
        thread = original(payload)
        threads.append(thread)
        return thread

    global_stop._notify_admin_in_background = spy
    try:
        for _ in range(5):
            global_stop.report_critical_error(reason="llm 503")
    finally:
        global_stop._notify_admin_in_background = original
    for thread in threads:
        thread.join(timeout=20)
    assert len(threads) == 1
    assert len(received) == 1 and received[0]["event"] == "global_call_stop_activated"


def test_metrics_endpoint_exposes_prometheus_text(client, settings):
    settings.METRICS_TOKEN = "m-token"
    assert client.get("/metrics").status_code == 403
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer m-token")
    assert response.status_code == 200
    body = response.content.decode()
    assert "voiceapp_active_calls" in body and "voiceapp_turn_latency_seconds" in body
