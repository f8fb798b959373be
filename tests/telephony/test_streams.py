"""Whole phone calls over the carriers' media sockets, driven like Twilio and Telnyx do.

The call is set up through the signed webhook, exactly as the carrier would, then the
socket gets real speech (espeak-ng, µ-law 8 kHz, 20 ms frames). Engines are the scripted
ones of bench/ (tests/scripted.py), so the transcript is scripted but VAD, turn-taking,
resampling and the µ-law wire are real.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from calls.models import Call, CallStatus, EndReason
from orchestrator.audio import pcm16_to_ulaw, ulaw_to_pcm16
from tests.scripted import scripted_profile
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16
from tests.telephony.conftest import PUBLIC, payload, telnyx_headers, twilio_signature
from voiceapp.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("calls_allowed"),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

HEARD = "I would like a table for two"
STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
ULAW_FRAME = 160  # 20 ms at 8 kHz


# --- helpers ------------------------------------------------------------------------------


async def next_message(ws: WebsocketCommunicator, timeout: float = 15) -> dict[str, Any]:
    output = await ws.receive_output(timeout)
    if output["type"] == "websocket.close":
        return {"event": "_close", "code": output.get("code"), "reason": output.get("reason", "")}
    return json.loads(output["text"])


async def until(
    ws: WebsocketCommunicator, predicate, *, timeout: float = 30
) -> list[dict[str, Any]]:
    """Messages up to and including the first matching one (or the close)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            message = await next_message(ws, timeout)
            seen.append(message)
            if predicate(message) or message["event"] == "_close":
                return seen


def is_mark(name: str):
    return lambda m: m["event"] == "mark" and m["mark"]["name"] == name


def audio_of(messages: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(m["media"]["payload"]) for m in messages if m["event"] == "media"]


def rms(ulaw: bytes) -> float:
    samples = np.frombuffer(ulaw_to_pcm16(ulaw), "<i2").astype(np.float64)
    return math.sqrt(float(np.mean(samples**2))) if len(samples) else 0.0


def speech_frames(text: str) -> list[bytes]:
    ulaw = pcm16_to_ulaw(speech_pcm16(text, rate=8000) + silence_pcm16(900, rate=8000))
    return [ulaw[i : i + ULAW_FRAME] for i in range(0, len(ulaw) - ULAW_FRAME + 1, ULAW_FRAME)]


async def load_call(call_id: str) -> tuple[Call, list]:
    def load():
        call = Call.objects.get(pk=call_id)
        return call, list(call.turns.order_by("sequence"))

    return await database_sync_to_async(load)()


async def turns_stored(call_id: str, count: int, *, timeout: float = 15) -> None:
    """Wait until ``count`` turns are stored (an utterance is recorded once it has played out)."""
    count_turns = database_sync_to_async(lambda: Call.objects.get(pk=call_id).turns.count())
    async with asyncio.timeout(timeout):
        while await count_turns() < count:
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def socket(path: str, headers: list[tuple[bytes, bytes]] | None = None):
    ws = WebsocketCommunicator(application, path, headers=headers or [])
    connected, _ = await ws.connect()
    assert connected
    try:
        yield ws
    finally:
        await ws.disconnect()


# --- Twilio -------------------------------------------------------------------------------


