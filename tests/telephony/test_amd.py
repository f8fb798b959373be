"""Answering-machine detection on outbound calls: the dial asks for it, the carrier's signed
callbacks store the verdict and it reaches the call's session, which stays silent until then.

Calls are placed through ``POST /api/calls/outbound/`` on the local fake carrier, then the
carrier's side of the media socket is played as in test_streams.py.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from calls.models import Call, CallStatus, EndReason, VoicemailAction
from tests.scripted import scripted_profile
from tests.telephony.conftest import PUBLIC, TWILIO_ACCOUNT, telnyx_headers, twilio_signature
from tests.telephony.test_streams import (
    Telnyx,
    Twilio,
    audio_of,
    is_mark,
    load_call,
    socket,
    turns_stored,
    until,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("calls_allowed")]

AUTH = {"Authorization": "Bearer test-admin-key"}
VOICEMAIL = "Hello, Casa Lola here about your booking. Call us back."
GREETING = "Hello, Casa Lola here."


def sales_profile(action: str):
    return scripted_profile(
        slug="sales", greeting=GREETING, voicemail_action=action, voicemail_message=VOICEMAIL
    )


async def place_call(carrier: str) -> dict[str, Any]:
    response = await AsyncClient().post(
        "/api/calls/outbound/",
        json.dumps({"to": "+34600111222", "profile": "sales", "carrier": carrier}),
        content_type="application/json",
        headers=AUTH,
    )
    assert response.status_code == 201, response.content
    return response.json()


def stream_parameters(create_body: dict[str, str]) -> dict[str, str]:
    stream = ET.fromstring(create_body["Twiml"]).find("./Connect/Stream")
    return {p.get("name"): p.get("value") for p in stream.findall("Parameter")}


async def twilio_amd(
    callback: str, call_sid: str, answered_by: str, *, signed: bool = True
) -> int:
    """Post Twilio's AsyncAmdStatusCallback to the URL the dial gave it."""
    path = callback.removeprefix(PUBLIC)
    params = {
        "AccountSid": TWILIO_ACCOUNT,
        "CallSid": call_sid,
        "AnsweredBy": answered_by,
        "MachineDetectionDuration": "2150",
    }
    headers = {"X-Twilio-Signature": twilio_signature(callback, params)} if signed else {}
    response = await AsyncClient().post(path, params, headers=headers)
    return response.status_code


def telnyx_event(event_type: str, result: str, *, client_state: str) -> bytes:
    return json.dumps(
        {
            "data": {
                "event_type": event_type,
                "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
                "occurred_at": "2026-01-05T10:00:05.000000Z",
                "record_type": "event",
                "payload": {
                    "call_control_id": "v3:fake-outbound-call",
                    "call_leg_id": "2dc9ed02-e9cb-11f0-9a02-02420a1f0b69",
                    "call_session_id": "2dc1b3c8-e9cb-11f0-b4fe-02420a1f0b69",
                    "client_state": client_state,
                    "connection_id": "2370462823464289344",
                    "from": "+34910000001",
                    "to": "+34600111222",
                    "result": result,
                },
            }
        }
    ).encode()


async def telnyx_post(key, body: bytes, *, headers: dict[str, str] | None = None) -> int:
    response = await AsyncClient().post(
        "/telephony/telnyx/webhook/",
        body,
        content_type="application/json",
        headers=telnyx_headers(key, body) if headers is None else headers,
    )
    return response.status_code


async def answered_by(call_id: str) -> str:
    return await database_sync_to_async(
        lambda: Call.objects.values_list("answered_by", flat=True).get(pk=call_id)
    )()


