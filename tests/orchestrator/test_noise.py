"""Inbound noise suppression (orchestrator/noise.py) on real speech and steady line noise,
through the real Silero VAD and TurnDetector.

Steady line noise at -35 dBFS does not start a turn even without the cleaner (Silero
scores hiss and hum low; bench/noise.py prints both sides). What the cleaner changes
for the VAD: the cleaned line falls below its -40 dBFS line-noise skip, so the model
stops running on it, and speech on that line still makes exactly one turn.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys

import numpy as np
import pytest

from bench.noise import CHUNK, NOISE_KINDS, dbfs, line_noise, mix, phone_line
from orchestrator import noise
from orchestrator.caller_audio import CallerAudio
from orchestrator.noise import FRAME_BYTES, InboundCleaner, available
from orchestrator.silero import SileroVad
from orchestrator.vad import TurnDetector, TurnEventKind
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16

needs_webrtc = pytest.mark.skipif(not available(), reason="pywebrtc-audio not installed")
needs_speech = pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox needed")

SPEECH = "Hello there, I would like to book a table for two people tonight, please."


def always() -> InboundCleaner:
    """A cleaner that suppresses every frame: what these tests check is the suppressor's
    effect (a call's cleaner skips quiet lines: the LineGate tests below)."""
    return InboundCleaner(only_when_needed=False)


def cleaned(pcm: bytes, cleaner: InboundCleaner | None = None, chunk: int = CHUNK) -> bytes:
    cleaner = cleaner or always()
    return b"".join(cleaner.process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk))


def through_the_vad(
    pcm: bytes, cleaner: InboundCleaner | None, silence_timeout_ms: int = 500
) -> tuple[list, int]:
    """Turn events and Silero model calls for ``pcm`` fed in 20 ms chunks."""
    vad = SileroVad()
    detector = TurnDetector(
        vad,
        min_speech_ms=120,
        silence_timeout_ms=silence_timeout_ms,
        preroll_ms=300,
        barge_in_ms=250,
    )
    events = []
    for i in range(0, len(pcm), CHUNK):
        chunk = pcm[i : i + CHUNK]
        events += detector.feed(cleaner.process(chunk) if cleaner else chunk)
    return [e.kind for e in events], vad.model_calls


def speech_level(pcm: bytes, reference: bytes) -> float:
    """dBFS of ``pcm`` over the 32 ms windows where ``reference`` (clean speech) is louder
    than -40 dBFS."""
    ref = np.frombuffer(reference, "<i2").astype(np.float64)
    windows = len(ref) // 512
    loud = np.sqrt((ref[: windows * 512].reshape(windows, 512) ** 2).mean(1)) > 330
    x = np.frombuffer(pcm, "<i2").astype(np.float64)[: windows * 512].reshape(windows, 512)
    return float(10 * np.log10((x[loud] ** 2).mean() / 32768**2))


@needs_webrtc
@needs_speech
@pytest.mark.parametrize("line", ["clean", "noisy"])
def test_speech_keeps_its_level_and_its_length(line) -> None:
    speech = silence_pcm16(1000) + speech_pcm16(SPEECH) + silence_pcm16(1000)
    pcm = speech if line == "clean" else mix(speech, line_noise("white", 7500, -35, seed=3))
    out = cleaned(pcm)
    assert len(out) == len(pcm) // FRAME_BYTES * FRAME_BYTES  # less than 10 ms held back
    # the suppressor delays by 6 ms, a fraction of a window: no alignment needed
    assert abs(speech_level(out, speech) - speech_level(speech, speech)) < 3.0


@needs_webrtc
@pytest.mark.parametrize("phone", [False, True], ids=["16k", "8k-ulaw"])
@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_ten_seconds_of_line_noise_start_no_turn_and_stop_reaching_the_model(kind, phone):
    pcm = line_noise(kind, 10_000, -35, seed=1)
    if phone:
        pcm = phone_line(pcm)
    kinds, model_calls = through_the_vad(pcm, always())
    assert TurnEventKind.SPEECH_STARTED not in kinds
    windows = len(pcm) // 1024
    assert model_calls < windows * 0.05
    _, model_calls_without = through_the_vad(pcm, None)
    assert model_calls_without > windows * 0.9  # -35 dBFS is above the VAD's own skip
    # at least 10 dB removed once the suppressor has learnt the noise (first second)
    assert dbfs(pcm[32000:]) - dbfs(cleaned(pcm)[32000:]) > 10.0


