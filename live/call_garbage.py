"""An ended call's memory is freed when it ends, not at the collector's next full pass.

A call's objects form reference cycles: callbacks that point back at the session, tasks
whose frames hold it, the tracebacks of cancelled tasks that hold those frames. Reference
counting never frees them; they wait for a collection of the oldest generation, which
CPython runs only once enough objects have survived the younger ones. In the soak
(``bench.soak --trace-memory``, 20 calls, ``bench/memtrace.py``) the C heap in use grew by
~120 kB per ended call, and the objects the collector tracks from 15k to 32k, until such a
pass came about 3.5 minutes in; the process's RSS kept that high-water mark, and each later
pass came at a slightly different peak, so RSS crept for minutes before it levelled off.

So once calls have ended, this runs one full collection: ``SETTLE_S`` after the socket
of the first let its call go (live/socket.py; a last write or an upload may still hold it
a moment, so a call that ended less than ``SETTLE_S`` before a pass gets one more), and
no more often than every ``GC_AFTER_CALLS_SECONDS`` (calls that end in between are
collected by the same pass). The startup heap is frozen out of the collector's walks
(calls/preload.py), so a pass walks only what the live calls and requests hold; where it
is not frozen a pass would walk all of Django, so there is none. Its pause is exported as
``voiceapp_gc_after_calls_seconds`` and logged when it exceeds ``SLOW_PASS_S``.
``GC_AFTER_CALLS_SECONDS=0`` leaves collection to CPython alone.

Measured (bench/README.md "Soak, fifth run"): 20 calls for 30 minutes, RSS +1.2 % from
minute 2 instead of +7.5 %; with 50 live calls a pass took 12 ms on average (3 of 30 over
20 ms, at most 26 ms, inside the 60-100 ms playout lead), and audio was steadier than with
CPython's own rarer, larger passes (0 late frames in 291 calls against 2).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from django.conf import settings

from calls import metrics as prom

logger = logging.getLogger(__name__)


class CallGarbage:
    SETTLE_S = 2.0
    SLOW_PASS_S = 0.02  # one audio frame: worth a line in the log

    def __init__(self) -> None:
        self._pending: asyncio.TimerHandle | None = None
        self._pending_loop: asyncio.AbstractEventLoop | None = None
        self._last_at = float("-inf")  # the last pass
        self._ended_at = float("-inf")  # the last call end
        self._unfrozen_said = False
        self.passes = 0

    def call_ended(self) -> None:
        """A call's socket has let it go (in the event loop's thread)."""
        loop = asyncio.get_running_loop()
        self._ended_at = loop.time()
        if self._pending is not None and self._pending_loop is loop:
            return  # (a pass pending in a loop that has gone never runs: schedule anew)
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        interval = float(settings.GC_AFTER_CALLS_SECONDS)
        if interval <= 0 or not self._heap_frozen():
            return
        at = max(self._ended_at + self.SETTLE_S, self._last_at + interval)
        self._pending = loop.call_at(at, self._collect, loop)
        self._pending_loop = loop

    def _collect(self, loop: asyncio.AbstractEventLoop) -> None:
        self._pending = self._pending_loop = None
        started = time.perf_counter()
        freed = gc.collect()
        pause = time.perf_counter() - started
        self._last_at = loop.time()
        self.passes += 1
        prom.GC_AFTER_CALLS.observe(pause)
        log = logger.info if pause >= self.SLOW_PASS_S else logger.debug
        log("gc after calls: %d objects freed in %.1f ms", freed, pause * 1000)
        if self._ended_at > self._last_at - self.SETTLE_S:
            self._schedule(loop)  # a call that ended just now may not be unreachable yet

    def _heap_frozen(self) -> bool:
        if gc.get_freeze_count() == 0:
            # The startup heap was not frozen (calls/preload.py: e.g. daphne with
            # PRELOAD_ENGINES=false): a pass would walk all of Django, 40-75 ms per pass.
            if not self._unfrozen_said:
                self._unfrozen_said = True
                logger.info("gc after calls: off, the startup heap is not frozen")
            return False
        return True

    def cancel(self) -> None:
        """Drop a pass not yet run (the process is shutting down, or a test ends)."""
        if self._pending is not None:
            self._pending.cancel()
        self._pending = self._pending_loop = None


collector = CallGarbage()
