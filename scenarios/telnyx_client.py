"""A caller on Telnyx's wire: signed Call Control webhooks (``call.initiated``,
``call.answered``, ``call.hangup``) and the media-streaming socket driven as Telnyx drives
it (``connected`` / ``start`` with the ``call_control_id``, 20 ms PCMU ``media`` frames with
``chunk`` numbers, ``mark`` echoed once played, ``dtmf``, ``stop``), docs/protocols.md §2.

The server answers the call through Call Control REST, which the runner serves itself
(``scenarios/telnyx_api.py``). Plain Python (no Django).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from nacl.signing import SigningKey

from scenarios.caller_line import CallRef, CallResult, Payload, PhoneLine

WEBHOOK_PATH = "/telephony/telnyx/webhook/"
USER_ID = "3e6f995f-85f7-4705-9741-53b116d28237"  # the (fake) Telnyx account
CONNECTION_ID = "scenario-runner"

MEDIA = (
    '{"event":"media","sequence_number":"%d","stream_id":"%s","media":'
    '{"track":"inbound","chunk":"%d","timestamp":"%d","payload":"%s"}}'
)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True, kw_only=True)
class TelnyxLeg:
    """The caller's leg as Telnyx names it in every webhook."""

    call_control_id: str
    from_number: str
    to_number: str
    call_leg_id: str = ""
    call_session_id: str = ""
    client_state: str | None = None  # what the server asked Telnyx to echo (set at answer)

    def payload(self, **extra: Any) -> dict[str, Any]:
        return {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "connection_id": CONNECTION_ID,
            "from": self.from_number,
            "to": self.to_number,
            "direction": "incoming",
            "client_state": self.client_state,
            **extra,
        }


def signed_headers(key: SigningKey, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """Telnyx's Ed25519 signature over ``f"{timestamp}|"`` + the raw body."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(ts.encode() + b"|" + body).signature
    return {
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
        "telnyx-timestamp": ts,
        "Content-Type": "application/json",
    }


async def post_webhook(
    http: httpx.AsyncClient, *, url: str, key: SigningKey, event_type: str, payload: dict[str, Any]
) -> None:
    """One Call Control webhook, signed as Telnyx signs it; raises unless the server took it."""
    body = json.dumps(
        {
            "data": {
                "record_type": "event",
                "event_type": event_type,
                "id": str(uuid.uuid4()),
                "occurred_at": _now(),
                "payload": payload,
            },
            "meta": {"attempt": 1, "delivered_to": url},
        }
    ).encode()
    response = await http.post(url, content=body, headers=signed_headers(key, body))
    if response.status_code >= 300:
        raise RuntimeError(
            f"telnyx {event_type} webhook answered {response.status_code}: {response.text[:200]}"
        )


class TelnyxCaller(PhoneLine):
    """One media-streaming socket (``stream_bidirectional_mode=rtp``, PCMU), client side."""

    channel = "telnyx"

    def __init__(self, ws: Any, *, leg: TelnyxLeg, result: CallResult) -> None:
        super().__init__(
            ws, ref=CallRef(channel=self.channel, external_id=leg.call_control_id), result=result
        )
        self.leg = leg
        self.stream_id = str(uuid.uuid4())
        self.seq = 0
        self.chunk = 0

    async def send_json(self, data: dict[str, Any]) -> None:
        self.seq += 1
        message = {"sequence_number": str(self.seq), "stream_id": self.stream_id, **data}
        await self.ws.send(json.dumps(message, separators=(",", ":")))

    async def open(self) -> None:
        await self.ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        await self.send_json(
            {
                "event": "start",
                "start": {
                    "user_id": USER_ID,
                    "call_control_id": self.leg.call_control_id,
                    "call_session_id": self.leg.call_session_id,
                    "from": self.leg.from_number,
                    "to": self.leg.to_number,
                    "tags": [],
                    "client_state": self.leg.client_state,
                    "custom_parameters": {},
                    "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                },
            }
        )
        self.start_clock()

    async def send_frame(self, payload: Payload, stamp_ms: int) -> None:
        self.seq += 1
        self.chunk += 1
        await self.ws.send(MEDIA % (self.seq, self.stream_id, self.chunk, stamp_ms, payload))

    async def send_mark(self, name: str) -> None:
        await self.send_json({"event": "mark", "mark": {"name": name}})

    async def dtmf(self, digit: str) -> None:
        await self.send_json({"event": "dtmf", "occurred_at": _now(), "dtmf": {"digit": digit}})

    async def send_stop(self) -> None:
        await self.send_json(
            {
                "event": "stop",
                "stop": {"user_id": USER_ID, "call_control_id": self.leg.call_control_id},
            }
        )