@needs_webrtc
@needs_speech
@pytest.mark.parametrize("phone", [False, True], ids=["16k", "8k-ulaw"])
def test_speech_on_a_noisy_line_still_makes_one_turn(phone) -> None:
    speech = silence_pcm16(1500) + speech_pcm16(SPEECH) + silence_pcm16(1500)
    pcm = mix(speech, line_noise("white+hum", 9000, -35, seed=2))
    if phone:
        pcm = phone_line(pcm)
    kinds, _ = through_the_vad(pcm, always())
    turn = (TurnEventKind.SPEECH_STARTED, TurnEventKind.TURN_ENDED)
    assert [k for k in kinds if k in turn] == list(turn)


@needs_webrtc
@needs_speech
@pytest.mark.parametrize("speed", [150, 175])
def test_a_short_phrase_on_a_digitally_silent_phone_line_still_makes_its_own_turn(speed):
    """Without the cleaner's dither, WebRTC's noise estimate on exact zeros thinned "It's
    for" out until Silero no longer heard a turn in it (only the second phrase made one)."""
    pcm = phone_line(
        silence_pcm16(300)
        + speech_pcm16("It's for", speed=speed)
        + silence_pcm16(1200)
        + speech_pcm16("a birthday party.", speed=speed)
        + silence_pcm16(1000)
    )
    kinds, _ = through_the_vad(pcm, always(), silence_timeout_ms=250)
    assert kinds.count(TurnEventKind.SPEECH_STARTED) == 2
    assert kinds.count(TurnEventKind.TURN_ENDED) == 2


@needs_webrtc
def test_digital_silence_comes_out_as_exact_silence() -> None:
    """The suppressor hears dither in digital silence (see the test above), but the VAD's
    silence skip and Whisper still get exact zeros, 30 ms after the last sound."""
    pcm = silence_pcm16(500) + line_noise("white", 500, -35) + silence_pcm16(500)
    out = cleaned(pcm)
    assert not any(out[960:16000]) and any(out[16000:32000])
    assert not any(out[32000 + 960 :])


@needs_webrtc
def test_any_chunking_gives_the_same_audio_and_holds_back_less_than_a_frame() -> None:
    pcm = line_noise("white+hum", 3000, -30, seed=4)
    expected = cleaned(pcm, chunk=FRAME_BYTES)
    rng = random.Random(5)
    cleaner, fed, out = always(), 0, bytearray()
    while fed < len(pcm):
        size = rng.choice([0, 1, 3, 159, 161, 319, 320, 321, 640, 1001])
        out += cleaner.process(pcm[fed : fed + size])
        fed += len(pcm[fed : fed + size])
        assert len(out) == fed // FRAME_BYTES * FRAME_BYTES
    assert bytes(out) == expected


@needs_webrtc
def test_empty_input_gives_empty_output() -> None:
    cleaner = always()
    assert cleaner.process(b"") == b""
    assert cleaner.process(b"\x01\x00" * 10) == b""  # held: less than 10 ms
    assert cleaner.process(b"") == b""


# A call's cleaner suppresses only lines that need it (orchestrator.noise.LineGate).

QUIET_LINE = -60  # dBFS: a phone line's comfort noise
DELAY = noise.NS_DELAY_BYTES  # a passed-through line keeps the suppressor's delay


def delayed(out: bytes, start: int) -> bytes:
    """``out`` from where input byte ``start`` comes out."""
    return out[start + DELAY :]


@needs_webrtc
@needs_speech
def test_a_quiet_line_passes_through_unchanged_and_still_makes_its_turns() -> None:
    speech = (
        silence_pcm16(300) + speech_pcm16("It's for") + silence_pcm16(1200)
        + speech_pcm16("a birthday party.") + silence_pcm16(1000)
    )  # fmt: skip
    pcm = phone_line(mix(speech, line_noise("white", 4000, QUIET_LINE, seed=7)))
    cleaner = InboundCleaner()
    out = cleaned(pcm, cleaner)
    quiet_after = 20 * FRAME_BYTES  # QUIET_FRAMES of the line under -50 dBFS
    assert delayed(out, quiet_after) == pcm[quiet_after : len(out) - DELAY]
    assert not cleaner.gate.suppressing  # speech did not turn it back on
    kinds, _ = through_the_vad(pcm, InboundCleaner(), silence_timeout_ms=250)
    assert kinds.count(TurnEventKind.SPEECH_STARTED) == kinds.count(TurnEventKind.TURN_ENDED) == 2


