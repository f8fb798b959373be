"""The local models' single worker thread: cancelled turns free it, queues have a bound.

A ``_Model`` with a trivial "model" runs jobs exactly as the real ones (same thread, same
queue); the jobs block on events so the order of events is under the test's control.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from orchestrator.engines import EngineError
from orchestrator.engines.local import _Model


@pytest.fixture
def model():
    model = _Model("test model", loader=lambda: "weights")
    yield model
    model.executor.shutdown(wait=False, cancel_futures=True)


def blocking_producer(release: threading.Event, ran: list[str], name: str):
    def produce(weights, emit, stop, *args) -> None:
        ran.append(name)
        emit("first")
        release.wait(10)  # one long native call that cannot look at ``stop``
        emit("late")

    return produce


async def test_closing_a_stream_does_not_wait_for_a_producer_stuck_in_native_code(model):
    release, ran = threading.Event(), []
    stream = model.iterate(blocking_producer(release, ran, "a"))
    assert await anext(stream) == "first"

    started = time.monotonic()
    await stream.aclose()  # barge-in: the old code waited here for the whole generation
    closed_in = time.monotonic() - started
    release.set()

    assert closed_in < _Model.STOP_WAIT_S + 1.0


async def test_a_cancelled_job_that_had_not_started_never_runs(model):
    release, ran = threading.Event(), []
    first = model.iterate(blocking_producer(release, ran, "busy"))
    assert await anext(first) == "first"

    # A turn's STT queued behind the generation, then the turn is cancelled (barge-in).
    queued = asyncio.create_task(model.run(lambda weights: ran.append("stt of a dead turn")))
    await asyncio.sleep(0.1)
    queued.cancel()
    await asyncio.wait([queued])
    release.set()
    await first.aclose()

    # The next turn's job runs right after the generation, not after the dead one.
    assert await model.run(lambda weights: "next turn") == "next turn"
    assert ran == ["busy"]


async def test_a_job_that_waits_too_long_for_the_thread_fails_as_overloaded(model):
    release, ran = threading.Event(), []
    first = model.iterate(blocking_producer(release, ran, "busy"))
    assert await anext(first) == "first"
    try:
        started = time.monotonic()
        with pytest.raises(EngineError) as caught:
            await model.run(lambda weights: ran.append("never"), queue_timeout_s=0.3)
        waited = time.monotonic() - started
    finally:
        release.set()
        await first.aclose()

    assert caught.value.overloaded and caught.value.retryable
    assert 0.25 < waited < 2.0
    await asyncio.to_thread(model.executor.submit(lambda: None).result)
    assert ran == ["busy"]  # the dropped job never ran


async def test_a_job_that_starts_in_time_is_not_limited_by_the_queue_timeout(model):
    def slow(weights) -> str:
        time.sleep(0.5)
        return weights

    assert await model.run(slow, queue_timeout_s=0.2) == "weights"


def test_the_queue_count_covers_jobs_waiting_for_the_thread_only(model):
    release = threading.Event()
    running = model._submit(lambda: release.wait(10))
    waiting = model._submit(lambda: None)
    cancelled = model._submit(lambda: None)
    time.sleep(0.1)
    assert model.queued == 2  # the running job has left the queue

    cancelled.cancel()
    assert model.queued == 1
    release.set()
    running.result(5)
    waiting.result(5)
    assert model.queued == 0


def test_a_blocking_caller_gives_up_after_its_timeout_and_stops_the_job(model):
    stopped = threading.Event()

    def job(weights, stop):
        stop.wait(10)  # a generation that checks ``stop`` between tokens
        stopped.set()

    started = time.monotonic()
    with pytest.raises(EngineError, match="no answer within"):
        model.run_blocking(job, timeout_s=0.3)

    assert time.monotonic() - started < 5
    assert stopped.wait(5)  # the job saw ``stop`` and ended: the thread is free again
