"""Telnyx's wire: media-streaming messages, webhook signatures and ``client_state``.

Inbound socket messages become :mod:`telephony.wire` messages (media reordered by
``chunk``: Telnyx does not guarantee order, then decoded from µ-law to PCM16 8 kHz);
session output becomes Telnyx JSON with µ-law payloads for a
``stream_bidirectional_mode=rtp`` / ``PCMU`` stream. See docs/telephony.md and
docs/protocols.md §2.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any

from django.conf import settings
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from telephony import wire

logger = logging.getLogger(__name__)

CARRIER = "telnyx"
SIGNATURE_TOLERANCE_S = 300
REORDER_DEPTH = 4  # frames held waiting for a late one (80 ms at 20 ms a frame)
_ENCODINGS = {"PCMU", "audio/x-mulaw"}


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
        if not wire.inbound_track(media):
            return [wire.Ignored(reason=f"{media.get('track')} track")]
        payload = wire.ulaw_payload(media)
        try:
            chunk = int(media["chunk"]) if "chunk" in media else None
        except (TypeError, ValueError):
            raise wire.ProtocolError(f"bad media chunk {media.get('chunk')!r}") from None
        return [
            wire.Media(pcm16=wire.audio_in(frame)) for frame in self.reorderer.push(chunk, payload)
        ]

    @staticmethod
    def token(start: wire.Start, path_kwargs: dict[str, Any]) -> str:
        return str(path_kwargs.get("secret", ""))

    def media(self, pcm16: bytes) -> str:
        """A PCM16 8 kHz frame of the agent's voice, as Telnyx plays it (PCMU)."""
        return wire.dump({"event": "media", "media": {"payload": wire.audio_out(pcm16)}})

    def mark(self, name: str) -> str:
        return wire.dump({"event": "mark", "mark": {"name": name}})

    def clear(self) -> str:
        return wire.dump({"event": "clear"})

    @staticmethod
    def log_upgrade(scope: dict[str, Any]) -> None:
        """Telnyx does not sign the upgrade: the secret in the path is checked on start."""


def _start(message: dict[str, Any]) -> wire.Start:
    start = wire.section(message, "start")
    fmt = start.get("media_format", {})
    pcmu = (
        isinstance(fmt, dict)
        and fmt.get("encoding", "PCMU") in _ENCODINGS
        and str(fmt.get("sample_rate", 8000)) == "8000"
    )
    return wire.start(
        stream_id=message.get("stream_id") or start.get("stream_id"),
        carrier_call_id=start.get("call_control_id"),
        format_problem=None if pcmu else f"unsupported media_format {fmt!r}; expected PCMU 8000",
        params=start.get("custom_parameters") or {},
        names=("stream_id", "call_control_id", "custom_parameters"),
    )


def _error(message: dict[str, Any]) -> wire.CarrierError:
    payload = message.get("payload") if isinstance(message.get("payload"), dict) else {}
    return wire.CarrierError(
        code=str(payload.get("code", "")),
        detail=f"{payload.get('title', '')}: {payload.get('detail', '')}".strip(": "),
    )


# "media" is stateful (reordering) and handled by TelnyxStream._media.
_PARSERS = {**wire.COMMON_PARSERS, "start": _start, "error": _error}


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


def client_state(*, call_id: str, mode: str, **extra: str) -> str:
    state = {"call_id": call_id, "mode": mode, **extra}
    return base64.b64encode(json.dumps(state).encode()).decode()


def read_client_state(value: object) -> dict[str, str]:
    if not isinstance(value, str) or not value:
        return {}
    try:
        data = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return {}
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
