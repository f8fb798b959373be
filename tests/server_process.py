"""A real daphne server in a subprocess, sharing the test database, for process-level tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    s = connection.settings_dict
    if connection.vendor == "postgresql":
        return f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    return f"sqlite:///{s['NAME']}"


class DaphneServer:
    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "REDIS_KEY_PREFIX": settings.REDIS_KEY_PREFIX,
            "DEBUG": "true",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "INFO",
            # Process tests use scripted engines; tests of the preload turn it on.
            "PRELOAD_ENGINES": "false",
            # A CI machine busy with other work lags the server's loop: that must not refuse
            # calls in tests that are not about admission (tests/settings.py does the same).
            "ADMISSION_MAX_LOOP_LAG_MS": "0",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ROOT / ".pytest_cache" / f"daphne-{self.port}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                "voiceapp.asgi:application"]  # fmt: skip

    def start(self, timeout: float = 60) -> DaphneServer:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("wb")
        self.process = subprocess.Popen(
            self.command(), cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.base}/health/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()  # a server that never came up must not outlive the test (nor its workers)
        raise RuntimeError(f"daphne did not answer /health/ in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


class WorkersServer(DaphneServer):
    """The production command (voiceapp/serve.py): a supervisor and N workers on one port."""

    def __init__(self, *, server: str = "uvicorn", workers: int = 2, **env: str) -> None:
        super().__init__(**env)
        self.server, self.workers = server, workers

    def command(self) -> list[str]:
        return [sys.executable, "-m", "voiceapp.serve", "--server", self.server,
                "--workers", str(self.workers), "--port", str(self.port)]  # fmt: skip

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return [p.pid for p in psutil.Process(self.process.pid).children()]

    def stop(self) -> None:
        """SIGTERM (the workers end their calls), then make sure no worker is left."""
        if self.process is None or self.process.poll() is not None:
            return
        workers = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        for worker in workers:
            with contextlib.suppress(psutil.Error):
                worker.kill()


def session_cookie_for(user) -> str:  # type: ignore[no-untyped-def]
    """A logged-in session cookie for ``user``, stored in the shared database."""
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return f"{settings.SESSION_COOKIE_NAME}={store.session_key}"