# --- the dial -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "detection"),
    [
        (VoicemailAction.HANG_UP, "Enable"),
        (VoicemailAction.LEAVE_MESSAGE, "DetectMessageEnd"),
        (VoicemailAction.OFF, None),
    ],
)
async def test_a_twilio_outbound_dial_asks_for_async_amd_with_a_signed_callback(
    fake_carrier, action, detection
):
    await database_sync_to_async(sales_profile)(action)
    placed = await place_call("twilio")
    (create,) = fake_carrier.of("twilio.create")
    assert create.body.get("MachineDetection") == detection
    if detection is None:
        assert not {k for k in create.body if "Amd" in k}
        return
    assert create.body["AsyncAmd"] == "true"
    assert create.body["AsyncAmdStatusCallbackMethod"] == "POST"
    callback = urlsplit(create.body["AsyncAmdStatusCallback"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == (
        "https://agent.example.com/telephony/twilio/amd/"
    )
    assert parse_qs(callback.query) == {"call_id": [placed["call_id"]]}


@pytest.mark.parametrize(
    ("action", "detection"),
    [
        (VoicemailAction.HANG_UP, "detect"),
        (VoicemailAction.LEAVE_MESSAGE, "greeting_end"),
        (VoicemailAction.OFF, None),
    ],
)
async def test_a_telnyx_outbound_dial_asks_for_answering_machine_detection(
    fake_carrier, action, detection
):
    await database_sync_to_async(sales_profile)(action)
    await place_call("telnyx")
    (dial,) = fake_carrier.of("telnyx.dial")
    assert dial.body.get("answering_machine_detection") == detection


# --- Twilio ---------------------------------------------------------------------------------


async def test_a_twilio_machine_gets_no_greeting_and_is_hung_up_as_voicemail(fake_carrier):
    await database_sync_to_async(sales_profile)(VoicemailAction.HANG_UP)
    placed = await place_call("twilio")
    (create,) = fake_carrier.of("twilio.create")
    call_sid = placed["external_id"]
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(stream_parameters(create.body))
        # Enable reports machine_start as soon as it is sure; the agent hangs up at once.
        status = await twilio_amd(create.body["AsyncAmdStatusCallback"], call_sid, "machine_start")
        assert status == 204
        messages = await until(ws, lambda m: False)
        assert not audio_of(messages)  # not a word to the machine
        assert messages[-1] == {"event": "_close", "code": 1000, "reason": "voicemail"}

    (hangup,) = fake_carrier.of("twilio.update")
    assert hangup.params["sid"] == call_sid and hangup.body == {"Status": "completed"}
    call, turns = await load_call(placed["call_id"])
    assert (call.status, call.end_reason, call.answered_by) == (
        CallStatus.ENDED,
        EndReason.VOICEMAIL,
        "machine_start",
    )
    assert turns == []


async def test_a_twilio_human_is_greeted_once_the_verdict_comes(fake_carrier):
    await database_sync_to_async(sales_profile)(VoicemailAction.HANG_UP)
    placed = await place_call("twilio")
    (create,) = fake_carrier.of("twilio.create")
    call_sid = placed["external_id"]
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(stream_parameters(create.body))
        assert await twilio_amd(create.body["AsyncAmdStatusCallback"], call_sid, "human") == 204
        greeting = await until(ws, is_mark("utt-1"))
        assert audio_of(greeting)
        await twilio.echo_mark("utt-1")
        await turns_stored(placed["call_id"], 1)
        await twilio.stop()
        await until(ws, lambda m: False)

    call, turns = await load_call(placed["call_id"])
    assert (call.end_reason, call.answered_by) == (EndReason.CALLER_HANGUP, "human")
    assert turns[0].role == "assistant" and turns[0].text == GREETING
    assert not fake_carrier.of("twilio.update")


async def test_a_twilio_verdict_that_comes_before_the_stream_is_delivered_when_it_starts(
    fake_carrier,
):
    """The webhook found no live call in its process (as when another process holds the
    socket): the verdict is only stored, and the socket's poll hands it to the session."""
    await database_sync_to_async(sales_profile)(VoicemailAction.LEAVE_MESSAGE)
    placed = await place_call("twilio")
    (create,) = fake_carrier.of("twilio.create")
    call_sid = placed["external_id"]
    callback = create.body["AsyncAmdStatusCallback"]
    assert await twilio_amd(callback, call_sid, "machine_end_beep") == 204
    assert await answered_by(placed["call_id"]) == "machine_end_beep"
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(stream_parameters(create.body))
        message = await until(ws, is_mark("utt-1"))  # the voicemail message, after the beep
        assert audio_of(message)
        await twilio.echo_mark("utt-1")
        closed = await until(ws, lambda m: False)
        assert closed[-1]["reason"] == "voicemail"

    call, turns = await load_call(placed["call_id"])
    assert call.end_reason == EndReason.VOICEMAIL
    assert [t.text for t in turns] == [VOICEMAIL]  # no greeting: the message only
    assert fake_carrier.of("twilio.update")[-1].body == {"Status": "completed"}


@pytest.mark.parametrize("problem", ["unsigned", "forged", "another call"])
async def test_it_rejects_a_twilio_amd_callback_that_is_not_signed_for_its_url(
    fake_carrier, problem
):
    await database_sync_to_async(sales_profile)(VoicemailAction.HANG_UP)
    placed = await place_call("twilio")
    (create,) = fake_carrier.of("twilio.create")
    callback = create.body["AsyncAmdStatusCallback"]
    params = {"AccountSid": TWILIO_ACCOUNT, "CallSid": placed["external_id"]}
    params["AnsweredBy"] = "machine_start"
    headers = {}
    if problem == "forged":
        headers["X-Twilio-Signature"] = twilio_signature(callback, params, token="not-the-token")
    elif problem == "another call":  # signed for another call id: the query is signed too
        other = callback.replace(placed["call_id"], "00000000-0000-4000-8000-000000000000")
        headers["X-Twilio-Signature"] = twilio_signature(other, params)
    response = await AsyncClient().post(callback.removeprefix(PUBLIC), params, headers=headers)
    assert response.status_code == 403
    assert await answered_by(placed["call_id"]) == ""


# --- Telnyx ---------------------------------------------------------------------------------


async def test_a_telnyx_machine_gets_the_voicemail_message_after_its_greeting(
    telnyx_key, fake_carrier
):
    await database_sync_to_async(sales_profile)(VoicemailAction.LEAVE_MESSAGE)
    placed = await place_call("telnyx")
    (dial,) = fake_carrier.of("telnyx.dial")
    path = dial.body["stream_url"].removeprefix("wss://agent.example.com")
    state = dial.body["client_state"]
    async with socket(path) as ws:
        telnyx = Telnyx(ws, placed["external_id"])
        await telnyx.start()
        # A machine, but its greeting is still playing: stored, nothing said yet.
        detected = telnyx_event("call.machine.detection.ended", "machine", client_state=state)
        assert await telnyx_post(telnyx_key, detected) == 204
        assert await answered_by(placed["call_id"]) == "machine_start"
        ended = telnyx_event("call.machine.greeting.ended", "beep_detected", client_state=state)
        assert await telnyx_post(telnyx_key, ended) == 204
        message = await until(ws, is_mark("utt-1"))
        assert audio_of(message)
        await telnyx.send("mark", mark={"name": "utt-1"})
        closed = await until(ws, lambda m: False)
        assert closed[-1]["code"] == 1000 and closed[-1]["reason"] == "voicemail"

    (hangup,) = fake_carrier.of("telnyx.hangup")
    assert hangup.path == f"/v2/calls/{placed['external_id']}/actions/hangup"
    call, turns = await load_call(placed["call_id"])
    assert (call.end_reason, call.answered_by) == (EndReason.VOICEMAIL, "machine_end_beep")
    assert [t.text for t in turns] == [VOICEMAIL]  # the greeting was never said to it
    # A retried detection event (deliveries come out of order) does not undo the beep.
    assert await telnyx_post(telnyx_key, detected) == 204
    assert await answered_by(placed["call_id"]) == "machine_end_beep"


async def test_a_telnyx_human_is_greeted(telnyx_key, fake_carrier):
    await database_sync_to_async(sales_profile)(VoicemailAction.HANG_UP)
    placed = await place_call("telnyx")
    (dial,) = fake_carrier.of("telnyx.dial")
    path = dial.body["stream_url"].removeprefix("wss://agent.example.com")
    async with socket(path) as ws:
        telnyx = Telnyx(ws, placed["external_id"])
        await telnyx.start()
        human = telnyx_event(
            "call.machine.detection.ended", "human", client_state=dial.body["client_state"]
        )
        assert await telnyx_post(telnyx_key, human) == 204
        greeting = await until(ws, is_mark("utt-1"))
        assert audio_of(greeting)
        await telnyx.send("mark", mark={"name": "utt-1"})
        await turns_stored(placed["call_id"], 1)
        await telnyx.send("stop", stop={"call_control_id": placed["external_id"]})
        await until(ws, lambda m: False)

    call, turns = await load_call(placed["call_id"])
    assert (call.end_reason, call.answered_by) == (EndReason.CALLER_HANGUP, "human")
    assert turns[0].text == GREETING and not fake_carrier.of("telnyx.hangup")


@pytest.mark.parametrize("problem", ["unsigned", "forged"])
async def test_it_rejects_an_unsigned_or_forged_telnyx_amd_webhook(
    telnyx_key, fake_carrier, problem
):
    from nacl.signing import SigningKey

    await database_sync_to_async(sales_profile)(VoicemailAction.HANG_UP)
    placed = await place_call("telnyx")
    (dial,) = fake_carrier.of("telnyx.dial")
    body = telnyx_event(
        "call.machine.detection.ended", "machine", client_state=dial.body["client_state"]
    )
    headers = {} if problem == "unsigned" else telnyx_headers(SigningKey.generate(), body)
    assert await telnyx_post(telnyx_key, body, headers=headers) == 403
    assert await answered_by(placed["call_id"]) == ""
