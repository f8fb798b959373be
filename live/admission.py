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

**Several workers on one port** (``voiceapp/serve.py``): a webhook is answered by whichever
worker accepted the HTTP request, and the call's media socket may land on another. So each
worker publishes its state on the host's worker board (:class:`WorkerBoard`, a folder the
supervisor names in ``WEB_WORKER_BOARD``: one small JSON file per worker), and webhooks and
``/health/ready/`` refuse only when **no** worker of the host has room. The media socket's
``start`` still checks the worker it landed on: a stream that lands on a full worker is
refused (4503) even if another has room; the shared socket makes that rare (an idle worker
accepts first), and bench/load.py counts it.

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
import contextlib
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from prometheus_client import Counter, Gauge

from orchestrator import loop_lag

logger = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = loop_lag.LoopLagMonitor.INTERVAL_S  # how often the loop is measured
WINDOW_S = 5.0  # the lag figure is the p99 of the samples of the last WINDOW_S

CAPACITY = "capacity"  # refusal reasons (the label of voiceapp_calls_refused_total)
LOOP_LAG = "loop_lag"
SHUTTING_DOWN = "shutting_down"


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
        # Called after each sample (the controller republishes its verdict on the board).
        self.on_sample: Callable[[], None] | None = None

    @property
    def running(self) -> bool:
        return self._shared is not None

    def record(self, lag_ms: float, *, at: float | None = None) -> None:
        now = time.monotonic() if at is None else at
        with self._lock:
            self._samples.append((now, lag_ms))
            self._forget_before(now - self.window_s)
        if self.on_sample is not None:
            self.on_sample()

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


class WorkerBoard:
    """Where the workers of one host say whether they have room: ``<folder>/<pid>.json``.

    Files, not Redis: the workers sharing a port are on one host by definition, and a
    webhook must not wait on the network to answer. Each worker rewrites only its own file
    (atomically), when its slots change or its lag verdict flips, and at most once a second
    otherwise; entries of processes that are gone are ignored and removed.
    """

    REFRESH_S = 1.0

    def __init__(self, folder: Path, *, pid: int | None = None) -> None:
        self.folder = folder
        self.pid = os.getpid() if pid is None else pid
        self._written: tuple[int, str] | None = None
        self._written_at = 0.0

    @classmethod
    def from_env(cls) -> WorkerBoard | None:
        folder = os.environ.get("WEB_WORKER_BOARD", "")
        return cls(Path(folder)) if folder else None

    def publish(self, *, active: int, capacity: int, refusing: str, force: bool = False) -> None:
        state = (active, refusing)
        now = time.monotonic()
        if not force and state == self._written and now - self._written_at < self.REFRESH_S:
            return
        entry = {"pid": self.pid, "active": active, "capacity": capacity, "refusing": refusing}
        path = self.folder / f"{self.pid}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(entry))
            os.replace(tmp, path)
        except OSError:  # the folder went away (supervisor stopping): nothing to tell
            return
        self._written, self._written_at = state, now

    def others_with_room(self) -> list[dict[str, object]]:
        """The other live workers of this host that would take a call now."""
        found = []
        for path in self.folder.glob("*.json"):
            try:
                entry = json.loads(path.read_text())
                pid = int(entry["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced right now, or not ours
            if pid == self.pid:
                continue
            if not _alive(pid):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if not entry.get("refusing"):
                found.append(entry)
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class AdmissionController:
    """The slots of this process and the loop-lag monitor that runs while any is taken."""

    def __init__(
        self, *, monitor: LoopLagMonitor | None = None, board: WorkerBoard | None = None
    ) -> None:
        self.monitor = monitor or LoopLagMonitor()
        self.board = board
        self._slots: set[str] = set()
        self._lock = threading.Lock()
        if board is not None:
            self.monitor.on_sample = self.publish
        # Set when the server is stopping (live/runtime.py install_signal_drain): live calls
        # are saying goodbye, new ones are refused.
        self.draining = False

    @property
    def active(self) -> int:
        return len(self._slots)

    @staticmethod
    def capacity() -> int:
        """``MAX_CALLS_PER_PROCESS`` (0: no limit)."""
        return max(0, int(settings.MAX_CALLS_PER_PROCESS))

    def refusal(self) -> Refusal | None:
        """Why a new call would be refused now (None: it would be taken). Any thread."""
        if self.draining:
            return Refusal(reason=SHUTTING_DOWN, detail="this process is shutting down")
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

    def host_refusal(self) -> Refusal | None:
        """Why the host would refuse a new call: this worker's refusal, unless another
        worker on the board has room (webhooks and readiness; the stream checks its own
        worker with :meth:`admit`). Without a board (one process), the same as :meth:`refusal`."""
        refused = self.refusal()
        if refused is None or self.board is None or refused.reason == SHUTTING_DOWN:
            return refused
        if self.board.others_with_room():
            return None
        return Refusal(reason=refused.reason, detail=f"{refused.detail}; no other worker has room")

    def publish(self, *, force: bool = False) -> None:
        """Tell the host's other workers whether this one has room (no board: nothing)."""
        if self.board is None:
            return
        refused = self.refusal()
        self.board.publish(
            active=self.active,
            capacity=self.capacity(),
            refusing=refused.reason if refused is not None else "",
            force=force,
        )

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
        self.publish()
        return None

    async def release(self, call_id: str) -> None:
        """Give ``call_id``'s slot back (idempotent); the monitor stops with the last call."""
        with self._lock:
            self._slots.discard(call_id)
            idle = not self._slots
        if idle:
            await self.monitor.stop()
        self.publish()


def record_refusal(*, channel: str, refused: Refusal, call_id: object = "") -> None:
    """Count and log a refused call (its record is ended ``busy`` by the caller of this)."""
    CALLS_REFUSED.labels(channel=channel, reason=refused.reason).inc()
    logger.warning("%s call %s refused, process busy: %s", channel, call_id or "-", refused)


controller = AdmissionController(board=WorkerBoard.from_env())
controller.publish(force=True)  # a new worker has room: say so before its first call

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
