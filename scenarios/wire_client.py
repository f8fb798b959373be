"""A caller on Twilio's wire: the signed voice webhook, the TwiML, then the Media Streams
socket driven as Twilio drives it (``connected`` / ``start``, 20 ms µ-law ``media`` frames
paced on the wall clock, ``mark`` echoed once its audio would have played, ``dtmf``,
``stop``), with the agent's audio played into a simulated carrier buffer.

Shared by the scenario runner and the benchmarks (``bench/load.py`` and the benchmarks
built on it import it from here), so the code a carrier exercises is driven by one client.
Plain Python (no Django): it runs in any process that can reach the server.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from twilio.request_validator import RequestValidator
from websockets.exceptions import ConnectionClosed

FRAME_S = 0.020
FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law
LATE_S = 0.040  # a frame this far behind the carrier's play-out schedule is an audible gap
QUIET_S = 0.5  # no agent audio for this long (and all of it played): the agent is done
ACCOUNT_SID = "AC" + "0" * 32
VOICE_PATH = "/telephony/twilio/voice/"


@dataclass(slots=True)
class Reply:
    """Agent audio after one caller turn (or the greeting), as the carrier receives it."""

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


MEDIA = (
    '{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
    '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


class TwilioCaller:
    """One Media Streams socket, client side (what Twilio does with the caller's line)."""

    def __init__(self, ws: Any, *, stream_sid: str, call_sid: str, result: CallResult) -> None:
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.result = result
        self.seq = 0
        self.chunk = 0
        self.t0 = self.loop.time()
        self.next_at = self.t0
        self.play_until = 0.0  # when the simulated carrier buffer runs dry
        self.marks: list[tuple[float, str]] = []  # (due, name): echoed once played
        self.reply = Reply()
        self.quiet = 0  # next "silence" frame
        self.clears: list[float] = []  # when each ``clear`` arrived (barge-in evidence)
        self.stopped = False  # we sent stop
        self.closed: str | None = None  # the server closed the socket first

    async def send_json(self, data: dict[str, Any]) -> None:
        self.seq += 1
        await self.ws.send(
            json.dumps({"sequenceNumber": str(self.seq), **data}, separators=(",", ":"))
        )

    async def open(self, parameters: dict[str, str]) -> None:
        await self.ws.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await self.send_json(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": ACCOUNT_SID,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        self.t0 = self.next_at = self.loop.time()

    async def frame(self, payload: str) -> float:
        """Send one 20 ms frame on the wall-clock schedule (late wake-ups catch up)."""
        delay = self.next_at - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = self.loop.time()
        self.result.lag_ms.append((now - self.next_at) * 1000.0)
        self.seq += 1
        self.chunk += 1
        stamp = int((self.next_at - self.t0) * 1000)
        await self.ws.send(MEDIA % (self.seq, self.stream_sid, self.chunk, stamp, payload))
        self.next_at += FRAME_S
        while self.marks and self.marks[0][0] <= now:
            await self.send_json(
                {
                    "event": "mark",
                    "streamSid": self.stream_sid,
                    "mark": {"name": self.marks.pop(0)[1]},
                }
            )
        return now

    async def dtmf(self, digit: str) -> None:
        """A key press, as Twilio reports it on a bidirectional stream."""
        await self.send_json(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def silence_until(
        self, done: Callable[[], bool], silence: list[str], timeout: float
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
                now = self.loop.time()
                data = json.loads(message)
                event = data.get("event")
                if event == "media":
                    self.on_media(now, len(binascii.a2b_base64(data["media"]["payload"])))
                elif event == "mark":
                    self.marks.append((max(now, self.play_until), data["mark"]["name"]))
                elif event == "clear":
                    self.clears.append(now)
                    self.play_until = now
                    self.marks = [(now, name) for _, name in self.marks]
        except ConnectionClosed as exc:
            if not self.stopped:
                frame = exc.rcvd
                self.closed = f"{frame.code} {frame.reason}" if frame else "no close frame"
            return
        if not self.stopped:
            code = self.ws.close_code
            self.closed = f"{code} {self.ws.close_reason or ''}"

    def on_media(self, now: float, size: int) -> None:
        reply = self.reply
        if reply.first_at is None:
            reply.first_at = now
            self.play_until = now
        else:
            behind = now - self.play_until  # > 0: the carrier had nothing left to play
            reply.behind_ms.append(max(0.0, behind) * 1000.0)
            if behind > LATE_S:
                reply.late += 1
        reply.last_at = now
        reply.frames += max(1, round(size / FRAME_BYTES))
        self.play_until = max(self.play_until, now) + size / 8000.0

    async def stop(self) -> None:
        self.stopped = True
        if self.closed is None:
            with contextlib.suppress(ConnectionClosed):
                await self.send_json(
                    {
                        "event": "stop",
                        "streamSid": self.stream_sid,
                        "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call_sid},
                    }
                )


def parse_twiml(xml: str) -> tuple[str, dict[str, str]]:
    """The ``<Connect><Stream>`` URL and its ``<Parameter>``s (they come back in ``start``)."""
    root = ET.fromstring(xml)
    stream = root.find("./Connect/Stream")
    if stream is None:
        raise ValueError(f"no <Connect><Stream> in the TwiML: {xml[:200]}")
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return stream.get("url", ""), params


def caller_form(
    call_sid: str, *, from_number: str, to_number: str = "+15550000000"
) -> dict[str, str]:
    """The form fields Twilio posts when a call comes in."""
    return {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": from_number,
        "To": to_number,
        "CallStatus": "ringing",
        "Direction": "inbound",
    }


async def post_voice_webhook(
    http: httpx.AsyncClient,
    *,
    url: str,
    form: dict[str, str],
    auth_token: str,
    signed_url: str | None = None,
) -> str:
    """POST the voice webhook, signed as Twilio signs it; returns the TwiML.

    ``signed_url`` is the URL as configured at Twilio (the server checks the signature over
    its ``PUBLIC_BASE_URL``, which differs from ``url`` behind a tunnel or proxy)."""
    headers = {}
    if auth_token:
        headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(
            signed_url or url, form
        )
    response = await http.post(url, data=form, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"voice webhook answered {response.status_code}: {response.text[:200]}")
    return response.text


def reachable_stream_url(stream_url: str, base_url: str) -> str:
    """The TwiML's stream URL (built on the public base) pointed at the server we reach."""
    base = urlsplit(base_url)
    scheme = "wss" if base.scheme == "https" else "ws"
    return f"{scheme}://{base.netloc}{urlsplit(stream_url).path}"
