"""Event-loop lag of this process, sampled every 100 ms, for the calls that run on it.

One sampler task per event loop, however many calls: it sleeps ``INTERVAL_S`` and records
how much later than asked it woke up (every frame of every call on the loop waited that
long too). A call takes a :class:`LagWindow` when it starts and closes it when it ends:
the window reads the loop's cumulative histogram at both ends, so its p99 covers exactly
the time the call ran. The first window on a loop starts the sampler, the last one to
close cancels and awaits it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from orchestrator.audio_health import Histogram, percentile_of


class LoopLagMonitor:
    INTERVAL_S = 0.1

    def __init__(self) -> None:
        self.histogram = Histogram()
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        # Others fed each sample (admission control's recent-lag window): one sampler per
        # loop, whoever needs the figure.
        self.listeners: list[Callable[[float], None]] = []

    def acquire(self) -> None:
        self._users += 1
        if self._task is None:
            self._task = asyncio.create_task(self._sample(), name="loop-lag-monitor")

    async def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        interval, histogram = self.INTERVAL_S, self.histogram
        while True:
            asked = loop.time() + interval
            await asyncio.sleep(interval)
            lag_ms = max(0.0, (loop.time() - asked) * 1000.0)
            histogram.add(lag_ms)
            for listener in self.listeners:
                listener(lag_ms)


_monitors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLagMonitor] = (
    weakref.WeakKeyDictionary()
)


def monitor() -> LoopLagMonitor:
    """The running loop's monitor (created on first use)."""
    loop = asyncio.get_running_loop()
    if (found := _monitors.get(loop)) is None:
        found = _monitors[loop] = LoopLagMonitor()
    return found


class LagWindow:
    """Loop lag over one call: ``open`` when it starts, ``close`` (awaited) when it ends."""

    def __init__(self) -> None:
        self._monitor: LoopLagMonitor | None = None
        self._start: list[int] = []

    def open(self) -> None:
        self._monitor = monitor()
        self._monitor.acquire()
        self._start = list(self._monitor.histogram.counts)

    async def close(self, q: float = 99) -> float | None:
        """Release the sampler; the ``q`` percentile of the lag since ``open`` (ms), None
        if no sample was taken (a call shorter than one interval, or never opened)."""
        if self._monitor is None:
            return None
        mon, self._monitor = self._monitor, None
        counts = [now - then for now, then in zip(mon.histogram.counts, self._start, strict=True)]
        await mon.release()
        return percentile_of(counts, q)
