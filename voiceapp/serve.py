"""Serve the app with N worker processes sharing one port (the production command).

    python -m voiceapp.serve                                  # WEB_SERVER, WEB_WORKERS, HOST, PORT
    python -m voiceapp.serve --server daphne --workers 2 --port 8000

Why processes: a Python process runs on one core (the GIL), and one process holds a bounded
number of calls (``MAX_CALLS_PER_PROCESS``, bench/README.md). This supervisor binds the
listening socket **once** and starts N workers of the chosen ASGI server on it (``--fd``):
every worker accepts from the same socket, so the kernel hands a new connection to whichever
worker is free to accept it first (a busy worker's loop gets there later, an idle one sooner).
A carrier's media socket is one connection, so a call lives in one worker from start to end;
nothing of the audio crosses processes. What must be shared across workers already is,
through Redis and the database: the channel layer (global stop, simulator groups), the
single-use stream tokens, call records and the admission board (``live/admission.py``: a
webhook answered by one worker refuses a call only when no worker of the host has room).

Servers (``--server``, env ``WEB_SERVER``): ``uvicorn`` (uvloop + httptools + websockets'
sans-I/O protocol) is the default: on our load it costs a little less CPU than daphne
(measured, bench/README.md "Which ASGI server": within a few percent, the audio processing
dominates), and its ASGI
lifespan lets a (re)starting worker accept calls only once its models are warm and drain
its calls before the server closes sockets; close reasons reach the client. ``daphne``
stays supported and is what ``make run`` serves. Both run behind this supervisor alike.

Signals: SIGTERM/SIGINT to the supervisor -> SIGTERM to every worker, whose shutdown ends its
live calls gracefully (goodbye, stored ``server_shutdown``; ``live/runtime.py``); the
supervisor waits up to twice ``SHUTDOWN_GRACE_SECONDS`` + 5 s (goodbyes, then turn writes
still retrying), then kills what is left. A worker
that dies on its own (OOM, crash) is started again on the same socket after a short
backoff; its calls are ended ``orphaned`` by the sweeper.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger("voiceapp.serve")

SERVERS = ("uvicorn", "daphne")
DEFAULT_SERVER = "uvicorn"
APPLICATION = "voiceapp.asgi:application"
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)  # a worker crashing again and again waits longer
STABLE_AFTER_S = 60.0  # a worker that lived this long starts its backoff from the beginning


def default_workers() -> int:
    """The cores this process may use: its CPU set, capped by a cgroup CPU quota
    (``docker --cpus``, a Kubernetes CPU limit), not the host's count."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def worker_command(server: str, fd: int, *, proxy_headers: bool) -> list[str]:
    """One worker of ``server`` serving the already-bound socket ``fd``."""
    if server == "daphne":
        cmd = [sys.executable, "-m", "daphne", "--fd", str(fd)]
        if proxy_headers:
            cmd.append("--proxy-headers")
        return [*cmd, APPLICATION]
    if server == "uvicorn":
        cmd = [
            sys.executable, "-m", "uvicorn", APPLICATION, "--fd", str(fd),
            # uvloop + httptools + the websockets library's sans-I/O protocol (uvicorn's own
            # default for "auto" since 0.35): ~6 % less CPU per call than its legacy protocol,
            # which runs a task and an asyncio.wait per message (bench/README.md).
            "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio",
            # Carriers send 20 ms frames; the simulator's are small too. Larger messages are
            # refused by our own consumers with a reason (telephony/wire.py MAX_MESSAGE_CHARS).
            "--ws-max-size", "1048576",
            # Keepalive pings find peers that vanished without a close (a half-open TCP
            # connection). Never 0: the websockets library would then ping on every loop
            # turn. The timeout is generous: a busy carrier edge may be slow to pong.
            "--ws-ping-interval", "20", "--ws-ping-timeout", "30",
            "--lifespan", "on",
            "--no-access-log",
            "--timeout-graceful-shutdown", str(_grace_s()),
        ]
        if proxy_headers:
            cmd += ["--proxy-headers", "--forwarded-allow-ips", "*"]
        return cmd
    raise ValueError(f"unknown server {server!r}; choose one of {', '.join(SERVERS)}")


def _grace_s() -> int:
    # Settings are not imported here (the supervisor never loads Django); the env var is the
    # same one settings.py reads, with the same default.
    return math.ceil(float(os.environ.get("SHUTDOWN_GRACE_SECONDS") or 8))


def stop_deadline_s() -> float:
    """How long a worker may take to stop: its calls' goodbyes (one grace period), then the
    turn writes still retrying after a database blip (another), plus uvicorn's own close."""
    return 2 * _grace_s() + 5.0


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies, even by SIGKILL, so no
    orphan keeps serving the port (Linux prctl PR_SET_PDEATHSIG; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # a burst of calls must not overflow the accept queue
    sock.set_inheritable(True)
    return sock


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)
    crashes: int = 0
    restart_at: float | None = None  # dead, to be started again then


