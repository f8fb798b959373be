"""Transfer to a person: whole calls on the carriers' media sockets, the REST transfer on the
local fake carrier, and the simulator's stand-in.

Once greeted, the caller presses 0; the scripted LLM answers with an announcement and a
``transfer_call`` tool call, so the real session, tool box, consumer and REST client do the
rest.
"""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from calls.models import CallStatus, EndReason
from calls.selectors import TRANSFER_FAILED_MESSAGES
from simulator.consumers import SimulatorConsumer
from telephony.telnyx import rest as telnyx_rest
from telephony.telnyx.wire import read_client_state
from telephony.twilio import rest as twilio_rest
from tests.scripted import scripted_profile
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16
from tests.telephony.conftest import telnyx_headers
from tests.telephony.fake_carrier import FakeCarrier
from tests.telephony.test_streams import Telnyx, Twilio, audio_of, is_mark, load_call, socket, until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("calls_allowed")]

DESK = "+34910000000"
ANNOUNCEMENT = "Putting you through."  # llm_model holds at most 120 characters
TRANSFER_REPLY = ANNOUNCEMENT + ' [[transfer_call {"destination": "Front desk"}]]'


def transfer_profile(**fields: object):
    return scripted_profile(
        greeting="Hi.",
        reply=TRANSFER_REPLY,
        transfer_destinations=f"Front desk = {DESK}\nSupport = sip:support@pbx.example.com",
        **fields,
    )


