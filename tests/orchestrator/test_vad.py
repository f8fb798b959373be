"""Turn detection on real speech through the real Silero VAD."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from orchestrator.silero import WINDOW_BYTES, SileroVad, _Batch
from orchestrator.vad import TurnDetector, TurnEventKind
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16

pytestmark = pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox needed")


def detector(**overrides: int) -> TurnDetector:
    params = {
        "min_speech_ms": 120,
        "silence_timeout_ms": 500,
        "preroll_ms": 300,
        "barge_in_ms": 250,
    }
    params.update(overrides)
    return TurnDetector(SileroVad(), **params)


def feed_in_frames(d: TurnDetector, pcm: bytes, frame: int = 640) -> list:
    events = []
    for i in range(0, len(pcm), frame):
        events += d.feed(pcm[i : i + frame])
    return events


def test_speech_makes_one_turn_with_preroll() -> None:
    speech = speech_pcm16("I would like to book a table for two people.")
    d = detector()
    events = feed_in_frames(d, silence_pcm16(1000) + speech + silence_pcm16(800))
    assert [e.kind for e in events] == [
        TurnEventKind.VOICE_ONSET,
        TurnEventKind.SPEECH_STARTED,
        TurnEventKind.BARGE_IN,
        TurnEventKind.TURN_ENDED,
    ]
    end = events[-1]
    assert end.voiced_ms >= 1000
    # ~300 ms of the silence before the first syllable is kept (pre-roll) ...
    audio = np.frombuffer(end.audio, "<i2")
    assert not np.any(audio[: 16000 * 250 // 1000])
    # ... and the utterance covers the whole speech, without the long silence after it
    assert len(end.audio) >= len(speech)
    assert len(end.audio) < len(speech) + 2 * 16000 * 2 * 600 // 1000
    assert not d.in_turn


def test_a_pause_shorter_than_the_silence_timeout_stays_in_the_turn() -> None:
    d = detector(silence_timeout_ms=800)
    # espeak ends each clip with ~390 ms of silence: the pause here is ~600 ms
    pcm = speech_pcm16("Hello there.") + silence_pcm16(150) + speech_pcm16("Table for two.")
    events = feed_in_frames(d, pcm + silence_pcm16(1000))
    assert [e.kind for e in events].count(TurnEventKind.TURN_ENDED) == 1


def test_a_short_noise_burst_is_at_most_a_voice_onset_then_a_false_start() -> None:
    """Loud enough to pause the agent for a moment (the energy onset), never a turn."""
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 6000, 1600).astype("<i2").tobytes()  # 100 ms
    d = detector()
    kinds = [e.kind for e in feed_in_frames(d, silence_pcm16(500) + noise + silence_pcm16(1000))]
    assert kinds == [TurnEventKind.VOICE_ONSET, TurnEventKind.FALSE_START]


def test_a_loud_voice_onset_comes_before_the_model_calls_it_speech() -> None:
    """A breathy onset the model needs a few windows for still pauses the agent at once."""
    speech = speech_pcm16("Excuse me, I think I called the wrong number.")
    events = feed_in_frames(detector(), silence_pcm16(500) + speech + silence_pcm16(800))
    kinds = [e.kind for e in events]
    assert kinds[0] is TurnEventKind.VOICE_ONSET and TurnEventKind.FALSE_START not in kinds[:2]
    assert kinds.count(TurnEventKind.SPEECH_STARTED) >= 1
    assert events[0].at <= events[kinds.index(TurnEventKind.SPEECH_STARTED)].at


def test_steady_loud_noise_pauses_once_then_never_again_until_it_stops() -> None:
    """A loud line that is not speech: one false start, no flapping pause/resume."""
    rng = np.random.default_rng(2)
    hum = rng.normal(0, 3000, 16000 * 3).astype("<i2").tobytes()  # 3 s, -21 dBFS
    kinds = [e.kind for e in feed_in_frames(detector(), silence_pcm16(300) + hum)]
    assert kinds.count(TurnEventKind.VOICE_ONSET) <= 1
    assert TurnEventKind.SPEECH_STARTED not in kinds


def test_a_false_start_starts_a_turn_but_never_reaches_barge_in() -> None:
    fragment = speech_pcm16("Hello there")[: 16000 * 2 * 190 // 1000]
    d = detector()
    kinds = [e.kind for e in feed_in_frames(d, silence_pcm16(300) + fragment + silence_pcm16(800))]
    assert kinds[0] is TurnEventKind.VOICE_ONSET
    assert TurnEventKind.BARGE_IN not in kinds


def test_a_click_is_a_voice_onset_then_a_false_start() -> None:
    """The session pauses the agent at a voice onset: a burst too short to be speech
    must say so, or the agent would stay paused."""
    click = speech_pcm16("Hello there")[: 16000 * 2 * 70 // 1000]
    kinds = [
        e.kind for e in feed_in_frames(detector(), silence_pcm16(300) + click + silence_pcm16(500))
    ]
    if kinds:  # the model may not even call 70 ms of a syllable voiced
        assert kinds == [TurnEventKind.VOICE_ONSET, TurnEventKind.FALSE_START]


def test_silence_makes_no_event() -> None:
    assert feed_in_frames(detector(), silence_pcm16(3000)) == []


def test_near_silent_windows_skip_the_model_but_speech_does_not() -> None:
    vad = SileroVad()
    quiet = (np.random.default_rng(0).integers(-20, 20, 512)).astype("<i2").tobytes()
    assert vad(quiet) == 0.0 and vad.model_calls == 0
    d = TurnDetector(
        vad, min_speech_ms=120, silence_timeout_ms=500, preroll_ms=300, barge_in_ms=250
    )
    events = feed_in_frames(
        d, silence_pcm16(500) + speech_pcm16("Hello there, a table please.") + silence_pcm16(700)
    )
    assert [
        e.kind for e in events if e.kind not in (TurnEventKind.BARGE_IN, TurnEventKind.VOICE_ONSET)
    ] == [
        TurnEventKind.SPEECH_STARTED,
        TurnEventKind.TURN_ENDED,
    ]
    assert vad.model_calls > 0


def _on_noisy_line(pcm: bytes, *, noise_dbfs: float, speech_gain: float = 1.0) -> bytes:
    x = np.frombuffer(pcm, "<i2").astype(np.float64) * speech_gain
    noise = np.random.default_rng(1).normal(0, 32768 * 10 ** (noise_dbfs / 20), len(x))
    return np.clip(x + noise, -32768, 32767).astype("<i2").tobytes()


@pytest.mark.parametrize("speech_gain", [1.0, 0.1])  # normal and -20 dB (quiet) speech
def test_speech_on_a_noisy_line_makes_one_turn_while_the_line_noise_skips_the_model(
    speech_gain,
) -> None:
    vad = SileroVad()
    d = TurnDetector(
        vad, min_speech_ms=120, silence_timeout_ms=500, preroll_ms=300, barge_in_ms=250
    )
    pcm = (
        silence_pcm16(1500)
        + speech_pcm16("Hello there, I would like a table please.")
        + silence_pcm16(1500)
    )
    events = feed_in_frames(d, _on_noisy_line(pcm, noise_dbfs=-60, speech_gain=speech_gain))
    assert [
        e.kind for e in events if e.kind not in (TurnEventKind.BARGE_IN, TurnEventKind.VOICE_ONSET)
    ] == [
        TurnEventKind.SPEECH_STARTED,
        TurnEventKind.TURN_ENDED,
    ]
    windows = len(pcm) // 1024
    assert vad.model_calls < windows * 0.75  # the 3 s of line noise mostly never reach the model


def test_the_end_of_turn_timer_runs_at_frame_resolution_not_whole_windows() -> None:
    """The turn ends within one 20 ms frame of silence_timeout after the speech's last
    loud block, rather than on the 32 ms window grid (up to 32 ms later)."""
    fed = [0]
    d = TurnDetector(
        SileroVad(), min_speech_ms=120, silence_timeout_ms=500, preroll_ms=300, barge_in_ms=250,
        clock=lambda: fed[0] / 16000,
    )  # fmt: skip
    speech = speech_pcm16("A table for four, please.")
    samples = np.frombuffer(speech, "<i2").astype(np.float32)
    blocks = samples[: len(samples) // 64 * 64].reshape(-1, 64)
    last_loud = (np.flatnonzero((blocks**2).mean(1) > 330.0**2)[-1] + 1) * 64 + 3200
    pcm = silence_pcm16(200) + speech + silence_pcm16(1000)
    ended_at = None
    for i in range(0, len(pcm), 640):
        fed[0] += len(pcm[i : i + 640]) // 2
        if any(e.kind is TurnEventKind.TURN_ENDED for e in d.feed(pcm[i : i + 640])):
            ended_at = fed[0]
            break
    assert ended_at is not None
    silence_ms = (ended_at - last_loud) / 16
    # The model may call the very last loud block non-speech (a click, a breath): the timer
    # then starts a block or two earlier. Whole windows would give up to 500 + 32 + 20.
    assert 500 - 32 <= silence_ms < 500 + 20, silence_ms


# --- windows of many calls scored in one model run ------------------------------------


def _windows(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + WINDOW_BYTES] for i in range(0, len(pcm) - WINDOW_BYTES + 1, WINDOW_BYTES)]


def _score_alone(windows: list[bytes]) -> list[float]:
    vad = SileroVad()
    return [vad(window) for window in windows]


async def test_calls_scoring_together_share_model_runs_and_get_their_own_scores() -> None:
    texts = ["I would like to book a table.", "Friday at nine, please.", "My name is Lola."]
    calls = [_windows(silence_pcm16(200) + speech_pcm16(text)) for text in texts]
    # The same windows, one call at a time, each window its own model run.
    alone = [_score_alone(windows) for windows in calls]

    vads = [SileroVad() for _ in calls]
    runs, scored = _Batch.runs, _Batch.windows
    together: list[list[float]] = [[] for _ in calls]
    for i in range(max(len(w) for w in calls)):
        talking = [n for n, windows in enumerate(calls) if i < len(windows)]
        scores = await asyncio.gather(*(vads[n].score(calls[n][i]) for n in talking))
        for n, score in zip(talking, scores, strict=True):
            together[n].append(score)

    for mine, reference in zip(together, alone, strict=True):
        # Batched and single runs differ only in float rounding; the state carried between
        # windows (each call's own) must not mix: a mix-up moves scores by far more.
        assert np.allclose(mine, reference, atol=1e-4)
        assert max(mine) > 0.9  # speech was heard
    model_windows = _Batch.windows - scored
    assert model_windows == sum(v.model_calls for v in vads)
    # Three calls' windows arriving together ran as one batch, not three runs.
    assert _Batch.runs - runs <= -(-model_windows // 2)


async def test_a_caller_that_stops_waiting_does_not_break_the_batch_for_the_others() -> None:
    speech = _windows(speech_pcm16("Hello, I need a table for two."))
    loud = next(w for w in speech if SileroVad()(w) > 0.5)
    leaving, staying = SileroVad(), SileroVad()
    gone = asyncio.ensure_future(leaving.score(loud))
    kept = asyncio.ensure_future(staying.score(loud))
    await asyncio.sleep(0)  # both submitted to the same batch
    gone.cancel()
    assert await kept > 0.5
    assert gone.cancelled()


async def test_feeding_the_detector_async_gives_the_same_turns_as_feeding_it_directly() -> None:
    pcm = silence_pcm16(600) + speech_pcm16("A table for four on Friday.") + silence_pcm16(900)
    direct, batched = detector(), detector()
    expected = feed_in_frames(direct, pcm)
    events = []
    for i in range(0, len(pcm), 640):
        events += await batched.feed_async(pcm[i : i + 640])
    assert [e.kind for e in events] == [e.kind for e in expected]
    assert events[-1].audio == expected[-1].audio


async def test_on_a_busy_loop_windows_arriving_apart_wait_for_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Batch, "BUSY_RATE", 0)  # every loop counts as busy: always gather
    monkeypatch.setattr(_Batch, "GATHER_S", 0.5)  # (a loaded CI machine's loop turns are slow)
    speech = _windows(speech_pcm16("Hello, I need a table for two."))
    loud = next(w for w in speech if SileroVad()(w) > 0.5)
    first, second = SileroVad(), SileroVad()
    runs = _Batch.runs
    a = asyncio.ensure_future(first.score(loud))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # a later loop turn, within the gather time
    b = asyncio.ensure_future(second.score(loud))
    assert await a > 0.5 and await b > 0.5
    assert _Batch.runs - runs == 1


async def test_a_call_that_is_behind_never_waits_for_a_gather(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Batch, "BUSY_RATE", 0)
    monkeypatch.setattr(_Batch, "GATHER_S", 30.0)
    loud = next(w for w in _windows(speech_pcm16("Hello there.")) if SileroVad()(w) > 0.5)
    waiting = asyncio.ensure_future(SileroVad().score(loud))
    await asyncio.sleep(0)
    # Behind: its batch runs at the next loop turn, and takes the waiting window along.
    assert await asyncio.wait_for(SileroVad().score(loud, may_wait=False), 5) > 0.5
    assert await asyncio.wait_for(waiting, 5) > 0.5


async def test_a_window_the_model_cannot_take_fails_only_its_own_call() -> None:
    loud = next(w for w in _windows(speech_pcm16("Hello there.")) if SileroVad()(w) > 0.5)
    broken, fine = SileroVad(), SileroVad()
    broken._state = np.zeros((2, 1, 64), np.float32)  # a state the model cannot take
    results = await asyncio.gather(broken.score(loud), fine.score(loud), return_exceptions=True)
    assert isinstance(results[0], Exception)
    assert results[1] > 0.5
