"""Telnyx: media-streaming wire format, webhook signatures and the Call Control calls we make.

Inbound socket messages become :mod:`telephony.wire` messages (media reordered by
``chunk``: Telnyx does not guarantee order); session output becomes Telnyx JSON for a
``stream_bidirectional_mode=rtp`` / ``PCMU`` stream. See docs/telephony.md and
PROTOCOLS.md §2.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
import uuid
from typing import Any

import httpx
from django.conf import settings
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from telephony import wire

logger = logging.getLogger(__name__)

CARRIER = "telnyx"
SIGNATURE_TOLERANCE_S = 300
REORDER_DEPTH = 4  # frames held waiting for a late one (80 ms at 20 ms a frame)
_ENCODINGS = {"PCMU", "audio/x-mulaw"}
_ALREADY_ENDED = "90018"  # Call Control error code: "call has already ended"


# --- media socket -------------------------------------------------------------------------------


class ChunkReorderer:
    """Puts media frames back in ``chunk`` order, holding at most ``depth`` frames.

    A missing chunk is waited for while fewer than ``depth`` later frames are held; then it
    is given up (its gap skipped). Late frames of an already-played position are dropped.
    """

    def __init__(self, depth: int = REORDER_DEPTH) -> None:
        self.depth = depth
        self._next: int | None = None
        self._held: dict[int, bytes] = {}
        self.dropped = 0

    def push(self, chunk: int | None, payload: bytes) -> list[bytes]:
        if chunk is None:  # no position given: nothing to reorder by
            return [payload]
        if self._next is None:
            # Chunks start at 1; a first arrival a few frames later means 1.. are late.
            self._next = 1 if 1 <= chunk <= self.depth else chunk
        if chunk < self._next or chunk in self._held:
            self.dropped += 1
            return []
        self._held[chunk] = payload
        ready: list[bytes] = []
        while self._held:
            if self._next not in self._held:
                if len(self._held) <= self.depth:
                    break
                self._next = min(self._held)  # give up on the gap
            ready.append(self._held.pop(self._next))
            self._next += 1
        return ready


class TelnyxStream:
    """One media-streaming socket (``stream_bidirectional_mode=rtp``, PCMU)."""

    carrier = CARRIER

    def __init__(self) -> None:
        self.stream_id = ""
        self.reorderer = ChunkReorderer()

    def parse(self, text: str | None) -> list[wire.Inbound]:
        """One socket message -> the messages it yields (media may yield 0..n, reordered)."""
        message = wire.json_object(text)
        if message.get("event") == "media":
            return self._media(message)
        parsed = wire.dispatch(_PARSERS, message)
        if isinstance(parsed, wire.Start):
            self.stream_id = parsed.stream_id
        return [parsed]

    def _media(self, message: dict[str, Any]) -> list[wire.Inbound]:
        media = wire.section(message, "media")
        track = media.get("track", "inbound")
        if track not in ("inbound", "inbound_track"):
            return [wire.Ignored(reason=f"{track} track")]
        payload = wire.ulaw_payload(media)
        try:
            chunk = int(media["chunk"]) if "chunk" in media else None
        except (TypeError, ValueError):
            raise wire.ProtocolError(f"bad media chunk {media.get('chunk')!r}") from None
        return [wire.Media(ulaw=frame) for frame in self.reorderer.push(chunk, payload)]

    @staticmethod
    def token(start: wire.Start, path_kwargs: dict[str, Any]) -> str:
        return str(path_kwargs.get("secret", ""))

    def media(self, ulaw: bytes) -> str:
        return _dump({"event": "media", "media": {"payload": wire.b64(ulaw)}})

    def mark(self, name: str) -> str:
        return _dump({"event": "mark", "mark": {"name": name}})

    def clear(self) -> str:
        return _dump({"event": "clear"})

    @staticmethod
    def can_hang_up() -> bool:
        return bool(settings.TELNYX_API_KEY)

    @staticmethod
    def hang_up(carrier_call_id: str) -> bool:
        return CallControl().hang_up(carrier_call_id)


def _start(message: dict[str, Any]) -> wire.Start:
    start = wire.section(message, "start")
    stream_id = message.get("stream_id") or start.get("stream_id")
    call_control_id = start.get("call_control_id")
    if not isinstance(stream_id, str) or not stream_id or not isinstance(call_control_id, str):
        raise wire.ProtocolError("start without stream_id/call_control_id")
    fmt = start.get("media_format", {})
    if (
        not isinstance(fmt, dict)
        or fmt.get("encoding", "PCMU") not in _ENCODINGS
        or str(fmt.get("sample_rate", 8000)) != "8000"
    ):
        raise wire.ProtocolError(f"unsupported media_format {fmt!r}; expected PCMU 8000")
    params = start.get("custom_parameters") or {}
    if not isinstance(params, dict):
        raise wire.ProtocolError("custom_parameters is not an object")
    return wire.Start(
        stream_id=stream_id,
        carrier_call_id=call_control_id,
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


def _mark(message: dict[str, Any]) -> wire.Mark:
    name = wire.section(message, "mark").get("name")
    if not isinstance(name, str):
        raise wire.ProtocolError("mark without a name")
    return wire.Mark(name=name)


def _error(message: dict[str, Any]) -> wire.CarrierError:
    payload = message.get("payload") if isinstance(message.get("payload"), dict) else {}
    return wire.CarrierError(
        code=str(payload.get("code", "")),
        detail=f"{payload.get('title', '')}: {payload.get('detail', '')}".strip(": "),
    )


# "media" is stateful (reordering) and handled by TelnyxStream._media.
_PARSERS = {
    "connected": lambda message: wire.Connected(),
    "start": _start,
    "mark": _mark,
    "dtmf": lambda message: wire.Dtmf(digit=wire.dtmf_digit(wire.section(message, "dtmf"))),
    "error": _error,
    "stop": lambda message: wire.Stop(),
}


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


# --- webhook signatures ---------------------------------------------------------------------------


def signature_problem(
    raw_body: bytes, signature: str, timestamp: str, *, now: float | None = None
) -> str | None:
    """Why a webhook's Ed25519 signature is not acceptable, or None when it is.

    Signed bytes are ``f"{timestamp}|"`` + the raw body; ``TELNYX_PUBLIC_KEY`` is the
    base64 account public key from the portal. Timestamps more than 5 minutes away are
    rejected (replays).
    """
    if not settings.TELNYX_PUBLIC_KEY:
        return "TELNYX_PUBLIC_KEY is not set"
    if not signature or not timestamp:
        return "missing telnyx-signature-ed25519/telnyx-timestamp"
    try:
        ts = int(timestamp)
    except ValueError:
        return "bad telnyx-timestamp"
    if abs((time.time() if now is None else now) - ts) > SIGNATURE_TOLERANCE_S:
        return "stale telnyx-timestamp"
    try:
        key = VerifyKey(base64.b64decode(settings.TELNYX_PUBLIC_KEY, validate=True))
        key.verify(timestamp.encode() + b"|" + raw_body, base64.b64decode(signature, validate=True))
    except (BadSignatureError, binascii.Error, ValueError, TypeError) as exc:
        return f"bad signature ({type(exc).__name__})"
    return None


# --- client_state: what we ask Telnyx to echo on every later webhook --------------------------


def client_state(*, call_id: str, mode: str) -> str:
    return base64.b64encode(json.dumps({"call_id": call_id, "mode": mode}).encode()).decode()


def read_client_state(value: object) -> dict[str, str]:
    if not isinstance(value, str) or not value:
        return {}
    try:
        data = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return {}
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}


# --- Call Control REST ----------------------------------------------------------------------------


class CallControlError(Exception):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def stream_fields(stream_url: str) -> dict[str, Any]:
    """A bidirectional raw-audio stream of the caller's side only (PROTOCOLS.md §2.2)."""
    return {
        "stream_url": stream_url,
        "stream_track": "inbound_track",
        "stream_bidirectional_mode": "rtp",  # the default, mp3, is whole files
        "stream_bidirectional_codec": "PCMU",
        "stream_bidirectional_sampling_rate": 8000,
        "stream_bidirectional_target_legs": "self",
    }


