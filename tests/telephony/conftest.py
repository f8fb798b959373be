"""Carrier test settings, signing with test keys, recorded payloads, a fake carrier API."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from twilio.request_validator import RequestValidator

from tests.telephony.fake_carrier import FakeCarrier

DATA = Path(__file__).resolve().parent.parent / "data"
PUBLIC = "https://agent.example.com"
TWILIO_TOKEN = "test-twilio-auth-token-0123456789"
TWILIO_ACCOUNT = "AC" + "0" * 32


def payload(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


def twilio_signature(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


def telnyx_headers(key: SigningKey, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(ts.encode() + b"|" + body).signature
    return {
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
        "telnyx-timestamp": ts,
    }


@pytest.fixture
def telnyx_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(autouse=True)
def carrier_settings(settings, telnyx_key):
    settings.PUBLIC_BASE_URL = PUBLIC
    settings.TWILIO_AUTH_TOKEN = TWILIO_TOKEN
    # No REST credentials unless a test brings the fake carrier: nothing may reach the real APIs.
    settings.TWILIO_ACCOUNT_SID = ""
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"
    settings.TWILIO_FROM_NUMBER = "+34910000001"
    settings.TELNYX_PUBLIC_KEY = base64.b64encode(bytes(telnyx_key.verify_key)).decode()
    settings.TELNYX_API_KEY = ""
    settings.TELNYX_API_BASE_URL = "http://127.0.0.1:9/v2"
    settings.TELNYX_CONNECTION_ID = "2370462823464289344"
    settings.TELNYX_FROM_NUMBER = "+34910000001"
    settings.TELEPHONY_ALLOW_UNSIGNED = False
    settings.ADMIN_API_KEY = "test-admin-key"
    settings.ADMIN_NOTIFICATION_WEBHOOK_URL = ""
    return settings


@pytest.fixture
def calls_allowed(db):
    """Start with calls allowed: the stop flag lives in Redis or the cache, outside the test DB."""
    from calls import global_stop

    global_stop.reset(actor="test")


@pytest.fixture
def fake_carrier(settings):
    with FakeCarrier() as carrier:
        settings.TWILIO_ACCOUNT_SID = TWILIO_ACCOUNT
        settings.TWILIO_API_BASE_URL = carrier.url
        settings.TELNYX_API_KEY = "KEYtest"
        settings.TELNYX_API_BASE_URL = carrier.url + "/v2"
        yield carrier