@needs_webrtc
@needs_speech
def test_a_long_sentence_on_a_quiet_line_does_not_turn_suppression_back_on() -> None:
    sentence = "I would like to book a table for four people on Friday evening at eight, " * 2
    pcm = phone_line(
        mix(silence_pcm16(500) + speech_pcm16(sentence) + silence_pcm16(500),
            line_noise("white", 20_000, QUIET_LINE, seed=8))
    )  # fmt: skip
    cleaner = InboundCleaner()
    out, after = cleaned(pcm, cleaner), 20 * FRAME_BYTES
    assert delayed(out, after) == pcm[after : len(out) - DELAY]
    assert not cleaner.gate.suppressing


@needs_webrtc
def test_a_noisy_line_is_suppressed_from_its_first_frame() -> None:
    pcm = line_noise("white+hum", 3000, -35, seed=9)
    cleaner = InboundCleaner()
    out = cleaned(pcm, cleaner)
    assert cleaner.gate.suppressing and out == cleaned(pcm)  # the same as always-on
    assert dbfs(pcm[32000:]) - dbfs(out[32000:]) > 10.0


@needs_webrtc
@pytest.mark.parametrize("level", [-45, -35])
def test_noise_that_starts_mid_call_turns_suppression_on_within_about_a_second(level, caplog):
    quiet, noisy = 1000, 4000  # ms
    pcm = mix(
        line_noise("white", quiet + noisy, QUIET_LINE, seed=10),
        silence_pcm16(quiet) + line_noise("white+hum", noisy, level, seed=11),
    )
    cleaner = InboundCleaner(call_id="c9")
    with caplog.at_level(logging.INFO, logger="orchestrator.noise"):
        out = b"".join(cleaner.process(pcm[i : i + CHUNK]) for i in range(0, len(pcm), CHUNK))
    assert cleaner.gate.suppressing and cleaner.gate.settled
    assert (
        delayed(out, 20 * FRAME_BYTES)[: 32 * quiet - 20 * FRAME_BYTES]
        == pcm[20 * FRAME_BYTES : 32 * quiet]
    )
    on = 32 * (quiet + 1100)  # bytes: one second of steady noise, and a little margin
    assert out[on:] != pcm[on : len(out)]
    last_second = slice(len(out) - 32000, len(out))
    assert dbfs(pcm[last_second]) - dbfs(out[last_second]) > 6.0
    assert "c9: noise suppression on: steady line noise" in caplog.text


def tone(ms: int, dbfs_level: float) -> bytes:
    t = np.arange(16 * ms) / 16000
    amplitude = 32768 * 10 ** (dbfs_level / 20) * np.sqrt(2)
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


@needs_webrtc
def test_switching_either_way_keeps_every_sample_once_and_in_order() -> None:
    """A passed-through line is delayed by the suppressor's own 6 ms: no sample is dropped
    when it switches off, none repeated (and no stale audio) when it switches back on."""
    quiet = line_noise("white", 1000, QUIET_LINE, seed=12)
    pcm = quiet + tone(2000, -20)
    cleaner = InboundCleaner()
    out = cleaned(pcm, cleaner)
    assert len(out) == len(pcm) and cleaner.gate.settled
    x = np.frombuffer(pcm, "<i2").astype(np.int32)
    y = np.frombuffer(out, "<i2").astype(np.int32)
    d = noise.NS_DELAY
    # Off after 200 ms: from there on, the input 96 samples later, exactly.
    off = 20 * 160
    assert np.array_equal(y[off + d : 16000 + d], x[off:16000])
    # On again a second into the tone: around the switch the tone never drops out.
    on = 16000 + (noise.NOISY_FRAMES - 1) * 160  # the frame that completes the steady run
    assert np.array_equal(y[16000 + d : on], x[16000 : on - d])  # passed by until then
    window = 80  # 5 ms
    # (then the suppressor slowly takes a steady tone for noise: -7 dB within 0.1 s)
    near = range(on - 400, on + 240, window)
    levels = [np.sqrt(np.mean(y[i : i + window] ** 2.0)) for i in near]
    assert min(levels) > 0.5 * 32768 * 10 ** (-20 / 20)
    # and its first 96 samples are the raw ones before them, not a stale delay line
    assert np.array_equal(y[on : on + d], x[on - d : on])


