"""The caller audio budget: a burst, then at most ``max_speed`` times real time."""

from __future__ import annotations

from live.media_rate import AudioBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_real_time_audio_never_runs_out_of_budget():
    clock = Clock()
    budget = AudioBudget(burst_s=1.0, max_speed=1.5, clock=clock)
    for _ in range(3000):  # one minute of 20 ms frames, one every 20 ms
        clock.now += 0.02
        assert budget.take(0.02)


def test_a_burst_is_allowed_once_then_the_sustained_speed_is_enforced():
    clock = Clock()
    budget = AudioBudget(burst_s=3.0, max_speed=2.0, clock=clock)
    assert budget.take(3.0)  # a carrier flushing 3 s after a stall
    assert not budget.take(0.02)  # nothing left, no time passed
    clock.now += 1.0
    assert budget.take(1.9)  # one second of wall time earns two seconds of audio


def test_ten_times_real_time_is_refused_within_a_second_of_a_five_second_burst():
    clock = Clock()
    budget = AudioBudget(burst_s=5.0, max_speed=2.0, clock=clock)
    while budget.take(0.2):  # 200 ms of audio every 20 ms
        clock.now += 0.02
    assert 0.5 < (clock.now - 1000.0) < 1.0
    assert 9.0 < budget.speed() < 11.0


def test_the_bucket_never_holds_more_than_one_burst():
    clock = Clock()
    budget = AudioBudget(burst_s=2.0, max_speed=2.0, clock=clock)
    clock.now += 3600  # an hour of silence earns no more than the burst
    assert budget.take(2.0)
    assert not budget.take(0.1)
