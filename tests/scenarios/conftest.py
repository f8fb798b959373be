from __future__ import annotations

import secrets

import pytest

from scenarios.runner import Target
from tests.server_process import DaphneServer


@pytest.fixture(scope="module")
def scripted_server(django_db_setup, django_db_blocker):
    """A real daphne (bench.settings: the scripted engines) on the test database, with a
    Twilio auth token of its own: the runner's webhooks are signed as Twilio signs them."""
    token = secrets.token_hex(16)
    with django_db_blocker.unblock():
        server = DaphneServer(
            TWILIO_AUTH_TOKEN=token, TWILIO_ACCOUNT_SID="", TELEPHONY_ALLOW_UNSIGNED="false"
        )
    server.env["PUBLIC_BASE_URL"] = server.base
    server.start()
    yield server, Target(base_url=server.base, auth_token=token, public_base_url=server.base)
    server.stop()
