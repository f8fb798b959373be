"""Smart Turn v3.2 (orchestrator/smart_turn.py): features, the model thread, the file check.

No test asserts a score or a complete/incomplete outcome: synthetic voices read as
"finished" whatever the words, and the model is weaker on phone audio. What holds on any
CPU: the features' shape and invariants, a probability in [0, 1] for real speech, the
bound on queued jobs, cancellation, and that a wrong model file is refused.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from orchestrator import smart_turn
from orchestrator.smart_turn import ModelChecksumError, SmartTurn, features
from tests.speech import have_speech_tools, mulaw_roundtrip, silence_pcm16, speech_pcm16

needs_model = pytest.mark.skipif(
    not smart_turn.available(), reason="Smart Turn model not installed (requirements-turn.txt)"
)
needs_speech = pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox needed")

SENTENCE = "I would like to book a table for two people tonight."


def _chirp(seconds: float, *, amplitude: int = 8000) -> bytes:
    """A voice-band sweep, for what needs no real speech (no tools required)."""
    t = np.arange(int(seconds * 16000)) / 16000
    wave = amplitude * np.sin(2 * np.pi * (200 * t + 400 * t**2)) * (1 + 0.5 * np.sin(7 * t))
    return wave.astype("<i2").tobytes()


class _Gate:
    """Holds the model thread inside a job until released (to fill its queue on purpose)."""

    def __init__(self, turn: SmartTurn) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        real = turn.predict

        def gated(pcm: bytes) -> float:
            self.started.set()
            self.release.wait(10)
            return real(pcm)

        turn.predict = gated  # type: ignore[method-assign]


# --- features ---------------------------------------------------------------------------


def test_features_are_80_mel_bins_by_800_frames_of_float32() -> None:
    f = features(_chirp(3.0))
    assert f.shape == (80, 800)
    assert f.dtype == np.float32
    assert np.isfinite(f).all()


def test_short_audio_is_zero_padded_at_the_front() -> None:
    pcm = _chirp(2.0)
    f = features(pcm)
    # Explicit leading silence is exactly what the padding adds.
    assert np.array_equal(f, features(silence_pcm16(3000) + pcm))
    # The padded front is one constant column repeated; the audio is at the end.
    assert np.allclose(f[:, :550], f[:, :1], atol=1e-6)
    assert not np.allclose(f[:, -150:], f[:, :1], atol=1e-2)


def test_only_the_last_8_seconds_count() -> None:
    last_8s = _chirp(8.0)
    assert np.array_equal(features(_chirp(3.0, amplitude=20000) + last_8s), features(last_8s))


def test_the_waveform_is_normalised_so_gain_does_not_change_the_features() -> None:
    quiet = np.frombuffer(_chirp(4.0, amplitude=2000), "<i2")
    loud = (quiet.astype(np.int32) * 8).astype("<i2")  # exact: no rounding
    np.testing.assert_allclose(features(quiet.tobytes()), features(loud.tobytes()), atol=1e-3)


@pytest.mark.parametrize("pcm", [b"", b"\x01", b"\x00\x10", silence_pcm16(10), silence_pcm16(9000)])
def test_silence_empty_and_odd_sized_input_give_finite_features(pcm: bytes) -> None:
    f = features(pcm)
    assert f.shape == (80, 800)
    assert np.isfinite(f).all()


# --- the model file -----------------------------------------------------------------------


@needs_model
def test_the_model_file_is_found_without_importing_pipecat() -> None:
    code = (
        "import sys\n"
        "from orchestrator import smart_turn\n"
        "path = smart_turn.model_path()\n"
        "assert path.name == 'smart-turn-v3.2-cpu.onnx' and path.stat().st_size == 8679182\n"
        "assert 'pipecat' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


@needs_model
async def test_a_model_file_with_one_byte_changed_is_refused(tmp_path: Path) -> None:
    tampered = tmp_path / "smart-turn-v3.2-cpu.onnx"
    shutil.copyfile(smart_turn.model_path(), tampered)
    with tampered.open("r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    turn = SmartTurn(path=tampered)
    with pytest.raises(ModelChecksumError, match=smart_turn.SHA256):
        turn.load()
    with pytest.raises(ModelChecksumError):  # through the async API too, off the loop
        await turn.score(_chirp(1.0))
    assert turn.stats().failures == 1


# --- scoring ------------------------------------------------------------------------------


@needs_model
@needs_speech
async def test_real_speech_scores_a_probability_at_16k_and_after_a_phone_line() -> None:
    pcm = speech_pcm16(SENTENCE)
    direct = await smart_turn.score(pcm)
    assert isinstance(direct, float) and 0.0 <= direct <= 1.0

    phone = await smart_turn.score(mulaw_roundtrip(pcm))
    assert isinstance(phone, float) and 0.0 <= phone <= 1.0


@needs_model
@pytest.mark.parametrize("pcm", [b"", b"\x00", silence_pcm16(20), silence_pcm16(8000)])
async def test_silence_and_very_short_input_score_without_error(pcm: bytes) -> None:
    probability = await smart_turn.score(pcm)
    assert probability is not None and 0.0 <= probability <= 1.0


@needs_model
async def test_warmup_loads_and_runs_the_model_once() -> None:
    turn = SmartTurn()
    await turn.warmup()
    stats = turn.stats()
    assert stats.inferences == 1 and stats.failures == 0
    assert stats.total_s > 0 and stats.cpu_s > 0


@needs_model
async def test_a_full_queue_answers_none_at_once_and_counts_it() -> None:
    turn = SmartTurn(max_waiting=1)
    gate = _Gate(turn)
    running = asyncio.create_task(turn.score(_chirp(1.0)))
    assert await asyncio.to_thread(gate.started.wait, 10)
    waiting = asyncio.create_task(turn.score(_chirp(1.0)))
    await asyncio.sleep(0)

    # One job running, one waiting: the next is refused without touching the thread.
    assert await turn.score(_chirp(1.0)) is None
    assert turn.stats().skipped_busy == 1

    gate.release.set()
    results = await asyncio.gather(running, waiting)
    assert all(isinstance(r, float) for r in results)
    assert await turn.score(_chirp(1.0)) is not None  # room again
    assert turn.stats().inferences == 3


@needs_model
async def test_cancelling_a_score_returns_while_the_model_thread_is_still_busy() -> None:
    turn = SmartTurn()
    gate = _Gate(turn)
    running = asyncio.create_task(turn.score(_chirp(1.0)))
    assert await asyncio.to_thread(gate.started.wait, 10)
    queued = asyncio.create_task(turn.score(_chirp(1.0)))
    await asyncio.sleep(0)

    # Both cancellations complete although the thread is held inside the first job.
    running.cancel()
    queued.cancel()
    done = await asyncio.gather(running, queued, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in done)
    assert not gate.release.is_set()

    gate.release.set()
    # The running job finishes unseen; the queued one never runs.
    assert await turn.score(_chirp(1.0)) is not None
    stats = turn.stats()
    assert stats.dropped == 1
    assert stats.inferences == 2


@needs_model
async def test_an_odd_trailing_byte_is_ignored_not_shifted_into_the_samples() -> None:
    turn = SmartTurn()
    long_turn = _chirp(9.0)
    assert await turn.score(long_turn + b"\x7f") == await turn.score(long_turn)
