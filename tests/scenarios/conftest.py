from __future__ import annotations

import secrets

import pytest

from scenarios.runner import Target
from scenarios.telnyx_api import TelnyxRig
from tests.server_process import DaphneServer


@pytest.fixture(scope="module")
def scripted_server(django_db_setup, django_db_blocker):
    """A real daphne (bench.settings: the scripted engines) on the test database, with a
    Twilio auth token of its own and trusting the runner's Telnyx (webhook key, Call Control
    API): the runner's webhooks are signed as the carriers sign them."""
    token = secrets.token_hex(16)
    telnyx = TelnyxRig()
    with django_db_blocker.unblock():
        server = DaphneServer(
            TWILIO_AUTH_TOKEN=token,
            TWILIO_ACCOUNT_SID="",
            TELEPHONY_ALLOW_UNSIGNED="false",
            **telnyx.server_env(),
        )
    server.env["PUBLIC_BASE_URL"] = server.base
    server.start()
    target = Target(
        base_url=server.base, auth_token=token, public_base_url=server.base, telnyx=telnyx
    )
    yield server, target
    server.stop()
