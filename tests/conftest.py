from __future__ import annotations

import pytest


@pytest.fixture
def profile(db):
    from calls.services import profile_ensure_demo

    return profile_ensure_demo()


@pytest.fixture
def staff_user(db, django_user_model):
    return django_user_model.objects.create_user(
        username="staff", password="pw-for-tests-1", is_staff=True, is_superuser=True
    )


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def httpserver_calls():
    """A local HTTP server that records JSON POST bodies: (url, list_of_bodies)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True, scope="session")
def celery_eager():
    """Unit tests run Celery tasks in-process; the worker integration test turns this off."""
    from voiceapp.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = False
    yield app


@pytest.fixture(autouse=True, scope="session")
def redis_key_prefix():
    """Our Redis keys get a per-run prefix, so concurrent test runs never share stop state."""
    import os

    from django.conf import settings

    settings.REDIS_KEY_PREFIX = f"voiceapp-test-{os.getpid()}"
    return settings.REDIS_KEY_PREFIX


@pytest.fixture(autouse=True)
def calls_not_globally_stopped(redis_key_prefix):
    """Every test starts with calls allowed and an empty error window."""
    wipe_global_stop()
    yield
    wipe_global_stop()


def wipe_global_stop() -> None:
    from django.conf import settings
    from django.core.cache import cache

    from calls import global_stop

    keys = [global_stop._key("errors"), global_stop._key("stopped")]
    cache.delete_many(keys)
    if settings.REDIS_URL:
        client = global_stop._redis()
        try:
            client.delete(*keys)
        finally:
            client.close()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """No persistent connections in tests: threads of database_sync_to_async would keep the
    test database open past teardown (PostgreSQL then refuses to drop it)."""
    from django.conf import settings

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session", autouse=True)
def release_leftover_db_sessions(django_db_setup, django_db_blocker):
    """Before the test database is dropped, end the PostgreSQL sessions other threads of
    this run still hold (a background thread's connection that outlived its test): the
    drop would fail otherwise and the next run would find the old database."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture
def groq_vendor(settings):
    """The local fake vendor server (tests/fake_vendor.py), as the Groq engines' endpoint."""
    from tests.fake_vendor import FakeVendor

    with FakeVendor() as fake:
        settings.GROQ_API_KEY = "gsk-test"
        settings.GROQ_BASE_URL = fake.groq_base_url
        yield fake
