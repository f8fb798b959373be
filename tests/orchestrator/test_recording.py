"""Call recording (orchestrator/recording.py): the Opus/Ogg writer and the two-channel
timeline, with a fake clock for placement (no timed assertions)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from orchestrator.recording import (
    CallRecording,
    OggOpusWriter,
    RecordingConfig,
    decoded_blocks,
)
from tests.orchestrator.conftest import RecordingTransport

pytest.importorskip("av")

RATE = 16000


def tone(seconds: float, *, hz: float = 440.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


def decode(path: Path) -> tuple[np.ndarray, int]:
    blocks = list(decoded_blocks(str(path)))
    rate = blocks[0][1]
    return np.hstack([b for b, _ in blocks]), rate


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def test_a_recording_cut_off_mid_call_is_readable_up_to_its_last_flushed_page(tmp_path):
    """The process dies without closing the file (no trailer, no final page)."""
    path = tmp_path / "cut.ogg"
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from pathlib import Path
        from orchestrator.recording import OggOpusWriter
        writer = OggOpusWriter(Path({str(path)!r}), page_s=1.0)
        t = np.arange(16000) / 16000
        second = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        for _ in range(6):
            writer.write(np.stack([second, np.zeros_like(second)], axis=1))
        os._exit(0)  # a crash: nothing closed, nothing flushed by Python
        """
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], check=True, cwd=root, timeout=60)

    audio, rate = decode(path)
    assert audio.shape[0] == 2
    duration = audio.shape[1] / rate
    # Pages of at most a second reach the file as they complete: at most the last
    # page (and the encoder's few ms of look-ahead) is lost.
    assert 4.5 <= duration <= 6.0
    assert rms(audio[0, rate : 4 * rate]) > 0.1 and rms(audio[1, rate : 4 * rate]) < 0.01


def test_a_closed_recording_is_complete_and_small(tmp_path):
    path = tmp_path / "whole.ogg"
    writer = OggOpusWriter(path, bitrate=24_000)
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal((RATE * 10, 2)) * 3000).astype(np.int16)  # worst case
    for second in range(10):
        writer.write(noise[second * RATE : (second + 1) * RATE])
    writer.close()
    audio, rate = decode(path)
    assert audio.shape[1] / rate == pytest.approx(10.0, abs=0.03)
    # 24 kbit/s: a 10-minute call is ~1.8 MB
    assert path.stat().st_size * 8 / 10 <= 26_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


async def test_caller_goes_left_and_played_agent_audio_right_on_the_call_clock(tmp_path):
    clock = FakeClock()
    config = RecordingConfig(
        path=tmp_path / "call.ogg", call_started_at=1000.0, flush_s=0.01, settle_s=0.0
    )
    # The call record started 1 s before the session: the file's first second is silence.
    recording = CallRecording(config, clock=clock, wall=lambda: 1001.0)
    wire = RecordingTransport(sample_rate=8000)  # a phone call: the agent at 8 kHz
    transport = recording.tap(wire)
    recording.start()

    # Caller speaks from 0.5 s to 1.5 s of the session (1.5-2.5 s of the call).
    clock.now += 0.5
    caller = tone(1.0, hz=300)
    for i in range(0, len(caller), 320):
        clock.now += 0.02
        recording.caller(caller[i : i + 320].tobytes())

    # The agent: 1 s sent at 2.0 s of the session (eight frames at once: the lead, then
    # paced), played 2.0-3.0 s, i.e. 3.0-4.0 s of the call.
    clock.now = 52.0
    agent = tone(1.0, hz=500, rate=8000)
    for n, i in enumerate(range(0, len(agent), 160)):
        if n >= 8:
            clock.now += 0.02
        await transport.send_audio(agent[i : i + 160].tobytes())

    # A reply interrupted: 1 s sent ahead at 4.0 s, cleared at 4.3 s. Only 0.3 s played.
    clock.now = 54.0
    for i in range(0, len(agent), 160):
        await transport.send_audio(agent[i : i + 160].tobytes())
    clock.now = 54.3
    await transport.clear_audio()
    assert wire.clears == 1 and len(wire.frames) == 100

    clock.now = 56.0
    result = await recording.close()
    assert result is not None and result.duration_s == pytest.approx(7.0, abs=0.01)

    audio, rate = decode(config.path)
    assert audio.shape[1] / rate == pytest.approx(7.0, abs=0.05)

    def level(channel: int, start: float, end: float) -> float:
        return rms(audio[channel, round(start * rate) : round(end * rate)])

    loud, quiet = 0.1, 0.01
    assert level(0, 0.0, 1.4) < quiet and level(1, 0.0, 2.9) < quiet  # before anyone spoke
    assert level(0, 1.6, 2.4) > loud and level(1, 1.6, 2.4) < quiet  # the caller
    assert level(1, 3.1, 3.9) > loud and level(0, 3.1, 3.9) < quiet  # the agent
    assert level(1, 5.05, 5.25) > loud  # the part of the interrupted reply that played
    assert level(1, 5.4, 7.0) < quiet  # what the clear took back was never heard


