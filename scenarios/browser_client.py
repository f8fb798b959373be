"""A caller on the browser simulator's socket (``/ws/simulator/``), as the page drives it:
a staff session cookie and an ``Origin`` the server accepts, ``{"event": "start",
"profile": …, "channel": "browser", "audio": "binary"}``, the caller's voice as binary
PCM16 16 kHz frames every 20 ms, ``{"event": "stop"}`` to hang up. The server answers with
``started`` (the call id: the simulator names its calls itself), the agent's audio as
binary PCM16 frames at the ``sample_rate`` it announced, ``clear`` when the agent stops for
the caller, and ``ended``. The page has no keypad: no DTMF on this channel.

Plain Python (no Django): the session cookie comes from ``scenarios.services``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from scenarios.caller_line import CallerLine, CallRef, CallResult, Payload

SIMULATOR_PATH = "/ws/simulator/"
RATE = 16000  # the page's capture rate, and the agent's on the browser channel
STARTED_TIMEOUT_S = 30.0  # the server builds the call's engines before it says started


class BrowserCaller(CallerLine):
    channel = "browser"
    bytes_per_s = RATE * 2
    frame_bytes = RATE * 2 // 50

    def __init__(self, ws: Any, *, ref: CallRef, result: CallResult) -> None:
        # ``ref`` learns the call id from ``started`` (or an error or ``ended``).
        super().__init__(ws, ref=ref, result=result)
        self.started = asyncio.get_running_loop().create_future()  # the call id, or why not
        self.errors: list[str] = []  # the server's error messages, for the report

    async def open(self, profile: str) -> None:
        """Start the call with ``profile`` and wait for the server's ``started``; raises
        RuntimeError with the server's reason when it refuses (the receiver must run)."""
        await self.ws.send(
            json.dumps(
                {"event": "start", "profile": profile, "channel": self.channel, "audio": "binary"}
            )
        )
        deadline = self.loop.time() + STARTED_TIMEOUT_S
        # Polled: the answer comes through the receiver task, as ``started`` or a close.
        while not self.started.done():
            if self.closed is not None:
                reason = "; ".join(self.errors) or self.closed
                raise RuntimeError(f"the simulator refused the call: {reason}")
            if self.loop.time() > deadline:
                raise RuntimeError(
                    f"the simulator did not start the call within {STARTED_TIMEOUT_S:g} s"
                )
            await asyncio.sleep(0.02)
        self.bytes_per_s = self.started.result() * 2
        self.frame_bytes = self.bytes_per_s // 50
        self.start_clock()

    async def send_frame(self, payload: Payload, stamp_ms: int) -> None:
        await self.ws.send(payload)

    async def send_stop(self) -> None:
        await self.ws.send(json.dumps({"event": "stop"}))

    async def on_message(self, now: float, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.on_media(now, len(message))
            return
        data = json.loads(message)
        kind = data.get("type")
        if kind == "clear":
            self.on_clear(now)
        elif kind in ("started", "ended") and data.get("call_id"):
            self.ref.call_id = str(data["call_id"])
            if kind == "started" and not self.started.done():
                self.started.set_result(int(data.get("sample_rate") or RATE))
        elif kind == "error":
            self.errors.append(str(data.get("message", "")))
            if data.get("call_id"):
                self.ref.call_id = str(data["call_id"])


def simulator_url(base_url: str) -> str:
    """``http(s)://host`` -> ``ws(s)://host/ws/simulator/``."""
    scheme, _, rest = base_url.rstrip("/").partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + SIMULATOR_PATH
