"""Admission control: this process never takes a call it cannot serve well.

Two measures decide, both of this process only:

- **Calls it holds.** A call takes a slot when its media starts (the media socket's
  ``start``, or the simulator's) and gives it back when its session ends — normally, on
  error, on hang-up, or when the socket goes before the session even started
  (``live/runtime.py`` and ``live/socket.py`` both release it; releasing twice is harmless).
  At ``MAX_CALLS_PER_PROCESS`` slots, new calls are refused.
- **Event-loop lag.** While calls are live, the loop's one sampler (``orchestrator/loop_lag.py``,
  shared with the calls' audio health) sleeps ``SAMPLE_INTERVAL_S`` and reports by how much
  the sleep overshot (the loop was busy for that long: every 20 ms
  audio frame of every call waited as much). When the p99 of the last ``WINDOW_S`` of
  samples reaches ``ADMISSION_MAX_LOOP_LAG_MS``, new calls are refused until it falls.

Running calls are never touched: a refusal only ever applies to a call that has not started.

Where calls are refused: the carriers' webhooks (Twilio ``<Reject reason="busy"/>``, Telnyx
``actions/reject`` with ``USER_BUSY``), outbound dials (503), the media sockets' ``start``
and the simulator's (close 4503); ``/health/ready/`` answers 503 while full. Webhooks only
*look* (:meth:`AdmissionController.refusal`) — they run in Django's sync threads, and the
call they accept takes its slot only when its stream starts, possibly in another process —
so the media socket's ``start`` is the gate that counts (:meth:`AdmissionController.admit`,
which checks and takes the slot with no await in between).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from django.conf import settings
from prometheus_client import Counter, Gauge

from orchestrator import loop_lag

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = loop_lag.LoopLagMonitor.INTERVAL_S  # how often the loop is measured
WINDOW_S = 5.0  # the lag figure is the p99 of the samples of the last WINDOW_S

CAPACITY = "capacity"  # refusal reasons (the label of voiceapp_calls_refused_total)
LOOP_LAG = "loop_lag"


@dataclass(slots=True, kw_only=True, frozen=True)
class Refusal:
    reason: str  # CAPACITY or LOOP_LAG
    detail: str  # for the logs, the call record and the readiness answer

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class LoopLagMonitor:
    """Samples the event loop's lag while it runs; keeps the last ``window_s`` of samples.

    :meth:`record` is how samples arrive: from the loop's one sampler
    (``orchestrator.loop_lag``, which also gives each call its audio-health figure), not a
    sampler of its own. The p99 is read from any thread (webhooks, readiness) under a lock.
    """

    def __init__(self, *, interval_s: float = SAMPLE_INTERVAL_S, window_s: float = WINDOW_S):
        self.interval_s = interval_s
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()  # (monotonic time, lag ms)
        self._lock = threading.Lock()
        self._shared: loop_lag.LoopLagMonitor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._shared is not None

    def record(self, lag_ms: float, *, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        with self._lock:
            self._samples.append((now, lag_ms))
            self._forget_before(now - self.window_s)

    def p99_ms(self, *, now: float | None = None) -> float | None:
        """The p99 lag of the last ``window_s`` (None: no samples, e.g. no call was live)."""
        return self.percentile_ms(99, now=now)

    def percentile_ms(self, q: float, *, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._forget_before(now - self.window_s)
            lags = sorted(lag for _, lag in self._samples)
        if not lags:
            return None
        return lags[max(0, math.ceil(q / 100 * len(lags)) - 1)]

    def clear(self) -> None:
        """Forget every sample (a test starting from a calm loop)."""
        with self._lock:
            self._samples.clear()

    def _forget_before(self, oldest: float) -> None:
        while self._samples and self._samples[0][0] < oldest:
            self._samples.popleft()

    def start(self) -> None:
        """Take samples from the running loop's sampler (no-op while already taking them)."""
        loop = asyncio.get_running_loop()
        if self._shared is not None and self._loop is loop:
            return
        # A sampler of a loop that is gone (another test's, a restarted server's) died with
        # its loop: just stop listening to it.
        if self._shared is not None and self.record in self._shared.listeners:
            self._shared.listeners.remove(self.record)
        self._shared, self._loop = loop_lag.monitor(), loop
        self._shared.listeners.append(self.record)
        self._shared.acquire()

    async def stop(self) -> None:
        shared, loop = self._shared, self._loop
        self._shared = self._loop = None
        if shared is None:
            return
        if self.record in shared.listeners:
            shared.listeners.remove(self.record)
        if loop is asyncio.get_running_loop():
            await shared.release()