@pytest.fixture
def without_the_library(monkeypatch):
    monkeypatch.setattr(noise, "_logged", set())
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import raises ImportError
    noise._processor_class.cache_clear()
    yield
    noise._processor_class.cache_clear()


def test_without_the_library_audio_passes_through_unchanged(without_the_library, caplog):
    pcm = line_noise("white", 500, -35)
    with caplog.at_level(logging.WARNING, logger="orchestrator.noise"):
        assert not available()
        first, second = InboundCleaner(), InboundCleaner()
    assert not first.active and not second.active
    assert len(caplog.records) == 1  # once per process, not per call
    assert "pywebrtc-audio unavailable" in caplog.records[0].message
    assert cleaned(pcm, first, chunk=333) == pcm
    assert first.process(b"") == b""


class _FailingProcessor:
    def __init__(self, *, fail_at_start: bool = False, **config) -> None:
        if fail_at_start:
            raise RuntimeError("no SIMD here")
        self.calls = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("corrupt state")
        return np.zeros_like(samples)


def test_a_library_that_fails_to_start_passes_audio_through(monkeypatch, caplog) -> None:
    monkeypatch.setattr(noise, "_logged", set())
    monkeypatch.setattr(
        noise, "_processor_class", lambda: lambda **c: _FailingProcessor(fail_at_start=True, **c)
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.noise"):
        cleaners = [InboundCleaner(), InboundCleaner()]
    assert not any(c.active for c in cleaners)
    assert len(caplog.records) == 1
    pcm = line_noise("white", 200, -35)
    assert cleaned(pcm, cleaners[0], chunk=101) == pcm


def test_a_failure_mid_call_turns_the_cleaner_off_without_losing_audio(monkeypatch, caplog):
    monkeypatch.setattr(noise, "_processor_class", lambda: _FailingProcessor)
    cleaner = InboundCleaner(call_id="c1")
    first = b"\x10\x00" * 200  # 160 samples processed (to zeros here), 40 held
    assert cleaner.process(first) == b"\x00\x00" * 160
    with caplog.at_level(logging.WARNING, logger="orchestrator.noise"):
        second = cleaner.process(b"\x20\x00" * 200)  # the processor raises: passed through
    assert second == b"\x10\x00" * 40 + b"\x20\x00" * 120
    assert not cleaner.active and "c1" in caplog.text
    assert cleaner.process(b"\x30\x00" * 3) == b"\x20\x00" * 80 + b"\x30\x00" * 3  # all of it


class _RecordingDetector:
    def __init__(self, expected_bytes: int) -> None:
        self.received = bytearray()
        self.expected_bytes = expected_bytes
        self.done = asyncio.Event()

    async def feed_async(self, pcm: bytes, *, behind: bool = False) -> list:
        self.received += pcm
        if len(self.received) >= self.expected_bytes:
            self.done.set()
        return []


async def _feed_all(caller: CallerAudio, pcm: bytes, expected_bytes: int) -> bytes:
    for i in range(0, len(pcm), 333):
        caller.push(pcm[i : i + 333])
    detector = _RecordingDetector(expected_bytes)
    task = asyncio.create_task(caller.feed(detector, lambda event: None))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(detector.done.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return bytes(detector.received)


@needs_webrtc
async def test_caller_audio_runs_its_cleaner_before_the_vad() -> None:
    pcm = line_noise("white+hum", 1000, -35, seed=6)
    expected = cleaned(pcm, InboundCleaner(), chunk=333)
    caller = CallerAudio("c1", cleaner=InboundCleaner(call_id="c1"))
    assert await _feed_all(caller, pcm, len(expected)) == expected
    assert expected != pcm[: len(expected)]


async def test_caller_audio_without_a_cleaner_feeds_the_audio_as_it_came() -> None:
    pcm = line_noise("white", 1000, -35, seed=6)
    assert await _feed_all(CallerAudio("c1"), pcm, len(pcm)) == pcm
