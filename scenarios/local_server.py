"""A server for the runner to call when it is given no ``--base-url``: daphne in a
subprocess on a free loopback port, on this process's database and settings module, with
a Twilio auth token of its own so the webhooks are signed as in production, and the
runner's own Telnyx (``scenarios/telnyx_api.py``: its webhook key and Call Control API)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection

from scenarios.runner import Target
from scenarios.telnyx_api import TelnyxRig

ROOT = Path(__file__).resolve().parent.parent


def _database_url() -> str:
    # The runner reads the calls the server stores: both must use the same database.
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    if connection.vendor == "sqlite" and str(db["NAME"]) not in ("", ":memory:"):
        return f"sqlite:///{db['NAME']}"
    raise RuntimeError(
        f"the {connection.vendor} database {db['NAME']!r} cannot be shared with a server"
    )


class LocalServer:
    def __init__(self, *, settings_module: str = "", env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.telnyx = TelnyxRig()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": settings_module
            or os.environ.get("DJANGO_SETTINGS_MODULE", "voiceapp.settings"),
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PUBLIC_BASE_URL": self.base_url,
            "TWILIO_AUTH_TOKEN": self.token,
            "TWILIO_ACCOUNT_SID": "",  # never reach the real Twilio REST API from a test call
            "TELEPHONY_ALLOW_UNSIGNED": "false",
            **self.telnyx.server_env(),
            **(env or {}),
        }
        self.log = Path(tempfile.gettempdir()) / f"voiceapp-scenarios-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> Target:
        return Target(
            base_url=self.base_url,
            auth_token=self.token,
            public_base_url=self.base_url,
            telnyx=self.telnyx,
        )

    def start(self, timeout_s: float = 300) -> LocalServer:
        """Started and ready (``/health/ready/``: with the preload on, the models are warm)."""
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                 "voiceapp.asgi:application"],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/health/ready/", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the server was not ready in {timeout_s:g} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
