"""The caller's end of a media socket, whatever the channel: audio sent in 20 ms frames on
the wall clock, the agent's audio played into a simulated buffer (as a carrier or a
browser plays it), and the line kept alive with silence while the caller waits.

:class:`CallerLine` is what :class:`scenarios.caller_script.ScriptedCaller` drives; each
channel only says how a frame, a key press and a hang-up are written and how the server's
messages read:

- ``scenarios/wire_client.py``: Twilio Media Streams (:class:`TwilioCaller`),
- ``scenarios/telnyx_client.py``: Telnyx media streaming (:class:`TelnyxCaller`),
- ``scenarios/browser_client.py``: the browser simulator's socket (:class:`BrowserCaller`).

The two phone carriers share :class:`PhoneLine`: µ-law JSON ``media``, ``mark`` echoed
once the audio before it would have played, ``clear``. Plain Python (no Django).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

FRAME_S = 0.020
FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law (the phone carriers' frame)
LATE_S = 0.040  # a frame this far behind the play-out schedule is an audible gap
QUIET_S = 0.5  # no agent audio for this long (and all of it played): the agent is done

# A frame as the line sends it: base64 µ-law text (phone carriers) or raw PCM16 (browser).
Payload = str | bytes


@dataclass(slots=True, kw_only=True)
class CallRef:
    """How the stored call is found: the carrier's id for it (Twilio CallSid, Telnyx
    call_control_id) or, where the server names it itself (the simulator), its call id."""

    channel: str
    external_id: str = ""
    call_id: str = ""


@dataclass(slots=True)
class Reply:
    """Agent audio after one caller turn (or the greeting), as the caller receives it."""

    speech_end: float | None = None
    first_at: float | None = None
    last_at: float = 0.0
    frames: int = 0  # 20 ms units received
    late: int = 0
    behind_ms: list[float] = field(default_factory=list)  # per message: ms behind schedule

    def v2v_ms(self) -> float | None:
        if self.speech_end is None or self.first_at is None:
            return None
        return (self.first_at - self.speech_end) * 1000.0


@dataclass(slots=True)
class CallResult:
    replies: list[Reply] = field(default_factory=list)  # caller turns only
    greeting: Reply | None = None
    errors: list[str] = field(default_factory=list)
    lag_ms: list[float] = field(default_factory=list)  # client sends behind its own schedule
    # Refused as busy (admission control): "webhook" (<Reject>/<Say>) or "stream" (4503
    # after the answer), and how long the refusal took from the webhook's request.
    busy: str = ""
    busy_s: float | None = None


class CallerLine:
    """One media socket, client side. Subclasses write :meth:`send_frame`,
    :meth:`send_stop`, :meth:`dtmf` and read messages in :meth:`on_message`."""

    channel = ""
    bytes_per_s = 8000  # of the agent's audio as it arrives (sizes -> play-out time)
    frame_bytes = FRAME_BYTES  # of the agent's audio: one 20 ms unit

    def __init__(self, ws: Any, *, ref: CallRef, result: CallResult) -> None:
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.ref = ref
        self.result = result
        self.t0 = self.loop.time()
        self.next_at = self.t0
        self.play_until = 0.0  # when the simulated play-out buffer runs dry
        self.reply = Reply()
        self.quiet = 0  # next "silence" frame
        self.clears: list[float] = []  # when each ``clear`` arrived (barge-in evidence)
        self.stopped = False  # we hung up
        self.closed: str | None = None  # the server closed the socket first

    # --- what a channel writes and reads ---------------------------------------------------

    async def send_frame(self, payload: Payload, stamp_ms: int) -> None:
        raise NotImplementedError

    async def send_stop(self) -> None:
        raise NotImplementedError

    async def dtmf(self, digit: str) -> None:
        raise NotImplementedError(f"the {self.channel} channel has no key presses")

    async def on_message(self, now: float, message: str | bytes) -> None:
        raise NotImplementedError

    async def after_frame(self, now: float) -> None:
        """Sent after each caller frame (phone lines echo the marks now played)."""

    # --- shared: pacing, play-out, waiting -------------------------------------------------

    def start_clock(self) -> None:
        self.t0 = self.next_at = self.loop.time()

    async def frame(self, payload: Payload) -> float:
        """Send one 20 ms frame on the wall-clock schedule (late wake-ups catch up)."""
        delay = self.next_at - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = self.loop.time()
        self.result.lag_ms.append((now - self.next_at) * 1000.0)
        await self.send_frame(payload, int((self.next_at - self.t0) * 1000))
        self.next_at += FRAME_S
        await self.after_frame(now)
        return now

    async def silence_until(
        self, done: Callable[[], bool], silence: list[Payload], timeout: float
    ) -> bool:
        deadline = self.loop.time() + timeout
        while not done():
            if self.closed is not None or self.loop.time() > deadline:
                return False
            self.quiet += 1
            await self.frame(silence[self.quiet % len(silence)])
        return True

    def agent_done(self, quiet_s: float = QUIET_S) -> bool:
        """The agent spoke since ``reply`` was reset, then sent nothing for ``quiet_s`` and
        all of it has played."""
        now = self.loop.time()
        return (
            self.reply.frames > 0 and now - self.reply.last_at > quiet_s and now > self.play_until
        )

    async def receive(self) -> None:
        try:
            async for message in self.ws:
                await self.on_message(self.loop.time(), message)
        except ConnectionClosed as exc:
            if not self.stopped:
                frame = exc.rcvd
                self.closed = f"{frame.code} {frame.reason}" if frame else "no close frame"
            return
        if not self.stopped:
            code = self.ws.close_code
            self.closed = f"{code} {self.ws.close_reason or ''}"

    def on_media(self, now: float, size: int) -> None:
        """``size`` bytes of agent audio arrived: queued behind what is still playing."""
        reply = self.reply
        if reply.first_at is None:
            reply.first_at = now
            self.play_until = now
        else:
            behind = now - self.play_until  # > 0: the buffer had nothing left to play
            reply.behind_ms.append(max(0.0, behind) * 1000.0)
            if behind > LATE_S:
                reply.late += 1
        reply.last_at = now
        reply.frames += max(1, round(size / self.frame_bytes))
        self.play_until = max(self.play_until, now) + size / self.bytes_per_s

    def on_clear(self, now: float) -> None:
        """The server flushed what was still to play (the agent stopped for the caller)."""
        self.clears.append(now)
        self.play_until = now

    async def stop(self) -> None:
        """Hang up (once); nothing to send when the server already closed the socket."""
        if self.stopped:
            return
        self.stopped = True
        if self.closed is None:
            with contextlib.suppress(ConnectionClosed):
                await self.send_stop()


class PhoneLine(CallerLine):
    """A carrier's media stream: µ-law 8 kHz in base64 JSON; the server's ``mark``s come
    back once the audio queued before them has played (or at once, after a ``clear``)."""

    def __init__(self, ws: Any, *, ref: CallRef, result: CallResult) -> None:
        super().__init__(ws, ref=ref, result=result)
        self.marks: list[tuple[float, str]] = []  # (due, name): echoed once played

    async def send_mark(self, name: str) -> None:
        raise NotImplementedError

    async def after_frame(self, now: float) -> None:
        while self.marks and self.marks[0][0] <= now:
            await self.send_mark(self.marks.pop(0)[1])

    async def on_message(self, now: float, message: str | bytes) -> None:
        data = json.loads(message)
        event = data.get("event")
        if event == "media":
            self.on_media(now, len(binascii.a2b_base64(data["media"]["payload"])))
        elif event == "mark":
            self.marks.append((max(now, self.play_until), data["mark"]["name"]))
        elif event == "clear":
            self.on_clear(now)
            self.marks = [(now, name) for _, name in self.marks]
