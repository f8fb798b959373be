"""Real-time pacing, checked with a fake clock (no timed assertions)."""

from __future__ import annotations

import pytest

from orchestrator.playout import PacedPlayout, TransportFailed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


async def test_it_sends_the_lead_at_once_then_one_frame_per_20ms() -> None:
    clock = FakeClock()
    sent: list[float] = []

    async def send(frame: bytes) -> None:
        sent.append(clock.now)

    playout = PacedPlayout(send, lead_ms=100, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await playout.send(b"\x00" * 640)
    # 5 frames (100 ms) go out immediately, then the schedule holds the lead at 100 ms
    assert sent[:5] == [100.0] * 5
    assert [round(b - a, 6) for a, b in zip(sent[4:], sent[5:], strict=False)] == [0.02] * 5
    assert playout.queued_s() == pytest.approx(0.1)


async def test_late_wakeups_do_not_accumulate_drift() -> None:
    clock = FakeClock()

    async def late_sleep(seconds: float) -> None:
        clock.now += seconds + 0.005  # the loop wakes 5 ms late every time

    async def send(frame: bytes) -> None:
        pass

    playout = PacedPlayout(send, lead_ms=60, clock=clock, sleep=late_sleep)
    for _ in range(200):
        await playout.send(b"\x00" * 640)
    # 200 frames = 4 s of audio: wall time stays ~4 s - lead, not 4 s + 200 * 5 ms
    assert clock.now - 100.0 < 4.0


async def test_after_an_underrun_the_schedule_restarts_from_now() -> None:
    clock = FakeClock()

    async def send(frame: bytes) -> None:
        pass

    playout = PacedPlayout(send, lead_ms=40, clock=clock, sleep=clock.sleep)
    await playout.send(b"")
    clock.now += 5.0  # nothing to play for 5 s
    await playout.send(b"")
    assert clock.sleeps == []
    assert playout.queued_s() == pytest.approx(0.02)
    assert playout.discard() == pytest.approx(0.02)
    assert playout.queued_s() == 0.0


async def test_transport_errors_are_reported_as_transport_failures() -> None:
    async def broken(frame: bytes) -> None:
        raise ConnectionError("socket closed")

    playout = PacedPlayout(broken, lead_ms=60)
    with pytest.raises(TransportFailed):
        await playout.send(b"\x00" * 640)