class CallControl:
    """The few Call Control v2 commands we send (blocking httpx; use ``asyncio.to_thread``)."""

    TIMEOUT_S = 10.0

    def __init__(self) -> None:
        self.base_url = settings.TELNYX_API_BASE_URL.rstrip("/")
        self.api_key = settings.TELNYX_API_KEY

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        if not self.api_key:
            raise CallControlError("TELNYX_API_KEY is not set")
        try:
            response = httpx.post(
                f"{self.base_url}{path}",
                json=body,
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.TIMEOUT_S,
            )
        except httpx.HTTPError as exc:
            raise CallControlError(f"{path}: {exc!r}") from exc
        return response

    def _command(self, call_control_id: str, action: str, body: dict[str, Any]) -> httpx.Response:
        body = {**body, "command_id": str(uuid.uuid4())}
        return self._post(f"/calls/{call_control_id}/actions/{action}", body)

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        if response.status_code >= 300:
            raise CallControlError(
                f"{what}: HTTP {response.status_code} {response.text[:300]}",
                status=response.status_code,
            )

    def answer(self, call_control_id: str, *, stream_url: str, client_state: str) -> None:
        body = {**stream_fields(stream_url), "client_state": client_state}
        self._raise_for(self._command(call_control_id, "answer", body), "answer")

    def answer_plain(self, call_control_id: str, *, client_state: str) -> None:
        self._raise_for(
            self._command(call_control_id, "answer", {"client_state": client_state}), "answer"
        )

    def speak(self, call_control_id: str, *, text: str, language: str, client_state: str) -> None:
        body = {
            "payload": text,
            "voice": "female",
            "language": language or "en-US",
            "client_state": client_state,
        }
        self._raise_for(self._command(call_control_id, "speak", body), "speak")

    def hang_up(self, call_control_id: str) -> bool:
        """True if we ended the call, False if it had already ended (422 / 90018)."""
        response = self._command(call_control_id, "hangup", {})
        if response.status_code == 422 and _ALREADY_ENDED in response.text:
            return False
        self._raise_for(response, "hangup")
        return True

    def dial(self, *, to: str, from_: str, stream_url: str, client_state: str) -> str:
        """Place an outbound call streaming to us once answered; returns its call_control_id."""
        if not settings.TELNYX_CONNECTION_ID:
            raise CallControlError("TELNYX_CONNECTION_ID is not set")
        body = {
            "connection_id": settings.TELNYX_CONNECTION_ID,
            "to": to,
            "from": from_,
            "client_state": client_state,
            **stream_fields(stream_url),
        }
        response = self._post("/calls", body)
        self._raise_for(response, "dial")
        try:
            return str(response.json()["data"]["call_control_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CallControlError(f"dial: unexpected response {response.text[:300]}") from exc
