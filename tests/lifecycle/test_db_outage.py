"""With PostgreSQL hung or resetting connections, readiness and the carrier webhooks still
answer in about DB_REQUEST_TIMEOUT_SECONDS (2 s): readiness 503, a Twilio caller hears the
"cannot take your call" message and is hung up, a Telnyx caller is answered and told so.

A real daphne server reaches the test database through a TCP proxy that the test switches
to "hang" (a stopped server: TCP accepted, nothing answered) or "reset" (a crashed one);
the shared PostgreSQL itself is never touched.
"""

from __future__ import annotations

import base64
import json
import time
import xml.etree.ElementTree as ET

import httpx
import pytest
from django.conf import settings
from django.db import connection
from nacl.signing import SigningKey

from telephony.telnyx import wire as telnyx
from tests.server_process import DaphneServer
from tests.tcp_fault_proxy import FaultProxy
from tests.telephony.conftest import (
    PUBLIC,
    TWILIO_TOKEN,
    payload,
    telnyx_headers,
    twilio_signature,
)
from tests.telephony.fake_carrier import FakeCarrier

READY = "/health/ready/"
VOICE = "/telephony/twilio/voice/"
TELNYX = "/telephony/telnyx/webhook/"
FAULTS = ["hang", "reset"]
ANSWER_WITHIN_S = 3.0  # DB_REQUEST_TIMEOUT_SECONDS is 2 s; Twilio itself waits 15 s


@pytest.fixture(scope="module")
def carrier():
    with FakeCarrier() as fake:
        yield fake


@pytest.fixture(scope="module")
def telnyx_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def proxy(django_db_setup):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: set DATABASE_URL=postgres://... to run the outage tests")
    db = connection.settings_dict
    with FaultProxy(upstream=(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))) as fault:
        yield fault


@pytest.fixture(scope="module")
def server(proxy, carrier, telnyx_key):
    db = connection.settings_dict
    srv = DaphneServer(
        DATABASE_URL=f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}",
        DB_REQUEST_TIMEOUT_SECONDS="2",
        DB_CONNECT_TIMEOUT_SECONDS="2",
        PUBLIC_BASE_URL=PUBLIC,
        TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TELNYX_PUBLIC_KEY=base64.b64encode(bytes(telnyx_key.verify_key)).decode(),
        TELNYX_API_KEY="KEYtest",
        TELNYX_API_BASE_URL=carrier.url + "/v2",
    )
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture
def fault(request, proxy, server):
    """Cut the server off from PostgreSQL the way the test's parameter says; restore after."""
    assert httpx.get(server.base + READY, timeout=10).status_code == 200, server.output()[-3000:]
    getattr(proxy, request.param)()
    yield request.param
    proxy.pass_through()


def timed(send) -> tuple[httpx.Response, float]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def post_twilio(server: DaphneServer, params: dict[str, str]) -> httpx.Response:
    signature = twilio_signature(PUBLIC + VOICE, params)
    return httpx.post(
        server.base + VOICE, data=params, headers={"X-Twilio-Signature": signature}, timeout=30
    )


def post_telnyx(server: DaphneServer, key: SigningKey, body: dict) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **telnyx_headers(key, raw)}
    return httpx.post(server.base + TELNYX, content=raw, headers=headers, timeout=30)


@pytest.mark.parametrize("fault", FAULTS, indirect=True)
def test_readiness_answers_503_naming_the_database_within_3_s_while_postgres_is_cut_off(
    server, proxy, fault
):
    # Twice: a probe that timed out leaves nothing behind that would hold the next one.
    for _ in range(2):
        response, elapsed = timed(lambda: httpx.get(server.base + READY, timeout=30))
        assert response.status_code == 503, response.text
        assert elapsed < ANSWER_WITHIN_S, f"{fault}: readiness took {elapsed:.1f}s"
        assert response.json()["checks"]["database"]["ok"] is False

    proxy.pass_through()
    assert httpx.get(server.base + READY, timeout=10).status_code == 200


@pytest.mark.parametrize("fault", FAULTS, indirect=True)
def test_a_twilio_caller_hears_the_unavailable_message_within_3_s_while_postgres_is_cut_off(
    server, fault
):
    params = {**payload("twilio_voice_inbound.json"), "CallSid": f"CA{fault}outage"}

    response, elapsed = timed(lambda: post_twilio(server, params))

    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    assert elapsed < ANSWER_WITHIN_S, f"{fault}: the voice webhook took {elapsed:.1f}s"
    twiml = ET.fromstring(response.content)
    assert twiml.findtext("Say") == settings.CALL_UNAVAILABLE_MESSAGE
    assert twiml.find("Hangup") is not None and twiml.find("Connect") is None


@pytest.mark.parametrize("fault", ["hang"], indirect=True)
def test_a_telnyx_caller_is_answered_and_told_the_service_is_unavailable_while_postgres_hangs(
    server, carrier, telnyx_key, fault
):
    initiated = payload("telnyx_call_initiated.json")
    control_id = f"v3:outage-{time.monotonic_ns()}"
    initiated["data"]["payload"]["call_control_id"] = control_id

    response, elapsed = timed(lambda: post_telnyx(server, telnyx_key, initiated))

    assert response.status_code == 204 and elapsed < ANSWER_WITHIN_S
    answers = [r for r in carrier.of("telnyx.answer") if r.params["id"] == control_id]
    assert len(answers) == 1 and "stream_url" not in answers[0].body
    state = answers[0].body["client_state"]
    assert telnyx.read_client_state(state)["mode"] == "unavailable"

    # call.answered echoes that state: the message is spoken without asking the database.
    answered = payload("telnyx_call_answered.json")
    answered["data"]["payload"].update(call_control_id=control_id, client_state=state)
    response, elapsed = timed(lambda: post_telnyx(server, telnyx_key, answered))

    assert response.status_code == 204 and elapsed < ANSWER_WITHIN_S
    spoken = [r for r in carrier.of("telnyx.speak") if r.params["id"] == control_id]
    assert [r.body["payload"] for r in spoken] == [settings.CALL_UNAVAILABLE_MESSAGE]


@pytest.mark.parametrize("fault", FAULTS, indirect=True)
def test_telnyx_events_that_need_the_database_get_a_503_within_3_s_while_it_is_cut_off(
    server, telnyx_key, fault
):
    hangup = payload("telnyx_call_hangup.json")

    response, elapsed = timed(lambda: post_telnyx(server, telnyx_key, hangup))

    # A non-2xx makes Telnyx deliver the event to the failover URL, when one is set.
    assert response.status_code == 503 and elapsed < ANSWER_WITHIN_S
