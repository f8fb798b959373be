"""A recorded phone call over the Twilio protocol, end to end: real speech (espeak-ng,
µ-law 8 kHz, sent in real time as a carrier does) and the scripted engines; the stored
file has the caller on the left channel and the agent on the right, on the call's clock."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from channels.db import database_sync_to_async

from calls.models import Call
from orchestrator.recording import decoded_blocks
from tests.scripted import scripted_profile
from tests.speech import have_speech_tools
from tests.telephony.conftest import twilio_signature
from tests.telephony.test_streams import (
    Twilio,
    is_mark,
    load_call,
    socket,
    speech_frames,
    until,
)

pytest.importorskip("av")
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("calls_allowed"),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

CONSENT = "This call is recorded."


@pytest.fixture(autouse=True)
def recording_dirs(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.RECORDINGS_SPOOL_DIR = tmp_path / "spool"
    return settings


def decoded(call: Call) -> tuple[np.ndarray, int]:
    """The stored recording: float samples shaped (2, n) and their rate."""
    with call.recording.storage.open(call.recording.name, "rb") as fh:
        blocks = list(decoded_blocks(fh))
    return np.hstack([block for block, _ in blocks]), blocks[0][1]


def level(audio: np.ndarray, rate: int, channel: int, start: float, end: float) -> float:
    """RMS of one channel between two offsets (s) from the call's start."""
    assert end > start
    part = audio[channel, round(start * rate) : round(end * rate)].astype(np.float64)
    return float(np.sqrt(np.mean(part**2)))


def offset(call: Call, moment) -> float:
    return (moment - call.started_at).total_seconds()


async def recording_stored(call_id: str, *, timeout: float = 20) -> Call:
    """The recording is stored once the session has ended and closed its file."""
    get = database_sync_to_async(lambda: Call.objects.get(pk=call_id))
    async with asyncio.timeout(timeout):
        while not (call := await get()).recording:
            await asyncio.sleep(0.05)
    return call


async def test_a_recorded_twilio_call_has_the_caller_left_and_the_agent_right(settings):
    await database_sync_to_async(scripted_profile)(
        record_calls=True, recording_consent_line=CONSENT
    )
    call_sid, parameters = await Twilio.ring()
    call_id = parameters["call_id"]
    signature = twilio_signature("wss://agent.example.com/ws/telephony/twilio/", {})
    async with socket(Twilio.PATH, headers=[(b"x-twilio-signature", signature.encode())]) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(parameters)
        await until(ws, is_mark("utt-1"))  # the consent line, then the greeting
        await twilio.echo_mark("utt-1")
        # The caller speaks in real time (one 20 ms frame every 20 ms), as a carrier sends.
        for frame in speech_frames("Hello, I would like to book a table for two people."):
            await twilio.media(frame)
            await asyncio.sleep(0.02)
        await until(ws, is_mark("utt-2"))
        await twilio.echo_mark("utt-2")
        await asyncio.sleep(0.5)
        await twilio.stop()
        await until(ws, lambda m: False)

    call = await recording_stored(call_id)
    _, turns = await load_call(call_id)
    assert [t.role for t in turns] == ["assistant", "user", "assistant"]
    assert turns[0].text.startswith(CONSENT)  # said first, then the greeting

    storage = call.recording.storage
    assert call.recording.name.endswith(f"{call_id}.ogg") and storage.exists(call.recording.name)
    assert not (settings.RECORDINGS_SPOOL_DIR / f"{call_id}.ogg").exists()
    audio, rate = decoded(call)
    assert audio.shape[0] == 2  # caller left, agent right

    duration = audio.shape[1] / rate
    assert duration == pytest.approx(call.duration_seconds, abs=0.5)
    assert call.recording_duration_s == pytest.approx(duration, abs=0.1)

    caller, agent = 0, 1
    for turn in turns:
        # Turn times are offsets from the call's start, the recording's time 0.
        start, end = offset(call, turn.started_at) + 0.1, offset(call, turn.ended_at) - 0.1
        speaker, other = (caller, agent) if turn.role == "user" else (agent, caller)
        heard = level(audio, rate, speaker, start, end)
        assert heard > 0.02, (turn.role, turn.text)
        assert heard > 10 * level(audio, rate, other, start, end), (turn.role, turn.text)


async def test_a_recorded_barge_in_keeps_only_the_agent_audio_the_caller_heard():
    long_greeting = "Hello, this is Casa Lola. " + "We are open every day from noon. " * 4
    await database_sync_to_async(scripted_profile)(
        greeting=long_greeting, barge_in_min_ms=200, record_calls=True
    )
    call_sid, parameters = await Twilio.ring()
    async with socket(Twilio.PATH) as ws:
        twilio = Twilio(ws, call_sid)
        await twilio.start(parameters)
        await until(ws, lambda m: m["event"] == "media")
        await asyncio.sleep(1.0)
        for frame in speech_frames("Sorry to interrupt, I need a table for tonight please."):
            await twilio.media(frame)
            await asyncio.sleep(0.02)
        # The reply to the interruption has been sent (its number depends on whether a
        # pause in the caller's sentence started, then dropped, a reply meanwhile).
        await until(ws, lambda m: m["event"] == "mark" and m["mark"]["name"] != "utt-1")
        await asyncio.sleep(0.5)
        await twilio.stop()
        await until(ws, lambda m: False)

    call = await recording_stored(parameters["call_id"])
    _, turns = await load_call(parameters["call_id"])
    greeting, reply = turns[0], turns[-1]
    assert greeting.interrupted and reply.role == "assistant" and not reply.interrupted
    audio, rate = decoded(call)
    agent = 1
    cut = offset(call, greeting.ended_at)
    assert level(audio, rate, agent, offset(call, greeting.started_at) + 0.1, cut - 0.1) > 0.02
    # After each cut and until the agent's next utterance, the agent channel is silent: the
    # frames sent ahead (the playout's lead) were cleared at the carrier, never heard. A pause
    # in the caller's sentence may have started (and the rest of it cut) a reply in between.
    said = [t for t in turns if t.role == "assistant"]
    for cut_turn, next_turn in zip(said, said[1:], strict=False):
        start = offset(call, cut_turn.ended_at) + 0.15
        end = offset(call, next_turn.started_at) - 0.1
        if cut_turn.interrupted and end - start > 0.1:
            assert level(audio, rate, agent, start, end) < 0.002, (cut_turn.text, next_turn.text)
