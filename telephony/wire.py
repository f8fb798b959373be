"""What a carrier media socket says, once parsed: the messages the consumer acts on.

``telephony/twilio.py`` and ``telephony/telnyx.py`` turn their own JSON into these;
the consumer never looks at carrier JSON itself. Anything a carrier sends that cannot
be understood raises :class:`ProtocolError` with a reason fit for the log.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# 2 s of 8 kHz µ-law. Carriers send 20 ms (160 B); anything this big is not audio we asked for.
MAX_MEDIA_BYTES = 16_000
MAX_MESSAGE_CHARS = 64_000
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class ProtocolError(ValueError):
    """A message that breaks the carrier's protocol (bad JSON, missing field, bad payload).

    ``fatal`` ones (a ``start`` we cannot work with, e.g. another codec) end the stream;
    the others are logged and the message is ignored.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(slots=True, kw_only=True)
class Connected:
    pass


@dataclass(slots=True, kw_only=True)
class Start:
    stream_id: str
    carrier_call_id: str  # Twilio CallSid / Telnyx call_control_id
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class Media:
    ulaw: bytes  # 8 kHz G.711 µ-law


@dataclass(slots=True, kw_only=True)
class Dtmf:
    digit: str


@dataclass(slots=True, kw_only=True)
class Mark:
    name: str


@dataclass(slots=True, kw_only=True)
class Stop:
    pass


@dataclass(slots=True, kw_only=True)
class CarrierError:
    code: str
    detail: str


@dataclass(slots=True, kw_only=True)
class Ignored:
    """Valid but of no interest (e.g. an outbound-track frame, an unknown event)."""

    reason: str


Inbound = Connected | Start | Media | Dtmf | Mark | Stop | CarrierError | Ignored


def dispatch(
    parsers: dict[str, Callable[[dict[str, Any]], Inbound]], message: dict[str, Any]
) -> Inbound:
    """Parse ``message`` with the parser of its ``event``; a bad ``start`` is fatal."""
    event = message.get("event")
    parse = parsers.get(event) if isinstance(event, str) else None
    if parse is None:
        return Ignored(reason=f"unknown event {event!r}")
    try:
        return parse(message)
    except ProtocolError as exc:
        if event == "start" and not exc.fatal:
            raise ProtocolError(str(exc), fatal=True) from None
        raise


def json_object(text: str | None) -> dict[str, Any]:
    if text is None:
        raise ProtocolError("binary frame; carriers send JSON text")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"message of {len(text)} chars exceeds the limit")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc.msg}") from None
    if not isinstance(message, dict):
        raise ProtocolError("message is not a JSON object")
    return message


def section(message: dict[str, Any], name: str) -> dict[str, Any]:
    value = message.get(name)
    if not isinstance(value, dict):
        raise ProtocolError(f"{message.get('event')!r} message without a {name!r} object")
    return value


def ulaw_payload(media: dict[str, Any]) -> bytes:
    payload = media.get("payload")
    if not isinstance(payload, str) or not payload:
        raise ProtocolError("media without a payload string")
    if len(payload) > MAX_MEDIA_BYTES * 4 // 3 + 4:
        raise ProtocolError(f"media payload of {len(payload)} base64 chars is too large")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("media payload is not base64") from None
    if not audio:
        raise ProtocolError("empty media payload")
    return audio


def dtmf_digit(dtmf: dict[str, Any]) -> str:
    digit = dtmf.get("digit")
    if not isinstance(digit, str) or digit.upper() not in DTMF_DIGITS:
        raise ProtocolError(f"bad DTMF digit {digit!r}")
    return digit.upper()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