class AdmissionController:
    """The slots of this process and the loop-lag monitor that runs while any is taken."""

    def __init__(self, *, monitor: LoopLagMonitor | None = None) -> None:
        self.monitor = monitor or LoopLagMonitor()
        self._slots: set[str] = set()
        self._lock = threading.Lock()

    @property
    def active(self) -> int:
        return len(self._slots)

    @staticmethod
    def capacity() -> int:
        """``MAX_CALLS_PER_PROCESS`` (0: no limit)."""
        return max(0, int(settings.MAX_CALLS_PER_PROCESS))

    def refusal(self) -> Refusal | None:
        """Why a new call would be refused now (None: it would be taken). Any thread."""
        limit = self.capacity()
        if limit and self.active >= limit:
            return Refusal(
                reason=CAPACITY,
                detail=f"{self.active} calls in this process (MAX_CALLS_PER_PROCESS={limit})",
            )
        max_lag = float(settings.ADMISSION_MAX_LOOP_LAG_MS)
        # p90, not p99: a sustained lag (one sample in ten), not a single hiccup (a garbage
        # collection, a model loading), refuses calls for the next few seconds.
        lag = self.monitor.percentile_ms(90)
        if max_lag > 0 and lag is not None and lag >= max_lag:
            return Refusal(
                reason=LOOP_LAG,
                detail=(
                    f"event-loop lag p90 {lag:.0f} ms over the last {self.monitor.window_s:g} s "
                    f"(ADMISSION_MAX_LOOP_LAG_MS={max_lag:g})"
                ),
            )
        return None

    def admit(self, call_id: str) -> Refusal | None:
        """On the event loop: take a slot for ``call_id``, or say why not.

        Check and take happen with no await in between, so two streams starting together
        cannot both take the last slot. Starts the lag monitor with the first call."""
        with self._lock:
            if call_id not in self._slots:
                refused = self.refusal()
                if refused is not None:
                    return refused
                self._slots.add(call_id)
        self.monitor.start()
        return None

    async def release(self, call_id: str) -> None:
        """Give ``call_id``'s slot back (idempotent); the monitor stops with the last call."""
        with self._lock:
            self._slots.discard(call_id)
            idle = not self._slots
        if idle:
            await self.monitor.stop()


def record_refusal(*, channel: str, refused: Refusal, call_id: object = "") -> None:
    """Count and log a refused call (its record is ended ``busy`` by the caller of this)."""
    CALLS_REFUSED.labels(channel=channel, reason=refused.reason).inc()
    logger.warning("%s call %s refused, process busy: %s", channel, call_id or "-", refused)


controller = AdmissionController()

# Prometheus (``/metrics``, next to calls/metrics.py's series; kept here because they are
# read from the controller at scrape time, so nobody has to keep them up to date).
CALLS_REFUSED = Counter(
    "voiceapp_calls_refused_total",
    "New calls refused because this process was full (reason: capacity or loop_lag)",
    ["channel", "reason"],
)
CALL_CAPACITY = Gauge(
    "voiceapp_call_capacity", "MAX_CALLS_PER_PROCESS of this process (0: no limit)"
)
CALL_CAPACITY.set_function(AdmissionController.capacity)
ADMITTED_CALLS = Gauge(
    "voiceapp_admitted_calls", "Calls holding an admission slot in this process"
)
ADMITTED_CALLS.set_function(lambda: controller.active)
LOOP_LAG_P99 = Gauge(
    "voiceapp_loop_lag_p99_seconds",
    "Event-loop lag p99 over the last 5 s (0 while no call is live)",
)
LOOP_LAG_P99.set_function(lambda: (controller.monitor.p99_ms() or 0.0) / 1000.0)