class Twilio:
    """Plays Twilio's side: the voice webhook, then the Media Streams socket."""

    PATH = "/ws/telephony/twilio/"

    def __init__(self, ws: WebsocketCommunicator, call_sid: str) -> None:
        self.ws = ws
        self.call_sid = call_sid
        self.seq = 0
        self.chunk = 0

    @staticmethod
    async def ring(
        path: str = "/telephony/twilio/voice/", **overrides: str
    ) -> tuple[str, dict[str, str]]:
        params = {**payload("twilio_voice_inbound.json"), **overrides}
        response = await AsyncClient().post(
            path, params, headers={"X-Twilio-Signature": twilio_signature(PUBLIC + path, params)}
        )
        assert response.status_code == 200, response.content
        stream = ET.fromstring(response.content).find("./Connect/Stream")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        return params["CallSid"], parameters

    async def send(self, event: str, **body: Any) -> None:
        self.seq += 1
        message = {"event": event, "sequenceNumber": str(self.seq), **body}
        if event != "connected":
            message["streamSid"] = STREAM_SID
        await self.ws.send_json_to(message)

    async def start(self, parameters: dict[str, str]) -> None:
        await self.ws.send_json_to({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(
            "start",
            start={
                "accountSid": "AC" + "0" * 32,
                "streamSid": STREAM_SID,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )

    async def media(self, ulaw: bytes) -> None:
        self.chunk += 1
        await self.send(
            "media",
            media={
                "track": "inbound",
                "chunk": str(self.chunk),
                "timestamp": str(self.chunk * 20),
                "payload": base64.b64encode(ulaw).decode(),
            },
        )

    async def say(self, text: str) -> None:
        for frame in speech_frames(text):
            await self.media(frame)
            await asyncio.sleep(0.002)

    async def echo_mark(self, name: str) -> None:
        await self.send("mark", mark={"name": name})

    async def stop(self) -> None:
        await self.send("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": self.call_sid})


async def test_a_whole_twilio_call_greets_transcribes_answers_records_dtmf_and_ends_on_stop():
    await database_sync_to_async(scripted_profile)(phone_numbers="+34910000001", heard=HEARD)
    call_sid, parameters = await Twilio.ring()
    signature = twilio_signature("wss://agent.example.com/ws/telephony/twilio/", {})
    async with socket(Twilio.PATH, headers=[(b"x-twilio-signature", signature.encode())]) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(parameters)

        greeting = await until(ws, is_mark("utt-1"))
        frames = audio_of(greeting)
        assert frames and {len(f) for f in frames} == {ULAW_FRAME}
        assert {m["streamSid"] for m in greeting} == {STREAM_SID}
        assert rms(b"".join(frames)) > 1000  # audible audio, not silence or noise bytes
        await twilio.echo_mark("utt-1")

        await twilio.say("Hello, I would like to book a table for two people.")
        reply = await until(ws, is_mark("utt-2"))
        assert audio_of(reply) and {len(f) for f in audio_of(reply)} == {ULAW_FRAME}
        await twilio.echo_mark("utt-2")
        await turns_stored(parameters["call_id"], 3)

        await twilio.send("dtmf", dtmf={"track": "inbound_track", "digit": "5"})
        await twilio.stop()
        closed = await until(ws, lambda m: False)
        assert closed[-1] == {"event": "_close", "code": 1000, "reason": "caller_hangup"}

    call, turns = await load_call(parameters["call_id"])
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.CALLER_HANGUP)
    assert call.stream_id == STREAM_SID and call.dtmf_digits == "5"
    assert [t.role for t in turns] == ["assistant", "user", "assistant"]
    assert turns[1].text == HEARD
    assert (
        turns[2].text == "Of course. For what time would you like it?" and not turns[2].interrupted
    )


async def test_twilio_barge_in_sends_clear_and_keeps_only_what_was_heard():
    long_greeting = (
        "Hello, this is Casa Lola. " + "We are open every day from noon until midnight. " * 3
    )
    await database_sync_to_async(scripted_profile)(greeting=long_greeting, barge_in_min_ms=200)
    call_sid, parameters = await Twilio.ring()
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(parameters)
        await until(ws, lambda m: m["event"] == "media")

        await twilio.say("Sorry to interrupt, I need a table for tonight please.")
        seen = await until(ws, lambda m: m["event"] == "clear")
        assert seen[-1] == {"event": "clear", "streamSid": STREAM_SID}
        assert not any(m["event"] == "mark" and m["mark"]["name"] == "utt-1" for m in seen)
        # Twilio echoes marks that a clear flushed; such an echo is not taken as "played".
        await twilio.echo_mark("utt-1")
        await twilio.stop()
        await until(ws, lambda m: False)

    call, turns = await load_call(parameters["call_id"])
    greeting = turns[0]
    assert greeting.role == "assistant" and greeting.interrupted
    assert len(greeting.text) < len(long_greeting.strip())
    assert call.end_reason == EndReason.CALLER_HANGUP


@pytest.mark.parametrize("problem", ["missing", "forged", "other call", "reused"])
async def test_a_twilio_stream_without_its_valid_token_is_closed_4403_before_any_audio(problem):
    await database_sync_to_async(scripted_profile)()
    call_sid, parameters = await Twilio.ring()
    _, other = await Twilio.ring(CallSid="CA" + "1" * 32)
    if problem == "missing":
        parameters = {"call_id": parameters["call_id"]}
    elif problem == "forged":
        parameters = {**parameters, "token": parameters["token"][:-4] + "beef"}
    elif problem == "other call":
        parameters = {**parameters, "token": other["token"]}
    else:
        async with socket(Twilio.PATH) as ws:
            await Twilio(ws, call_sid).start(parameters)
            await until(ws, lambda m: m["event"] == "media")
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(parameters)
        for frame in speech_frames("Hello there")[:10]:
            await twilio.media(frame)
        messages = await until(ws, lambda m: False)
        assert [m["event"] for m in messages] == ["_close"] and messages[0]["code"] == 4403

    call, turns = await load_call(parameters["call_id"])
    assert call.dtmf_digits == "" and (turns == [] or problem == "reused")
    if problem != "reused":
        assert call.status == CallStatus.RINGING  # untouched: a bad socket cannot end it either


async def test_bad_twilio_messages_are_ignored_and_the_call_goes_on():
    await database_sync_to_async(scripted_profile)(greeting="")
    call_sid, parameters = await Twilio.ring()
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await ws.send_to(text_data="{not json")
        await twilio.media(b"\xff" * ULAW_FRAME)  # media before start
        await ws.send_json_to({"event": "dance"})
        await ws.send_json_to(["not", "an", "object"])
        await twilio.start(parameters)
        await twilio.send("media", media={"track": "inbound", "payload": "@@not base64@@"})
        await twilio.send("media", media={"track": "inbound", "payload": ""})
        await twilio.send("media", media={"payload": base64.b64encode(b"\xff" * 40_000).decode()})
        await twilio.send("dtmf", dtmf={"digit": "banana"})
        await twilio.send("mark", mark={"name": "never-sent"})
        await twilio.say("I would like to book a table for two people.")
        replied = await until(ws, is_mark("utt-1"))
        assert audio_of(replied)
        await twilio.stop()
        await until(ws, lambda m: False)

    call, turns = await load_call(parameters["call_id"])
    assert call.end_reason == EndReason.CALLER_HANGUP and [t.role for t in turns] == [
        "user",
        "assistant",
    ]


async def test_a_twilio_socket_dropped_without_stop_ends_the_call_as_a_caller_hangup():
    await database_sync_to_async(scripted_profile)()
    call_sid, parameters = await Twilio.ring()
    async with socket(Twilio.PATH) as ws:
        await Twilio(ws, call_sid).start(parameters)
        await until(ws, lambda m: m["event"] == "media")

    call, _ = await load_call(parameters["call_id"])
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.CALLER_HANGUP)