async def test_a_recording_that_cannot_be_written_never_fails_the_call(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    recording = CallRecording(RecordingConfig(path=blocker / "call.ogg", flush_s=0.01))
    transport = recording.tap(RecordingTransport())
    recording.start()
    recording.caller(tone(0.1).tobytes())
    await transport.send_audio(b"\x00" * 640)
    assert await recording.close() is None
    assert recording.failed


async def test_a_stuck_disk_never_holds_up_the_end_of_the_call(tmp_path):
    """The session waits a bounded time; the owner's later close gets the whole file."""
    disk = threading.Event()

    class StuckDisk(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            def stuck():
                disk.wait(30)
                return fn(*args, **kwargs)

            return super().submit(stuck)

    with StuckDisk(1) as pool:
        recording = CallRecording(
            RecordingConfig(path=tmp_path / "call.ogg", flush_s=0.01), executor=pool
        )
        recording.start()
        recording.caller(tone(0.5).tobytes())
        assert await recording.close(wait_s=0.05) is None  # the session goes on ending
        disk.set()
        result = await recording.close()
    assert result is not None and result.size_bytes > 0


@pytest.mark.parametrize("stuck_call", ["write", "open"])
async def test_a_recording_cancelled_while_finishing_still_closes_its_file(
    tmp_path, monkeypatch, stuck_call
):
    """The session gives up waiting (close with wait_s), then its task is cancelled while
    the encoder still awaits the pool: the file is closed all the same."""
    closed: list[OggOpusWriter] = []
    real_close = OggOpusWriter.close

    def close(self: OggOpusWriter) -> None:
        real_close(self)
        closed.append(self)

    monkeypatch.setattr(OggOpusWriter, "close", close)
    disk = threading.Event()

    class StuckDisk(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            stuck = getattr(fn, "__name__", "") == stuck_call or (
                stuck_call == "open" and getattr(fn, "__name__", "") == "<lambda>"
            )

            def run():
                if stuck:
                    disk.wait(30)
                return fn(*args, **kwargs)

            return super().submit(run)

    with StuckDisk(1) as pool:
        recording = CallRecording(
            RecordingConfig(path=tmp_path / "call.ogg", flush_s=0.01), executor=pool
        )
        recording.start()
        recording.caller(tone(0.5).tobytes())
        assert await recording.close(wait_s=0.05) is None  # closing has started
        task = recording._task
        assert task is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        disk.set()
    # The pool has shut down: everything submitted to it has run.
    assert len(closed) == 1


async def test_an_outbound_calls_ringing_lead_is_never_held_in_memory(tmp_path):
    """60 s of ringing before the session: the file starts with 60 s of silence, but the
    timeline only ever holds the unsettled seconds (a buffer of the whole lead would be
    3.8 MB, copied on the event loop at every flush)."""
    clock = FakeClock()
    config = RecordingConfig(
        path=tmp_path / "call.ogg", call_started_at=1000.0, flush_s=0.01, settle_s=0.0
    )
    recording = CallRecording(config, clock=clock, wall=lambda: 1060.0)
    recording.start()
    largest = 0
    caller = tone(2.0, hz=300)
    for i in range(0, len(caller), 320):
        clock.now += 0.02
        recording.caller(caller[i : i + 320].tobytes())
        if i % 3200 == 0:
            await asyncio.sleep(0.02)  # let the encoder take what settled
        largest = max(largest, recording._timeline.nbytes)
    assert largest <= 16000 * 4 * 4  # at most a few seconds of two int16 channels

    result = await recording.close()
    assert result is not None and result.duration_s == pytest.approx(62.0, abs=0.05)
    audio, rate = decode(config.path)
    assert audio.shape[1] / rate == pytest.approx(62.0, abs=0.05)
    assert rms(audio[0, : round(59.9 * rate)]) < 0.01  # the ringing: silence
    assert rms(audio[0, round(60.2 * rate) : round(61.8 * rate)]) > 0.1  # then the caller
