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

# A webhook that answers a call holds a place for its stream this long (the stream usually
# starts within a second or two; a place whose stream never came is given back after it).
RESERVE_S = 10.0
# A call answered on the host that lands on a full worker may exceed its capacity by
# capacity // OVERFLOW_DIVISOR (at least 1): see AdmissionController.admit.
OVERFLOW_DIVISOR = 10
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


@dataclass(slots=True, kw_only=True, frozen=True)
class WorkerState:
    """One worker's entry on the board."""

    pid: int
    active: int
    capacity: int  # 0: no limit
    lagging: bool  # its loop lag refuses calls (or it is shutting down)

    @property
    def room(self) -> float:
        if self.lagging:
            return 0
        return math.inf if not self.capacity else max(0, self.capacity - self.active)


class WorkerBoard:
    """What the workers of one host share to admit calls: ``<folder>/<pid>.json`` per worker
    (calls held, capacity, whether its loop lag refuses) and ``<folder>/reserved/<call_id>``
    per call a webhook answered whose stream has not started on any worker yet.

    Files, not Redis: the workers sharing a port are on one host by definition, and a
    webhook must not wait on the network to answer. Each worker rewrites only its own entry
    (atomically), when its calls change or its lag verdict flips, and at most once a second
    otherwise; entries of processes that are gone are ignored and removed. A reservation is
    removed by the worker whose stream takes the call, or ignored after ``RESERVE_S``.
    """

    REFRESH_S = 1.0

    def __init__(self, folder: Path, *, pid: int | None = None) -> None:
        self.folder = folder
        self.pid = os.getpid() if pid is None else pid
        self._written: tuple[int, bool] | None = None
        self._written_at = 0.0
        with contextlib.suppress(OSError):
            (folder / "reserved").mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_env(cls) -> WorkerBoard | None:
        folder = os.environ.get("WEB_WORKER_BOARD", "")
        return cls(Path(folder)) if folder else None

    def publish(self, state: WorkerState, *, force: bool = False) -> None:
        key = (state.active, state.lagging)
        now = time.monotonic()
        if not force and key == self._written and now - self._written_at < self.REFRESH_S:
            return
        path = self.folder / f"{self.pid}.json"
        tmp = path.with_suffix(".tmp")
        entry = {"pid": self.pid, "active": state.active, "capacity": state.capacity,
                 "lagging": state.lagging}  # fmt: skip
        try:
            tmp.write_text(json.dumps(entry))
            os.replace(tmp, path)
        except OSError:  # the folder went away (supervisor stopping): nothing to tell
            return
        self._written, self._written_at = key, now

    def others(self) -> list[WorkerState]:
        """The other live workers of this host, as they last said."""
        found = []
        for path in self.folder.glob("*.json"):
            try:
                entry = json.loads(path.read_text())
                state = WorkerState(
                    pid=int(entry["pid"]),
                    active=int(entry["active"]),
                    capacity=int(entry["capacity"]),
                    lagging=bool(entry["lagging"]),
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced right now, or not ours
            if state.pid == self.pid:
                continue
            if not _alive(state.pid):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            found.append(state)
        return found

    def reserve(self, call_id: str, ttl_s: float) -> None:
        # The file's modification time is when the place expires (a time in the future).
        path = self.folder / "reserved" / call_id
        with contextlib.suppress(OSError):
            path.touch()
            until = time.time() + ttl_s
            os.utime(path, (until, until))

    def unreserve(self, call_id: str) -> bool:
        """Take ``call_id``'s reservation away; True if it had one (the host answered it)."""
        try:
            (self.folder / "reserved" / call_id).unlink()
        except OSError:
            return False
        return True

    def reserved(self) -> int:
        """Calls answered on this host whose stream has not started (expired ones removed)."""
        count, now = 0, time.time()
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.folder / "reserved"):
                try:
                    fresh = entry.stat().st_mtime > now
                except OSError:
                    continue  # taken by its stream just now
                if fresh:
                    count += 1
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        return count


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


