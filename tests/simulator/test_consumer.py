"""The simulator WebSocket, driven like a browser with real speech (espeak-ng)."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from calls import global_stop
from calls.models import Call, EndReason
from simulator.consumers import SimulatorConsumer
from tests.scripted import scripted_profile
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16
from tests.transcripts import assert_heard

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

FRAME = 640  # 20 ms of PCM16 at 16 kHz


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="sim", password="x-pw-12345", is_staff=True
    )


async def connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(SimulatorConsumer.as_asgi(), "/ws/simulator/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def next_event(communicator: WebsocketCommunicator, timeout: float = 10) -> dict:
    """The next message: JSON decoded, binary audio as {"type": "binary"}, close as {"type": "close"}."""
    output = await communicator.receive_output(timeout)
    if output["type"] == "websocket.close":
        return {"type": "close", "code": output.get("code"), "reason": output.get("reason", "")}
    if output.get("bytes") is not None:
        return {"type": "binary", "bytes": output["bytes"]}
    return json.loads(output["text"])


async def events_until(communicator, predicate, *, timeout: float = 30) -> list[dict]:
    seen: list[dict] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await next_event(communicator, timeout)
            seen.append(event)
            if predicate(event) or event["type"] == "close":
                return seen


def is_assistant_final(e: dict) -> bool:
    return e["type"] == "transcript" and e["role"] == "assistant" and bool(e.get("final"))


def is_user_final(e: dict) -> bool:
    return e["type"] == "transcript" and e["role"] == "user" and bool(e.get("final"))


async def speak(communicator, text: str, *, binary: bool = True) -> None:
    audio = speech_pcm16(text) + silence_pcm16(900)
    for i in range(0, len(audio), FRAME):
        frame = audio[i : i + FRAME]
        if binary:
            await communicator.send_to(bytes_data=frame)
        else:
            payload = base64.b64encode(frame).decode()
            await communicator.send_json_to({"event": "media", "media": {"payload": payload}})
        await asyncio.sleep(0.002)


async def test_a_call_transcribes_replies_with_audio_and_is_stored_with_metrics(staff):
    await database_sync_to_async(scripted_profile)()
    ws = await connect(staff)
    await ws.send_json_to(
        {"event": "start", "profile": "scripted", "channel": "browser", "audio": "binary"}
    )
    started = await events_until(ws, lambda e: e["type"] == "started")
    call_id = started[-1]["call_id"]
    greeting = await events_until(ws, is_assistant_final)
    frames = [e for e in greeting if e["type"] == "binary"]
    assert frames and {len(f["bytes"]) for f in frames} == {FRAME}

    await speak(ws, "Hello, I would like to book a table for two people.")
    seen = await events_until(ws, is_user_final)
    seen += await events_until(ws, lambda e: e["type"] == "metrics")
    user_finals = [
        e for e in seen if e["type"] == "transcript" and e["role"] == "user" and e.get("final")
    ]
    assert user_finals and user_finals[0]["text"] == "I would like a table for two"
    assert any(e["type"] == "metrics" and e.get("voice_to_voice_ms") for e in seen)
    assert any(e["type"] == "state" and e["state"] == "thinking" for e in seen)
    assert any(e["type"] == "transcript" and e["role"] == "assistant" for e in seen)
    assert any(e["type"] == "binary" for e in seen)

    await ws.send_json_to({"event": "stop"})
    ended = await events_until(ws, lambda e: e["type"] == "ended")
    assert ended[-1]["reason"] == "caller_hangup" and ended[-1]["call_id"] == call_id
    await ws.disconnect()

    call = await database_sync_to_async(Call.objects.get)(pk=call_id)
    turns = await database_sync_to_async(lambda: list(call.turns.order_by("sequence")))()
    assert call.end_reason == EndReason.CALLER_HANGUP and call.ended_at is not None
    assert [t.role for t in turns][:3] == ["assistant", "user", "assistant"]
    answered = [t for t in turns if t.role == "assistant" and t.metrics.get("voice_to_voice_ms")]
    assert answered and answered[0].metrics["stt_ms"] is not None
    assert call.metrics.get("turns") or call.metrics


async def test_base64_media_messages_work_like_binary_frames(staff):
    await database_sync_to_async(scripted_profile)(greeting="")
    ws = await connect(staff)
    await ws.send_json_to({"event": "start", "profile": "scripted"})
    await events_until(ws, lambda e: e["type"] == "started")
    await speak(ws, "I need a table tonight.", binary=False)
    seen = await events_until(ws, lambda e: e["type"] == "audio")
    assert seen[-1]["sample_rate"] == 16000 and base64.b64decode(seen[-1]["data"])
    await ws.disconnect()


async def test_phone_emulation_sends_8khz_audio(staff):
    await database_sync_to_async(scripted_profile)()
    ws = await connect(staff)
    await ws.send_json_to(
        {"event": "start", "profile": "scripted", "channel": "twilio", "audio": "binary"}
    )
    started = await events_until(ws, lambda e: e["type"] == "started")
    assert started[-1]["sample_rate"] == 8000
    audio = await events_until(ws, lambda e: e["type"] == "binary")
    assert len(audio[-1]["bytes"]) == 320  # 20 ms at 8 kHz
    await ws.disconnect()


async def test_anonymous_sockets_are_rejected():
    ws = await connect(AnonymousUser())
    events = await events_until(ws, lambda e: e["type"] == "close")
    assert events[0]["type"] == "error" and "authentication" in events[0]["message"]
    assert events[-1]["code"] == 4401
    await ws.disconnect()


async def test_unknown_profile_closes_with_4404(staff):
    ws = await connect(staff)
    await ws.send_json_to({"event": "start", "profile": "nope"})
    events = await events_until(ws, lambda e: e["type"] == "close")
    assert "unknown profile" in events[0]["message"] and events[-1]["code"] == 4404
    await ws.disconnect()


async def test_bad_messages_get_errors_and_the_socket_survives(staff):
    await database_sync_to_async(scripted_profile)(greeting="")
    ws = await connect(staff)
    await ws.send_to(text_data="{not json")
    assert (await next_event(ws))["message"] == "invalid JSON"
    await ws.send_json_to({"event": "dance"})
    assert "unknown event" in (await next_event(ws))["message"]
    await ws.send_to(bytes_data=b"\x00\x01" * 10)
    assert "media before start" in (await next_event(ws))["message"]
    await ws.send_json_to({"event": "start", "profile": "scripted"})
    await events_until(ws, lambda e: e["type"] == "started")
    await ws.send_json_to({"event": "media", "media": {"payload": "@@not base64@@"}})
    assert (
        "not valid base64"
        in (await events_until(ws, lambda e: e["type"] == "error"))[-1]["message"]
    )
    await ws.send_to(bytes_data=b"\x00\x01\x02")
    assert (
        "whole 16-bit samples"
        in (await events_until(ws, lambda e: e["type"] == "error"))[-1]["message"]
    )
    await ws.disconnect()


async def test_oversized_frames_close_the_socket_and_end_the_call(staff):
    await database_sync_to_async(scripted_profile)(greeting="")
    ws = await connect(staff)
    await ws.send_json_to({"event": "start", "profile": "scripted"})
    started = await events_until(ws, lambda e: e["type"] == "started")
    await ws.send_to(bytes_data=b"\x00" * (64 * 1024 + 2))
    events = await events_until(ws, lambda e: e["type"] == "close")
    assert events[-1]["code"] == 4413
    await ws.disconnect()
    call = await database_sync_to_async(Call.objects.get)(pk=started[-1]["call_id"])
    assert call.ended_at is not None and call.end_reason == EndReason.CALLER_HANGUP


async def test_no_call_starts_while_calls_are_globally_stopped(staff, settings):
    settings.ADMIN_NOTIFICATION_WEBHOOK_URL = ""
    for _ in range(settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW):
        await database_sync_to_async(global_stop.report_critical_error)(reason="test")
    ws = await connect(staff)
    events = await events_until(ws, lambda e: e["type"] == "close")
    assert "globally stopped" in events[0]["message"] and events[-1]["code"] == 4503
    await ws.disconnect()
    assert await database_sync_to_async(Call.objects.count)() == 0


async def test_an_engine_failure_plays_the_apology_ends_with_error_and_counts_for_global_stop(
    staff,
):
    await database_sync_to_async(scripted_profile)(greeting="", llm_model="fail=1")
    ws = await connect(staff)
    await ws.send_json_to({"event": "start", "profile": "scripted", "audio": "binary"})
    started = await events_until(ws, lambda e: e["type"] == "started")
    await speak(ws, "Hello, can you hear me?")
    events = await events_until(ws, lambda e: e["type"] == "ended")
    assert any(e["type"] == "binary" for e in events)  # the apology was spoken
    assert events[-1]["reason"] == "error"
    await ws.disconnect()
    call = await database_sync_to_async(Call.objects.get)(pk=started[-1]["call_id"])
    assert call.end_reason == EndReason.ERROR and call.error_detail
    state = await database_sync_to_async(global_stop.state)()
    assert any(e["call_id"] == str(call.pk) for e in state.recent_errors)


@pytest.mark.slow
async def test_the_demo_profile_talks_back_with_the_offline_engines(staff):
    """Real speech through the real VAD, faster-whisper, the local LLM and piper."""
    from calls.services import profile_ensure_demo

    await database_sync_to_async(profile_ensure_demo)()
    ws = await connect(staff)
    await ws.send_json_to({"event": "start", "profile": "demo", "audio": "binary"})
    call_id = (await events_until(ws, lambda e: e["type"] == "started"))[-1]["call_id"]
    await events_until(ws, is_assistant_final, timeout=60)  # the greeting
    said = "Hello, I would like to book a table for two people tomorrow evening."
    await speak(ws, said)
    seen = await events_until(ws, is_user_final, timeout=60)
    # Any CPU's decoding (tests/transcripts.py): an error bound and some of the key words.
    key_words = frozenset({"table", "two", "people", "tomorrow", "evening"})
    assert_heard(seen[-1]["text"], said, max_wer=0.4, at_least=3, of=key_words)
    seen = await events_until(ws, lambda e: e["type"] == "metrics", timeout=90)
    assert any(e["type"] == "binary" for e in seen)
    assert any(e["type"] == "transcript" and e["role"] == "assistant" and e["text"] for e in seen)
    await ws.send_json_to({"event": "stop"})
    await events_until(ws, lambda e: e["type"] == "ended")
    await ws.disconnect()

    call = await database_sync_to_async(Call.objects.get)(pk=call_id)
    turns = await database_sync_to_async(lambda: list(call.turns.order_by("sequence")))()
    assert call.end_reason == EndReason.CALLER_HANGUP
    user = [t for t in turns if t.role == "user"]
    answers = [t for t in turns if t.role == "assistant" and t.metrics.get("voice_to_voice_ms")]
    assert user and answers
    assert answers[0].metrics["engines"] == {"stt": "local", "llm": "local", "tts": "local"}
