"""The local English STT: Moonshine tiny-en (orchestrator/engines/moonshine.py) on real
piper speech, through the local engine that picks it by language.

Transcripts are checked for the words that carry the request ("table", the party size,
the day), never for one machine's exact decoding (tests/transcripts.py)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from orchestrator.audio import pcm16_to_ulaw, ulaw_to_pcm16
from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import create_engine, moonshine
from orchestrator.engines.local import MODELS
from orchestrator.transcriber import Transcriber
from tests.speech import have_piper, mulaw_roundtrip, piper_pcm16, silence_pcm16
from tests.transcripts import word_error_rate, words

needs_model = pytest.mark.skipif(
    not moonshine.available(), reason="moonshine-voice not installed (requirements-turn.txt)"
)
needs_speech = pytest.mark.skipif(not have_piper(), reason="piper voice not installed")

BOOKING = "Hi, I would like to book a table for four people on Friday."


def local_stt(language: str = "en-US", model: str = "moonshine"):
    return create_engine(
        "stt",
        EngineSpec(engine="local", model=model),
        EngineCredentials(),
        config=CallConfig(language=language),
    )


def assert_booking_heard(text: str) -> None:
    heard = set(words(text))
    assert "table" in heard, text
    assert heard & {"four", "4"}, text
    assert "friday" in heard, text
    assert word_error_rate(BOOKING, text) <= 0.35, text


# --- which model serves which language (no model is loaded) ------------------------------


@pytest.mark.parametrize(
    ("language", "model", "expected"),
    [
        ("en-US", "", "whisper-tiny.en"),  # Moonshine is an opt-in (bench/stt_wer.py)
        ("en-GB", "", "whisper-tiny.en"),
        ("en-US", "moonshine", "moonshine-tiny-en"),
        ("es-ES", "", "whisper-base"),
        ("es-ES", "moonshine", "whisper-base"),  # English only: never on Spanish
        ("en-US", "whisper", "whisper-tiny.en"),  # the option that forces Whisper
        ("es-ES", "whisper", "whisper-base"),
        ("en-US", "tiny.en", "whisper-tiny.en"),
        ("en-US", "base", "whisper-base"),
        ("en-US", "whisper-large-v3-turbo", "whisper-tiny.en"),  # a cloud name: ignored
    ],
)
def test_the_local_stt_picks_whisper_by_language_and_moonshine_on_request(
    language, model, expected
):
    assert local_stt(language, model).model_label == MODELS[expected].label


# --- the tokenizer ------------------------------------------------------------------------


@needs_model
def test_the_tokenizer_joins_byte_pieces_before_decoding_and_turns_markers_into_spaces():
    tokenizer = moonshine.Tokenizer.from_bytes(
        (moonshine.model_dir() / "tokenizer.bin").read_bytes()
    )
    by_piece = {piece: i for i, piece in enumerate(tokenizer.pieces)}
    fallback = [3 + b for b in "afé".encode()]  # byte-fallback ids: 3 + byte value
    ids = [moonshine.BOS, by_piece["▁the".encode()], by_piece["▁c".encode()], *fallback]

    assert tokenizer.decode([*ids, moonshine.EOS]) == "the café"


def test_a_truncated_tokenizer_file_is_refused():
    with pytest.raises(moonshine.ModelFilesError, match="pieces"):
        moonshine.Tokenizer.from_bytes(b"\x05<unk>\x03<s>\x04</s>")


# --- the real model on real speech --------------------------------------------------------


@pytest.mark.slow
@needs_model
@needs_speech
async def test_a_booking_request_is_heard_through_a_phone_line():
    pcm = silence_pcm16(300) + mulaw_roundtrip(piper_pcm16(BOOKING)) + silence_pcm16(300)

    # The session passes Whisper's backchannel prompt: Moonshine has none and ignores it.
    text = await local_stt().transcribe(
        pcm, sample_rate=16000, language="en-US", prompt="Mm-hmm. Uh-huh. Yeah."
    )

    assert_booking_heard(text)


@pytest.mark.slow
@needs_model
@needs_speech
async def test_8khz_mulaw_audio_is_transcribed():
    """What a Twilio/Telnyx call carries: 8 kHz µ-law, decoded to 8 kHz PCM16."""
    pcm8 = ulaw_to_pcm16(pcm16_to_ulaw(piper_pcm16(BOOKING, rate=8000)))

    text = await local_stt().transcribe(pcm8, sample_rate=8000, language="en-US")

    assert_booking_heard(text)


@needs_model
@pytest.mark.parametrize(
    "pcm",
    [b"", b"\x01", b"\x00\x10" * 800, silence_pcm16(1000)],
    ids=["empty", "one-byte", "50-ms", "one-second-of-silence"],
)
async def test_empty_short_or_silent_audio_is_nothing_and_never_reaches_the_model(
    pcm, monkeypatch
):
    model = MODELS["moonshine-tiny-en"].get()

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(model.encoder, "run", refuse, raising=False)
    monkeypatch.setattr(model.decoder, "run", refuse, raising=False)

    assert await local_stt().transcribe(pcm, sample_rate=16000, language="en-US") == ""


@pytest.mark.slow
@needs_model
@needs_speech
async def test_a_transcription_runs_off_the_event_loop_which_keeps_ticking(monkeypatch):
    loop_thread = threading.current_thread()
    ticks = 0
    seen: dict[str, object] = {}
    real = moonshine.transcribe

    def watched(model, *args):
        seen["thread"] = threading.current_thread()
        before = ticks
        text = real(model, *args)
        seen["ticks during the job"] = ticks - before
        return text

    monkeypatch.setattr(moonshine, "transcribe", watched)

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    engine = local_stt()
    await engine.warmup()  # loaded and warm: what is measured below is one transcription
    pcm = mulaw_roundtrip(piper_pcm16(BOOKING + " At eight in the evening, please."))
    ticking = asyncio.create_task(ticker())
    try:
        text = await engine.transcribe(pcm, sample_rate=16000, language="en-US")
    finally:
        ticking.cancel()
        await asyncio.gather(ticking, return_exceptions=True)

    assert {"table", "friday", "evening"} <= set(words(text)), text
    assert seen["thread"] is not loop_thread
    assert seen["ticks during the job"] > 0  # the loop ran other tasks meanwhile


@pytest.mark.slow
@needs_model
@needs_speech
async def test_partial_transcripts_come_from_moonshine_while_the_caller_speaks():
    shown: list[dict] = []
    got_one = asyncio.Event()

    async def emit(event: dict) -> None:
        shown.append(event)
        got_one.set()

    transcriber = Transcriber(
        local_stt(), language="en-US", partials=True, emit=emit, call_id="test"
    )
    speech = piper_pcm16(BOOKING)
    try:
        transcriber.partial(speech[: len(speech) * 2 // 3])  # the turn so far
        await asyncio.wait_for(got_one.wait(), timeout=30)
    finally:
        await transcriber.close()

    (event,) = shown
    assert event["final"] is False
    assert "table" in words(event["text"]), event


def test_audio_is_resampled_to_16khz_before_the_model():
    class Recorder:
        def transcribe(self, audio: np.ndarray) -> str:
            self.audio = audio
            return "ok"

    recorder = Recorder()
    one_second_8k = (np.sin(np.arange(8000) / 3) * 8000).astype("<i2").tobytes()

    assert moonshine.transcribe(recorder, one_second_8k, 8000) == "ok"
    assert abs(recorder.audio.size - moonshine.RATE) <= 16