# Prometheus (``/metrics``, next to calls/metrics.py's series). Set when they change (slots,
# lag samples), not read at scrape time: with several workers (voiceapp/serve.py) a scrape
# reaches one worker, and prometheus_client's multiprocess mode sums the workers' values
# from files (calls/views.py), which a scrape-time function cannot feed.
CALLS_REFUSED = Counter(
    "voiceapp_calls_refused_total",
    "New calls refused because this process was full (reason: capacity, loop_lag, shutting_down)",
    ["channel", "reason"],
)
CALL_CAPACITY = Gauge(
    "voiceapp_call_capacity",
    "MAX_CALLS_PER_PROCESS (summed over the live workers of a host; 0: no limit)",
    multiprocess_mode="livesum",
)
ADMITTED_CALLS = Gauge(
    "voiceapp_admitted_calls",
    "Calls holding an admission slot (summed over the live workers of a host)",
    multiprocess_mode="livesum",
)
LOOP_LAG_P99 = Gauge(
    "voiceapp_loop_lag_p99_seconds",
    "Event-loop lag p99 over the last 5 s, the worst worker's (0 while no call is live)",
    multiprocess_mode="livemax",
)


class AdmissionController:
    """The slots of this process and the loop-lag monitor that runs while any is taken."""

    def __init__(
        self, *, monitor: LoopLagMonitor | None = None, board: WorkerBoard | None = None
    ) -> None:
        self.monitor = monitor or LoopLagMonitor()
        self.board = board
        self._slots: set[str] = set()
        # Calls a webhook of this process answered whose stream has not started yet: a burst
        # of webhooks would otherwise all find the process empty (slots are taken only when
        # streams start) and be answered, only to have their streams refused after the
        # caller was connected. call_id -> when the place expires (monotonic).
        self._reserved: dict[str, float] = {}
        self._lock = threading.Lock()
        self.monitor.on_sample = self._on_lag_sample
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

    def reserved(self) -> int:
        """Places held for streams about to start (expired ones are forgotten here)."""
        now = time.monotonic()
        with self._lock:
            for call_id in [c for c, until in self._reserved.items() if until <= now]:
                del self._reserved[call_id]
            return len(self._reserved)

    def refusal(self, *, count_reserved: bool = False) -> Refusal | None:
        """Why a new call would be refused now (None: it would be taken). Any thread.

        ``count_reserved``: the places held by answered webhooks count too (a webhook's
        question); a stream's own check (:meth:`admit`) counts only calls that started."""
        if self.draining:
            return Refusal(reason=SHUTTING_DOWN, detail="this process is shutting down")
        limit = self.capacity()
        reserved = self.reserved() if count_reserved and limit else 0
        if limit and self.active + reserved >= limit:
            held = f"{self.active} calls" + (f" + {reserved} starting" if reserved else "")
            return Refusal(
                reason=CAPACITY,
                detail=f"{held} in this process (MAX_CALLS_PER_PROCESS={limit})",
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

    def state(self) -> WorkerState:
        refused = self.refusal()
        return WorkerState(
            pid=os.getpid(),
            active=self.active,
            capacity=self.capacity(),
            lagging=refused is not None and refused.reason != CAPACITY,
        )

    def host_refusal(self) -> Refusal | None:
        """Why this host would refuse a new call (webhooks and readiness).

        One process: its own refusal, places held for answered calls included. Several
        workers on a board: the call is taken while the workers' free slots (this one's and
        the others', lagging ones having none) outnumber the calls answered on this host
        whose streams have not started yet; the stream then checks the worker it lands on
        (:meth:`admit`)."""
        if self.board is None:
            return self.refusal(count_reserved=True)
        own = self.refusal()
        if own is not None and own.reason == SHUTTING_DOWN:
            return own
        workers = [self.state(), *self.board.others()]
        room = sum(w.room for w in workers)
        reserved = self.board.reserved()
        if room > reserved:
            return None
        lagging = sum(1 for w in workers if w.lagging)
        return Refusal(
            reason=LOOP_LAG if lagging == len(workers) else CAPACITY,
            detail=(
                f"no room on this host's {len(workers)} worker(s): "
                f"{sum(w.active for w in workers)} calls, {reserved} starting, "
                f"{lagging} lagging (MAX_CALLS_PER_PROCESS={self.capacity()})"
            ),
        )

    def publish(self, *, force: bool = False) -> None:
        """Tell the host's other workers whether this one has room (no board: nothing),
        and Prometheus what this worker holds."""
        if self.board is not None:
            self.board.publish(self.state(), force=force)
        ADMITTED_CALLS.set(self.active)
        CALL_CAPACITY.set(self.capacity())

    def _on_lag_sample(self) -> None:
        LOOP_LAG_P99.set((self.monitor.p99_ms() or 0.0) / 1000.0)
        self.publish()

    def forget_reservations(self) -> None:
        """Drop every held place (a test starting from an empty process)."""
        with self._lock:
            self._reserved.clear()

    def _may_overflow(self) -> bool:
        limit = self.capacity()
        return self.active < limit + max(1, limit // OVERFLOW_DIVISOR)

    def reserve(self, call_id: object, *, ttl_s: float | None = None) -> None:
        """A webhook answered ``call_id``: hold a place for its stream for ``ttl_s``
        (default ``RESERVE_S``; an outbound dial holds it while the phone rings). The
        stream's :meth:`admit`, the call's :meth:`release` or :meth:`unreserve` gives it
        back, on whichever worker of the host."""
        ttl = RESERVE_S if ttl_s is None else ttl_s
        if self.board is not None:
            self.board.reserve(str(call_id), ttl)
            return
        with self._lock:
            self._reserved[str(call_id)] = time.monotonic() + ttl

    def unreserve(self, call_id: object) -> None:
        """The call will not stream after all (a dial or an answer failed)."""
        if self.board is not None:
            self.board.unreserve(str(call_id))
        with self._lock:
            self._reserved.pop(str(call_id), None)

    def admit(self, call_id: str) -> Refusal | None:
        """On the event loop: take a slot for ``call_id``, or say why not.

        Check and take happen with no await in between, so two streams starting together
        cannot both take the last slot. Starts the lag monitor with the first call.

        With several workers, a call the host answered (its webhook reserved a place) may
        land on a worker that is already full while another has room: rather than drop a
        caller who was already connected, such a call may exceed this worker's capacity by
        ``OVERFLOW`` (10 %, at least 1). The loop-lag limit still applies."""
        answered = self.board.unreserve(call_id) if self.board is not None else False
        with self._lock:
            self._reserved.pop(call_id, None)
            if call_id not in self._slots:
                refused = self.refusal()
                if refused is not None and not (
                    answered and refused.reason == CAPACITY and self._may_overflow()
                ):
                    return refused
                self._slots.add(call_id)
        self.monitor.start()
        self.publish()
        return None

    async def release(self, call_id: str) -> None:
        """Give ``call_id``'s slot back (idempotent); the monitor stops with the last call."""
        if self.board is not None:
            self.board.unreserve(call_id)
        with self._lock:
            self._slots.discard(call_id)
            self._reserved.pop(call_id, None)
            idle = not self._slots
        if idle:
            await self.monitor.stop()
            LOOP_LAG_P99.set(0.0)  # no sampler while idle: no stale figure either
        self.publish()


def record_refusal(*, channel: str, refused: Refusal, call_id: object = "") -> None:
    """Count and log a refused call (its record is ended ``busy`` by the caller of this)."""
    CALLS_REFUSED.labels(channel=channel, reason=refused.reason).inc()
    logger.warning("%s call %s refused, process busy: %s", channel, call_id or "-", refused)


controller = AdmissionController(board=WorkerBoard.from_env())
controller.publish(force=True)  # a new worker has room: say so before its first call