@pytest.mark.parametrize("already_ended", [False, True])
async def test_when_the_agent_ends_a_twilio_call_it_hangs_up_through_the_rest_api(
    fake_carrier, already_ended
):
    if already_ended:
        fake_carrier.script(
            "twilio.update", 404, {"code": 20404, "message": "not found", "status": 404}
        )
    await database_sync_to_async(scripted_profile)(
        max_call_seconds=1, greeting="Hi.", goodbye_message="Our time is up. Goodbye!"
    )
    call_sid, parameters = await Twilio.ring()
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(parameters)
        messages = await until(ws, is_mark("utt-2"))  # the goodbye, fully sent
        for mark in (m for m in messages if m["event"] == "mark"):
            await twilio.echo_mark(mark["mark"]["name"])
        messages += await until(ws, lambda m: False)
        assert messages[-1]["code"] == 1000 and messages[-1]["reason"] == "max_duration"

    (hangup,) = fake_carrier.of("twilio.update")
    assert hangup.params["sid"] == call_sid and hangup.body == {"Status": "completed"}
    assert hangup.headers["authorization"].startswith("Basic ")
    call, turns = await load_call(parameters["call_id"])
    assert call.end_reason == EndReason.MAX_DURATION
    assert turns[-1].text == "Our time is up. Goodbye!"


