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