async def requested(fake: FakeCarrier, route: str, *, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not fake.of(route):
            await asyncio.sleep(0.02)


# --- Twilio ---------------------------------------------------------------------------------


async def test_a_twilio_transfer_dials_the_allowed_number_and_never_hangs_up(fake_carrier):
    await database_sync_to_async(transfer_profile)()
    call_sid, parameters = await Twilio.ring()
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(parameters)
        await until(ws, is_mark("utt-1"))  # the greeting: the call is live
        await twilio.echo_mark("utt-1")
        await twilio.send("dtmf", dtmf={"track": "inbound_track", "digit": "0"})
        announced = await until(ws, is_mark("utt-2"))
        assert audio_of(announced)  # the announcement is heard before the transfer
        await twilio.echo_mark("utt-2")
        await requested(fake_carrier, "twilio.update")
        # Twilio ends <Connect><Stream> of a call given new TwiML: a stop, not a hang-up.
        await twilio.stop()
        closed = await until(ws, lambda m: False)
        assert closed[-1] == {"event": "_close", "code": 1000, "reason": "transferred"}

    (update,) = fake_carrier.of("twilio.update")  # the transfer, and no Status=completed
    assert update.params["sid"] == call_sid and "Status" not in update.body
    dial = ET.fromstring(update.body["Twiml"]).find("./Dial")
    assert dial.get("callerId") is None  # inbound: the caller's own number is presented
    assert [(n.tag, n.text) for n in dial] == [("Number", DESK)]
    call, turns = await load_call(parameters["call_id"])
    assert (call.status, call.end_reason, call.transferred_to) == (
        CallStatus.ENDED,
        EndReason.TRANSFERRED,
        DESK,
    )
    assert ANNOUNCEMENT in [t.text for t in turns if t.role == "assistant"]
    tool_turns = [t for t in turns if t.role == "tool"]
    assert [t.tool_name for t in tool_turns] == ["transfer_call"]


async def test_a_twilio_transfer_the_carrier_refuses_is_told_to_the_caller_and_the_call_goes_on(
    fake_carrier,
):
    fake_carrier.script("twilio.update", 500, {"code": 20500, "message": "Internal Server Error"})
    await database_sync_to_async(transfer_profile)()
    call_sid, parameters = await Twilio.ring()
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(parameters)
        await until(ws, is_mark("utt-1"))
        await twilio.echo_mark("utt-1")
        await twilio.send("dtmf", dtmf={"track": "inbound_track", "digit": "0"})
        await until(ws, is_mark("utt-2"))
        await twilio.echo_mark("utt-2")
        told = await until(ws, is_mark("utt-3"))  # the session got the exception
        assert audio_of(told)
        await twilio.echo_mark("utt-3")
        await twilio.stop()
        closed = await until(ws, lambda m: False)
        assert closed[-1]["reason"] == "caller_hangup"

    assert len(fake_carrier.of("twilio.update")) == 1  # the failed transfer; no hang-up
    call, turns = await load_call(parameters["call_id"])
    assert (call.end_reason, call.transferred_to) == (EndReason.CALLER_HANGUP, "")
    # (The caller's stop may cut the last words off the stored turn: prefix only.)
    said = turns[-1].text
    assert turns[-1].role == "assistant" and TRANSFER_FAILED_MESSAGES["en"].startswith(said)
    assert said.startswith("Sorry, I could not transfer")


def test_twilio_transfer_twiml_dials_a_sip_uri_with_our_caller_id(fake_carrier):
    twilio_rest.transfer(
        "CA123", "sip:support@pbx.example.com", caller_id="+34910000001", timeout_s=2
    )
    (update,) = fake_carrier.of("twilio.update")
    assert update.path.endswith("/Calls/CA123.json")
    dial = ET.fromstring(update.body["Twiml"]).find("./Dial")
    assert dial.get("callerId") == "+34910000001"
    assert [(n.tag, n.text) for n in dial] == [("Sip", "sip:support@pbx.example.com")]


# --- Telnyx ---------------------------------------------------------------------------------


async def test_a_telnyx_transfer_uses_call_control_stops_the_stream_and_never_hangs_up(
    telnyx_key, fake_carrier
):
    await database_sync_to_async(transfer_profile)(phone_numbers="+34910000001")
    path, control_id, call_id = await Telnyx.ring(telnyx_key, fake_carrier)
    async with socket(path) as ws:
        telnyx = Telnyx(ws, control_id)
        await telnyx.start()
        await until(ws, is_mark("utt-1"))
        await telnyx.send("mark", mark={"name": "utt-1"})
        await telnyx.send("dtmf", occurred_at="2026-01-05T10:00:09Z", dtmf={"digit": "0"})
        announced = await until(ws, is_mark("utt-2"))
        assert audio_of(announced)
        await telnyx.send("mark", mark={"name": "utt-2"})
        # No stop from this fake Telnyx: the consumer stops the stream and closes it itself.
        closed = await until(ws, lambda m: False)
        assert closed[-1]["code"] == 1000 and closed[-1]["reason"] == "transferred"

    (transfer,) = fake_carrier.of("telnyx.transfer")
    assert transfer.path == f"/v2/calls/{control_id}/actions/transfer"
    assert transfer.body["to"] == DESK and transfer.body["command_id"]
    assert "from" not in transfer.body  # inbound: Telnyx presents the number that was called
    assert read_client_state(transfer.body["target_leg_client_state"]) == {
        "call_id": call_id,
        "mode": "transfer",
        "caller_leg": control_id,
    }
    assert fake_carrier.of("telnyx.streaming_stop")[0].path.startswith(f"/v2/calls/{control_id}/")
    assert not fake_carrier.of("telnyx.hangup")
    call, _ = await load_call(call_id)
    assert (call.end_reason, call.transferred_to) == (EndReason.TRANSFERRED, DESK)

    # The transferred leg ends (the person hangs up, or nobody answered): the caller's leg is
    # hung up too, so it is never left parked in silence; the record keeps "transferred".
    body = json.dumps(
        {
            "data": {
                "event_type": "call.hangup",
                "id": "7b1c2d3e-0000-4000-8000-000000000001",
                "record_type": "event",
                "payload": {
                    "call_control_id": "v3:transfer-leg",
                    "client_state": transfer.body["target_leg_client_state"],
                    "hangup_cause": "timeout",
                    "hangup_source": "unknown",
                    "to": DESK,
                },
            }
        }
    ).encode()
    response = await AsyncClient().post(
        "/telephony/telnyx/webhook/",
        body,
        content_type="application/json",
        headers=telnyx_headers(telnyx_key, body),
    )
    assert response.status_code == 204
    (hangup,) = fake_carrier.of("telnyx.hangup")
    assert hangup.path == f"/v2/calls/{control_id}/actions/hangup"
    call, _ = await load_call(call_id)
    assert (call.end_reason, call.transferred_to) == (EndReason.TRANSFERRED, DESK)


def test_a_telnyx_transfer_call_control_refuses_raises(fake_carrier):
    fake_carrier.script(
        "telnyx.transfer", 422, {"errors": [{"code": "90018", "title": "Call has already ended"}]}
    )
    with pytest.raises(telnyx_rest.CallControlError):
        telnyx_rest.transfer(
            "v3:abc", "sip:support@pbx.example.com", call_id="c1", caller_id="+3491", timeout_s=2
        )
    (sent,) = fake_carrier.of("telnyx.transfer")
    assert sent.body["to"] == "sip:support@pbx.example.com" and sent.body["from"] == "+3491"
    assert sent.body["timeout_secs"] == telnyx_rest.TRANSFER_RING_S


# --- Simulator ------------------------------------------------------------------------------


@pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech")
async def test_the_simulator_shows_the_transfer_and_ends_the_call_as_transferred(
    django_user_model,
):
    staff = await database_sync_to_async(django_user_model.objects.create_user)(
        username="sim", password="x-pw-12345", is_staff=True
    )
    await database_sync_to_async(transfer_profile)()
    ws = WebsocketCommunicator(SimulatorConsumer.as_asgi(), "/ws/simulator/")
    ws.scope["user"] = staff
    connected, _ = await ws.connect()
    assert connected
    try:
        await ws.send_json_to({"event": "start", "profile": "scripted", "audio": "binary"})
        started = await browser_events(ws, lambda e: e["type"] == "started")
        call_id = started[-1]["call_id"]
        audio = speech_pcm16("I would like to talk to a person please.") + silence_pcm16(900)
        for i in range(0, len(audio), 640):
            await ws.send_to(bytes_data=audio[i : i + 640])
            await asyncio.sleep(0.002)
        seen = await browser_events(ws, lambda e: e["type"] == "close")
    finally:
        await ws.disconnect()

    # A browser cannot be handed to a phone: the page is told where the call would go.
    assert {"type": "transfer", "destination": DESK} in seen
    assert {"type": "ended", "reason": "transferred", "call_id": call_id} in seen
    assert seen[-1]["code"] == 1000
    call, _ = await load_call(call_id)
    assert (call.end_reason, call.transferred_to) == (EndReason.TRANSFERRED, DESK)


async def browser_events(ws: WebsocketCommunicator, predicate, *, timeout: float = 30) -> list:
    """Simulator messages up to the first matching one (binary audio and the close included)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            output = await ws.receive_output(timeout)
            if output["type"] == "websocket.close":
                event = {"type": "close", "code": output.get("code")}
            elif output.get("bytes") is not None:
                event = {"type": "binary"}
            else:
                event = json.loads(output["text"])
            seen.append(event)
            if predicate(event) or event["type"] == "close":
                return seen