async def test_without_rest_credentials_the_agent_ends_a_twilio_call_by_closing_the_stream():
    await database_sync_to_async(scripted_profile)(
        max_call_seconds=1, greeting="", goodbye_message="Bye."
    )
    call_sid, parameters = await Twilio.ring()
    async with socket(Twilio.PATH) as ws:
        await Twilio(ws, call_sid).start(parameters)
        messages = await until(ws, lambda m: False)
        assert messages[-1]["event"] == "_close" and messages[-1]["code"] == 1000

    call, _ = await load_call(parameters["call_id"])
    assert call.end_reason == EndReason.MAX_DURATION


# --- Telnyx -------------------------------------------------------------------------------


class Telnyx:
    """Plays Telnyx's side: call.initiated webhook (answer via the fake), then the media socket."""

    def __init__(self, ws: WebsocketCommunicator, call_control_id: str) -> None:
        self.ws = ws
        self.call_control_id = call_control_id
        self.seq = 0
        self.chunk = 0

    @staticmethod
    async def ring(key, fake_carrier) -> tuple[str, str, str]:
        """-> (stream path, call_control_id, call id)"""
        body = json.dumps(payload("telnyx_call_initiated.json")).encode()
        response = await AsyncClient().post(
            "/telephony/telnyx/webhook/",
            body,
            content_type="application/json",
            headers=telnyx_headers(key, body),
        )
        assert response.status_code == 204
        answer = fake_carrier.of("telnyx.answer")[-1]
        path = answer.body["stream_url"].removeprefix("wss://agent.example.com")
        call_id = path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
        return path, answer.path.split("/")[3], call_id

    async def send(self, event: str, **body: Any) -> None:
        self.seq += 1
        await self.ws.send_json_to(
            {"event": event, "sequence_number": str(self.seq), "stream_id": "32DE0DEA", **body}
        )

    async def start(self, encoding: str = "PCMU") -> None:
        await self.ws.send_json_to({"event": "connected", "version": "1.0.0"})
        await self.send(
            "start",
            start={
                "user_id": "3E6F995F",
                "call_control_id": self.call_control_id,
                "call_session_id": "ff55",
                "from": "+34600111222",
                "to": "+34910000001",
                "client_state": None,
                "media_format": {"encoding": encoding, "sample_rate": 8000, "channels": 1},
            },
        )

    def media_message(self, ulaw: bytes) -> dict[str, Any]:
        self.chunk += 1
        return {
            "track": "inbound",
            "chunk": str(self.chunk),
            "timestamp": str(self.chunk * 20),
            "payload": base64.b64encode(ulaw).decode(),
        }

    async def say(self, text: str) -> None:
        """Speech with neighbouring frames swapped now and then: Telnyx does not promise order."""
        messages = [self.media_message(frame) for frame in speech_frames(text)]
        for i in range(0, len(messages) - 1, 7):
            messages[i], messages[i + 1] = messages[i + 1], messages[i]
        for media in messages:
            await self.send("media", media=media)
            await asyncio.sleep(0.002)


