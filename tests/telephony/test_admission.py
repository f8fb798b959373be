"""A full process refuses carrier calls cleanly (live/admission.py): Twilio gets
``<Reject reason="busy"/>``, Telnyx an ``actions/reject`` with ``USER_BUSY``, a stream that
starts while full is closed 4503 and hung up, an outbound dial gets a 503; every refused
call is stored ``busy``. The process is filled with two live simulator calls (admission
counts calls of any channel) under ``MAX_CALLS_PER_PROCESS=2``.
"""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from calls.models import Call, CallStatus, EndReason
from live import admission
from simulator.consumers import SimulatorConsumer
from tests.scripted import scripted_profile
from tests.telephony.conftest import PUBLIC, payload, telnyx_headers, twilio_signature
from voiceapp.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("calls_allowed"),
]

TWILIO_VOICE = "/telephony/twilio/voice/"


@pytest.fixture(autouse=True)
def limit_two(settings):
    settings.MAX_CALLS_PER_PROCESS = 2
    settings.ADMISSION_MAX_LOOP_LAG_MS = 0
    admission.controller.monitor.clear()
    admission.controller.forget_reservations()  # places other tests' webhooks held
    return settings


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="adm-tel", password="x-pw-12345", is_staff=True
    )


async def next_output(ws: WebsocketCommunicator, timeout: float = 15) -> dict:
    output = await ws.receive_output(timeout)
    if output["type"] == "websocket.close":
        return {"type": "close", "code": output.get("code"), "reason": output.get("reason", "")}
    if output.get("bytes") is not None:
        return {"type": "binary"}
    return json.loads(output["text"])


async def until_close_or(ws: WebsocketCommunicator, wanted: str) -> dict:
    async with asyncio.timeout(20):
        while True:
            message = await next_output(ws)
            if message.get("type") in (wanted, "close"):
                return message


async def fill_the_process(staff) -> list[WebsocketCommunicator]:
    """Two live simulator calls: the process is full."""
    calls = []
    for _ in range(2):
        ws = WebsocketCommunicator(SimulatorConsumer.as_asgi(), "/ws/simulator/")
        ws.scope["user"] = staff
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to({"event": "start", "profile": "scripted", "audio": "binary"})
        assert (await until_close_or(ws, "started"))["type"] == "started"
        calls.append(ws)
    assert admission.controller.active == 2
    return calls


async def hang_up(calls: list[WebsocketCommunicator]) -> None:
    for ws in calls:
        await ws.disconnect()
    async with asyncio.timeout(10):
        while admission.controller.active:
            await asyncio.sleep(0.02)


async def ring_twilio(**overrides: str):
    params = {**payload("twilio_voice_inbound.json"), **overrides}
    response = await AsyncClient().post(
        TWILIO_VOICE,
        params,
        headers={"X-Twilio-Signature": twilio_signature(PUBLIC + TWILIO_VOICE, params)},
    )
    assert response.status_code == 200, response.content
    return params["CallSid"], ET.fromstring(response.content)


async def call_by_sid(sid: str) -> Call:
    return await database_sync_to_async(Call.objects.get)(external_id=sid)


async def test_a_third_twilio_call_is_rejected_busy_and_stored_busy(staff):
    await database_sync_to_async(scripted_profile)(phone_numbers="+34910000001")
    calls = await fill_the_process(staff)

    call_sid, twiml = await ring_twilio()
    assert [(child.tag, child.attrib) for child in twiml] == [("Reject", {"reason": "busy"})]
    call = await call_by_sid(call_sid)
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.BUSY)
    assert "process busy: capacity" in call.error_detail

    await hang_up(calls)
    call_sid, twiml = await ring_twilio(CallSid="CA" + "2" * 32)
    assert twiml.find("./Connect/Stream") is not None  # capacity came back with the hang-ups


async def test_a_third_telnyx_call_is_rejected_user_busy_and_stored_busy(
    staff, telnyx_key, fake_carrier
):
    await database_sync_to_async(scripted_profile)()
    calls = await fill_the_process(staff)

    body = json.dumps(payload("telnyx_call_initiated.json")).encode()
    response = await AsyncClient().post(
        "/telephony/telnyx/webhook/",
        body,
        content_type="application/json",
        headers=telnyx_headers(telnyx_key, body),
    )
    assert response.status_code == 204
    (reject,) = fake_carrier.of("telnyx.reject")
    assert reject.body["cause"] == "USER_BUSY"
    assert not fake_carrier.of("telnyx.answer")
    control_id = payload("telnyx_call_initiated.json")["data"]["payload"]["call_control_id"]
    call = await call_by_sid(control_id)
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.BUSY)
    await hang_up(calls)


async def test_a_twilio_stream_starting_while_full_is_closed_4503_hung_up_and_stored_busy(
    staff, fake_carrier
):
    await database_sync_to_async(scripted_profile)()
    # Admitted at the webhook (the process was empty), full by the time its stream starts.
    call_sid, twiml = await ring_twilio()
    stream = twiml.find("./Connect/Stream")
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    calls = await fill_the_process(staff)

    ws = WebsocketCommunicator(application, "/ws/telephony/twilio/")
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    await ws.send_json_to(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ" + "1" * 32,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": "MZ" + "1" * 32,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )
    closed = await until_close_or(ws, "never")
    assert closed == {"type": "close", "code": 4503, "reason": "all lines busy (capacity)"}
    await ws.disconnect()
    (hang_up_request,) = fake_carrier.of("twilio.update")
    assert hang_up_request.body["Status"] == "completed"
    call = await call_by_sid(call_sid)
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.BUSY)
    assert admission.controller.active == 2  # the refused stream took no slot
    await hang_up(calls)


async def test_an_outbound_dial_while_full_is_refused_503_and_nothing_is_dialled(
    staff, fake_carrier
):
    await database_sync_to_async(scripted_profile)()
    calls = await fill_the_process(staff)
    response = await AsyncClient().post(
        "/api/calls/outbound/",
        {"to": "+34600111222", "profile": "scripted"},
        content_type="application/json",
        headers={"Authorization": "Bearer test-admin-key"},
    )
    assert response.status_code == 503
    assert "all lines busy" in response.json()["error"]
    assert not fake_carrier.of("twilio.create")
    (call,) = await database_sync_to_async(
        lambda: list(Call.objects.filter(direction="outbound"))
    )()
    assert call.end_reason == EndReason.BUSY
    await hang_up(calls)


async def test_a_profile_busy_message_is_said_to_a_refused_twilio_caller_then_hang_up(staff):
    await database_sync_to_async(scripted_profile)(
        phone_numbers="+34910000001", busy_message="All our lines are busy, please call later."
    )
    calls = await fill_the_process(staff)

    call_sid, twiml = await ring_twilio()
    assert [child.tag for child in twiml] == ["Say", "Hangup"]
    assert twiml.find("./Say").text == "All our lines are busy, please call later."
    call = await call_by_sid(call_sid)
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.BUSY)
    await hang_up(calls)