class Supervisor:
    """Starts N workers on one socket, restarts the ones that die, stops them all on a signal."""

    def __init__(self, *, server: str, workers: int, sock: socket.socket, proxy_headers: bool):
        self.server = server
        self.count = workers
        self.sock = sock
        self.proxy_headers = proxy_headers
        self.workers: list[Worker] = []
        self.stopping = False
        self._wake = threading.Event()  # set by a signal: the loop's waits end at once
        # The host's worker board (live/admission.py WorkerBoard): each worker says there
        # whether it has room, so a webhook answered by a full worker still takes the call
        # when another worker can.
        self.board = tempfile.mkdtemp(prefix="voiceapp-workers-")
        # Prometheus multiprocess mode: each worker writes its series to files here and any
        # worker's /metrics answers for all (calls/views.py). A folder of the operator's
        # own (PROMETHEUS_MULTIPROC_DIR) is emptied first, as prometheus_client requires.
        self.metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
            prefix="voiceapp-prometheus-"
        )
        self.own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
        os.makedirs(self.metrics_dir, exist_ok=True)
        for stale in Path(self.metrics_dir).glob("*.db"):
            stale.unlink()

    def spawn(self, index: int, crashes: int = 0) -> Worker:
        fd = self.sock.fileno()
        env = {
            **os.environ,
            "WEB_WORKER_INDEX": str(index),
            "WEB_WORKERS": str(self.count),
            "WEB_WORKER_BOARD": self.board,
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
        }
        process = subprocess.Popen(
            worker_command(self.server, fd, proxy_headers=self.proxy_headers),
            pass_fds=(fd,),
            env=env,
            preexec_fn=_die_with_parent,
            # Its own session: a terminal's Ctrl-C (sent to the whole foreground group)
            # reaches only the supervisor, which stops the workers in order; a worker that
            # got the signal too would take the supervisor's as a second, impatient one.
            start_new_session=True,
        )
        logger.info("worker %d started (pid %d, %s)", index, process.pid, self.server)
        return Worker(index=index, process=process, crashes=crashes)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.workers = [self.spawn(i) for i in range(self.count)]
        while not self.stopping:
            now = time.monotonic()
            for n, worker in enumerate(self.workers):
                if worker.restart_at is not None:
                    if now >= worker.restart_at and not self.stopping:
                        self.workers[n] = self.spawn(worker.index, worker.crashes)
                    continue
                code = worker.process.poll()
                if code is None:
                    continue
                lived = now - worker.started_at
                worker.crashes = 0 if lived >= STABLE_AFTER_S else worker.crashes + 1
                wait = RESTART_BACKOFF_S[min(worker.crashes, len(RESTART_BACKOFF_S) - 1)]
                logger.error(
                    "worker %d (pid %d) exited with %s after %.0f s; restarting in %.0f s",
                    worker.index, worker.process.pid, code, lived, wait,
                )
                self._forget(worker.process.pid)
                worker.restart_at = now + wait
            self._wake.wait(0.5)
        return self.shutdown()

    def _forget(self, pid: int) -> None:
        """A dead worker's live gauges (calls held, capacity) stop counting, and its board
        entry goes (a reused pid must not bring its "room" back)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.metrics_dir)
        Path(self.board, f"{pid}.json").unlink(missing_ok=True)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stopping:  # a second Ctrl-C: do not wait for goodbyes
            for worker in self.workers:
                if worker.process.poll() is None:
                    worker.process.kill()
            return
        self.stopping = True
        self._wake.set()
        logger.warning("%s: stopping %d worker(s)", signal.Signals(signum).name, self.count)

    def shutdown(self) -> int:
        for worker in self.workers:
            if worker.restart_at is None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + stop_deadline_s()
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.wait()
        self.sock.close()
        shutil.rmtree(self.board, ignore_errors=True)
        if self.own_metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server", choices=SERVERS, default=os.environ.get("WEB_SERVER") or DEFAULT_SERVER
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("WEB_WORKERS") or 0),
        help="worker processes (0: one per core this process may use)",
    )
    parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000))
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-For/-Proto from the proxy in front (as daphne --proxy-headers)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    workers = args.workers or default_workers()
    sock = bind(args.host, args.port)
    logger.info(
        "serving %s on http://%s:%d with %d %s worker(s)",
        APPLICATION, args.host, args.port, workers, args.server,
    )
    return Supervisor(
        server=args.server, workers=workers, sock=sock, proxy_headers=args.proxy_headers
    ).run()


if __name__ == "__main__":
    sys.exit(main())