async def test_a_whole_telnyx_call_greets_transcribes_answers_records_dtmf_and_ends_on_stop(
    telnyx_key, fake_carrier
):
    await database_sync_to_async(scripted_profile)(phone_numbers="+34910000001", heard=HEARD)
    path, control_id, call_id = await Telnyx.ring(telnyx_key, fake_carrier)
    async with socket(path) as ws:
        telnyx = Telnyx(ws, control_id)
        await telnyx.start(encoding="audio/x-mulaw")

        greeting = await until(ws, is_mark("utt-1"))
        frames = audio_of(greeting)
        assert frames and {len(f) for f in frames} == {ULAW_FRAME} and rms(b"".join(frames)) > 1000
        assert all(
            set(m) == {"event", "media"} and set(m["media"]) == {"payload"}
            for m in greeting
            if m["event"] == "media"
        )
        await telnyx.send("mark", mark={"name": "utt-1"})

        await telnyx.say("Hello, I would like to book a table for two people.")
        reply = await until(ws, is_mark("utt-2"))
        assert audio_of(reply)
        await turns_stored(call_id, 3)
        await telnyx.send("dtmf", occurred_at="2026-01-05T10:00:09Z", dtmf={"digit": "7"})
        await telnyx.send(
            "error", payload={"code": 100003, "title": "malformed_frame", "detail": "x"}
        )
        await telnyx.send("stop", stop={"user_id": "3E6F995F", "call_control_id": control_id})
        closed = await until(ws, lambda m: False)
        assert closed[-1]["code"] == 1000

    call, turns = await load_call(call_id)
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.CALLER_HANGUP)
    assert call.stream_id == "32DE0DEA" and call.dtmf_digits == "7"
    assert [t.role for t in turns] == ["assistant", "user", "assistant"] and turns[1].text == HEARD
    assert not fake_carrier.of("telnyx.hangup")  # the caller hung up: nothing to hang up


async def test_a_telnyx_secret_works_once_and_only_for_its_own_call(telnyx_key, fake_carrier):
    await database_sync_to_async(scripted_profile)()
    path, control_id, call_id = await Telnyx.ring(telnyx_key, fake_carrier)
    async with socket(path) as ws:
        await Telnyx(ws, "v3:someone-else").start()
        assert (await until(ws, lambda m: False))[-1]["code"] == 4403
    async with socket(path) as ws:  # the secret was spent by the first socket
        await Telnyx(ws, control_id).start()
        assert (await until(ws, lambda m: False))[-1]["code"] == 4403
    async with socket("/ws/telephony/telnyx/not-a-secret/") as ws:
        await Telnyx(ws, control_id).start()
        assert (await until(ws, lambda m: False))[-1]["code"] == 4403
    call, _ = await load_call(call_id)
    assert call.status == CallStatus.RINGING


async def test_a_telnyx_stream_in_another_codec_is_closed_with_a_reason(telnyx_key, fake_carrier):
    await database_sync_to_async(scripted_profile)()
    path, control_id, _ = await Telnyx.ring(telnyx_key, fake_carrier)
    async with socket(path) as ws:
        telnyx = Telnyx(ws, control_id)
        await telnyx.start(encoding="OPUS")
        await telnyx.send("media", media=telnyx.media_message(b"\xff" * ULAW_FRAME))
        closed = await until(ws, lambda m: False)
        assert [m["event"] for m in closed] == ["_close"] and closed[0]["code"] == 4400
        assert "unsupported media_format" in closed[0]["reason"]


async def test_when_the_agent_ends_a_telnyx_call_it_hangs_up_through_call_control(
    telnyx_key, fake_carrier
):
    await database_sync_to_async(scripted_profile)(
        max_call_seconds=1, greeting="", goodbye_message="Bye."
    )
    path, control_id, call_id = await Telnyx.ring(telnyx_key, fake_carrier)
    async with socket(path) as ws:
        await Telnyx(ws, control_id).start()
        messages = await until(ws, lambda m: False)
        assert messages[-1]["code"] == 1000 and messages[-1]["reason"] == "max_duration"

    (hangup,) = fake_carrier.of("telnyx.hangup")
    assert hangup.path == f"/v2/calls/{control_id}/actions/hangup"
    call, _ = await load_call(call_id)
    assert call.end_reason == EndReason.MAX_DURATION
    # Telnyx then reports the hang-up it made; the agent's reason stays.
    hangup_event = payload("telnyx_call_hangup.json")
    body = json.dumps(hangup_event).encode()
    await AsyncClient().post(
        "/telephony/telnyx/webhook/",
        body,
        content_type="application/json",
        headers=telnyx_headers(telnyx_key, body),
    )
    call, _ = await load_call(call_id)
    assert call.end_reason == EndReason.MAX_DURATION
