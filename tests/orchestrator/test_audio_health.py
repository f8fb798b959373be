"""Audio health per call (orchestrator/audio_health.py, playout.py, loop_lag.py): stalls
are injected (a transport send that blocks, a caller that stops sending, a blocked event
loop) and the figures must show them; assertions are lower bounds set by the injected
stall, or exact counts on a fake clock, never one machine's timing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from orchestrator.audio_health import Histogram, InboundTiming, issues, percentile_of
from orchestrator.playout import PacedPlayout
from tests.orchestrator.conftest import RecordingTransport

FRAME = b"\x00" * 640  # 20 ms at 16 kHz
GREETING = "Hello, thank you for calling the restaurant. How can I help you today?"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class StallingTransport(RecordingTransport):
    """The network edge: one ``send_audio`` blocks for ``stall_s`` (a congested socket)."""

    def __init__(self, *, stall_at: int, stall_s: float) -> None:
        super().__init__()
        self.stall_at, self.stall_s = stall_at, stall_s

    async def send_audio(self, frame: bytes) -> None:
        if len(self.frames) == self.stall_at:
            await asyncio.sleep(self.stall_s)
        await super().send_audio(frame)


def health_of(h: Any) -> dict[str, Any]:
    [ended] = h.recorder.ended
    return ended["metrics"]["audio_health"]


# --- pieces, on a fake clock -----------------------------------------------------------------


def test_histogram_percentiles_read_bucket_edges_capped_by_the_maximum() -> None:
    hist = Histogram()
    for ms in [0.2] * 90 + [3.4] * 5 + [7.0] * 4 + [480.0]:
        hist.add(ms)
    assert hist.percentile(50) == 1.0
    assert hist.percentile(95) == 4.0
    assert hist.percentile(99) == 8.0  # 7.0 ms sits in the 7-8 ms bucket
    assert hist.percentile(100) == 480.0  # the exact maximum, not the 500 ms bucket edge
    assert len(hist.counts) == len(Histogram().counts)  # fixed size, whatever was added
    assert percentile_of([0] * len(hist.counts), 99) is None


def test_a_huge_value_lands_in_the_overflow_bucket_as_a_finite_number() -> None:
    counts = Histogram()
    counts.add(60_000.0)
    assert percentile_of(counts.counts, 99) == 2050.0  # "2 s or more", JSON-safe


def test_inbound_timing_counts_jitter_and_gaps_from_arrival_times() -> None:
    timing = InboundTiming()
    t = 10.0
    for _ in range(50):  # steady 20 ms frames, 1 ms early/late alternately
        timing.arrived(t, 640)
        t += 0.019 if int(t * 1000) % 2 else 0.021
    timing.arrived(t + 0.5, 640)  # the caller's audio stopped for 500 ms
    assert timing.gaps == 1
    assert timing.missing_s == pytest.approx(0.5, abs=0.03)
    assert timing.jitter.percentile(95) is not None and timing.jitter.percentile(95) <= 2.0
    assert timing.jitter.max_ms >= 480.0


async def test_playout_counts_a_stall_mid_sentence_as_a_late_frame_and_a_gap() -> None:
    clock = FakeClock()

    async def send(frame: bytes) -> None:
        pass

    playout = PacedPlayout(send, lead_ms=60, clock=clock, sleep=clock.sleep)
    playout.new_stretch()
    for _ in range(20):
        await playout.send(FRAME)
    assert (playout.late_frames, playout.max_gap_s) == (0, 0.0)
    clock.now += 0.3  # TTS stalls 300 ms in the middle of the sentence
    for _ in range(20):
        await playout.send(FRAME)
    assert playout.late_frames == 1  # the far end ran dry once, for ~240 ms
    # 300 ms between two frames: 280 ms beyond the 20 ms the next one was due after.
    assert playout.max_gap_s == pytest.approx(0.28)


async def test_playout_does_not_count_pauses_between_sentences_or_for_the_caller() -> None:
    clock = FakeClock()

    async def send(frame: bytes) -> None:
        pass

    playout = PacedPlayout(send, lead_ms=60, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await playout.send(FRAME)
    clock.now += 0.8  # the next sentence was not synthesized yet: a pause, not stutter
    playout.new_stretch()
    for _ in range(10):
        await playout.send(FRAME)
    playout.pause()  # the caller speaks over the agent
    clock.now += 1.0
    playout.resume()
    for _ in range(10):
        await playout.send(FRAME)
    await playout.drain()  # the utterance played out; the next one starts fresh
    clock.now += 2.0
    await playout.send(FRAME)
    assert (playout.late_frames, playout.max_gap_s) == (0, 0.0)


def test_issues_adds_late_frames_and_inbound_gaps() -> None:
    assert issues({"late_frames": 2, "inbound_gaps": 1, "max_agent_gap_ms": 300.0}) == 3
    assert issues({"late_frames": 0, "inbound_gaps": 0}) == 0


# --- whole calls --------------------------------------------------------------------------------


async def test_a_transport_that_blocks_300ms_records_late_frames_and_the_gap(make_harness) -> None:
    h = make_harness(
        transport=StallingTransport(stall_at=8, stall_s=0.3), overrides={"greeting": GREETING}
    )
    h.start()
    await h.until(lambda: len(h.transport.frames) > 20 and h.transport.states()[-1] == "listening")
    await h.finish()
    health = health_of(h)
    assert health["late_frames"] >= 1
    assert health["max_agent_gap_ms"] >= 290.0
    assert set(health) == {
        "late_frames", "max_agent_gap_ms", "inbound_jitter_p95_ms", "inbound_jitter_max_ms",
        "inbound_gaps", "inbound_missing_ms", "loop_lag_p99_ms",
    }  # fmt: skip


async def test_a_clean_call_records_no_late_frames(make_harness) -> None:
    h = make_harness(overrides={"greeting": GREETING})
    h.start()
    await h.until(lambda: len(h.transport.frames) > 20 and h.transport.states()[-1] == "listening")
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2)
    await h.finish()
    health = health_of(h)
    # Nothing was injected: only a stall of this machine longer than the 60 ms lead
    # could make a frame late, far below the injected 300 ms of the test above.
    assert health["late_frames"] == 0
    assert health["max_agent_gap_ms"] < 290.0
    assert health["inbound_gaps"] == 0 and health["inbound_missing_ms"] == 0.0


async def test_a_caller_who_stops_sending_for_500ms_shows_as_a_gap(make_harness) -> None:
    h = make_harness()
    h.start()
    await h.until(lambda: h.transport.states() == ["listening"])
    for n in range(30):
        if n == 15:
            await asyncio.sleep(0.5)  # the caller's stream stops for 500 ms
        h.session.push_audio(FRAME)
        await asyncio.sleep(0.02)
    await h.finish()
    health = health_of(h)
    assert health["inbound_gaps"] >= 1
    assert health["inbound_missing_ms"] >= 450.0
    assert health["inbound_jitter_max_ms"] >= 450.0
    assert health["inbound_jitter_p95_ms"] is not None


async def test_a_blocked_event_loop_shows_in_loop_lag_and_the_sampler_stops(make_harness) -> None:
    h = make_harness()
    h.start()
    await h.until(lambda: h.transport.states() == ["listening"])
    await asyncio.sleep(0.25)  # a few samples first
    time.sleep(0.4)  # noqa: ASYNC251 - the point: something blocks the loop for 400 ms
    await asyncio.sleep(0.25)
    await h.finish()
    assert health_of(h)["loop_lag_p99_ms"] >= 250.0
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert "loop-lag-monitor" not in names  # the last call on the loop stopped it
