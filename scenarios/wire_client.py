"""A caller on Twilio's wire: the signed voice webhook, the TwiML, then the Media Streams
socket driven as Twilio drives it (``connected`` / ``start``, 20 ms µ-law ``media`` frames
paced on the wall clock, ``mark`` echoed once its audio would have played, ``dtmf``,
``stop``), with the agent's audio played into a simulated carrier buffer (the pacing and
the play-out are ``scenarios/caller_line.py``'s, shared with the other channels).

Shared by the scenario runner and the benchmarks (``bench/load.py`` and the benchmarks
built on it import it from here), so the code a carrier exercises is driven by one client.
Plain Python (no Django): it runs in any process that can reach the server.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlsplit

import httpx
from twilio.request_validator import RequestValidator

# The line's shared parts are re-exported: the benchmarks import them from here.
from scenarios.caller_line import (  # noqa: F401
    FRAME_BYTES,
    FRAME_S,
    LATE_S,
    QUIET_S,
    CallRef,
    CallResult,
    Payload,
    PhoneLine,
    Reply,
)

ACCOUNT_SID = "AC" + "0" * 32
VOICE_PATH = "/telephony/twilio/voice/"

MEDIA = (
    '{"event":"media","sequenceNumber":"%d","streamSid":"%s","media":'
    '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


class TwilioCaller(PhoneLine):
    """One Media Streams socket, client side (what Twilio does with the caller's line)."""

    channel = "twilio"

    def __init__(self, ws: Any, *, stream_sid: str, call_sid: str, result: CallResult) -> None:
        ref = CallRef(channel=self.channel, external_id=call_sid)
        super().__init__(ws, ref=ref, result=result)
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self.seq = 0
        self.chunk = 0

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
        self.start_clock()

    async def send_frame(self, payload: Payload, stamp_ms: int) -> None:
        self.seq += 1
        self.chunk += 1
        await self.ws.send(MEDIA % (self.seq, self.stream_sid, self.chunk, stamp_ms, payload))

    async def send_mark(self, name: str) -> None:
        await self.send_json(
            {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
        )

    async def dtmf(self, digit: str) -> None:
        """A key press, as Twilio reports it on a bidirectional stream."""
        await self.send_json(
            {
                "event": "dtmf",
                "streamSid": self.stream_sid,
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )

    async def send_stop(self) -> None:
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
