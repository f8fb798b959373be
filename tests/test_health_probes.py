"""Health probes answer whatever their Host header is (voiceapp/middleware.py).

Docker's healthcheck curls 127.0.0.1:8000 and Kubernetes probes the pod IP, while a
deployment allows only its public name (ALLOWED_HOSTS=voice.example.com).
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.server_process import DaphneServer

PUBLIC_ONLY = ["voice.example.com"]


@pytest.fixture
def public_only(settings):
    settings.ALLOWED_HOSTS = PUBLIC_ONLY


@pytest.mark.django_db
@pytest.mark.parametrize("host", ["127.0.0.1:8000", "10.42.3.17:8000", "voice.example.com"])
def test_probes_answer_whatever_the_host_header_is(client, public_only, host):
    assert client.get("/health/", HTTP_HOST=host).json() == {"status": "ok"}
    ready = client.get("/health/ready/", HTTP_HOST=host)
    assert ready.status_code == 200 and ready.json()["checks"]["database"]["ok"]


@pytest.mark.django_db
async def test_probes_answer_any_host_through_the_async_handler(async_client, public_only):
    live = await async_client.get("/health/", headers={"host": "10.42.3.17:8000"})
    ready = await async_client.get("/health/ready/", headers={"host": "10.42.3.17:8000"})

    assert live.status_code == 200 and ready.status_code == 200, ready.content


def test_other_pages_still_validate_the_host(client, public_only):
    assert client.get("/admin/login/", HTTP_HOST="10.42.3.17:8000").status_code == 400
    assert client.get("/health/?x=1", HTTP_HOST="evil.example").status_code == 200
    assert client.get("/health/nope/", HTTP_HOST="evil.example").status_code == 400


def test_a_probe_path_keeps_its_view_rules(client, public_only):
    # The view's own require_GET still applies: the middleware only skips the host check.
    assert client.post("/health/", HTTP_HOST="10.42.3.17:8000").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_the_docker_healthcheck_passes_in_production_mode():
    """The image's HEALTHCHECK (curl 127.0.0.1:8000/health/) with DEBUG=false and the
    documented ALLOWED_HOSTS: it got 400 before, so the container was never healthy."""
    server = DaphneServer(
        DJANGO_SETTINGS_MODULE="voiceapp.settings",
        DEBUG="false",
        SECRET_KEY="test-only-secret-key-0123456789abcdef0123456789abcdef",
        ALLOWED_HOSTS="voice.example.com",
        PRELOAD_ENGINES="false",  # no models: this test is about the Host header
    )
    try:
        server.start(timeout=30)  # polls /health/ with Host 127.0.0.1:<port>
        base = server.base
        assert httpx.get(f"{base}/health/ready/", timeout=5).status_code == 200
        assert httpx.get(f"{base}/admin/", timeout=5).status_code == 400  # host still checked
        public = httpx.get(f"{base}/admin/", headers={"host": "voice.example.com"}, timeout=5)
        assert public.status_code == 301  # the public name is served (redirected to https)
        curl = subprocess.run(
            ["curl", "-fsS", f"{base}/health/"], capture_output=True, text=True, timeout=10
        )
        assert curl.returncode == 0 and '"ok"' in curl.stdout, curl.stderr
    finally:
        server.stop()
