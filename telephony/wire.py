"""What a carrier media socket says, once parsed: the messages the consumer acts on.

``telephony/twilio/wire.py`` and ``telephony/telnyx/wire.py`` turn their own JSON into
these, and G.711 µ-law into PCM16 8 kHz (and back), so the consumer never looks at carrier
JSON or µ-law itself. Anything a carrier sends that cannot be understood raises
:class:`ProtocolError` with a reason fit for the log. The pieces both carriers share (JSON
framing, marks, DTMF, the µ-law payload) are here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.audio import pcm16_to_ulaw, ulaw_to_pcm16

# 2 s of 8 kHz µ-law. Carriers send 20 ms (160 B); anything this big is not audio we asked for.
MAX_MEDIA_BYTES = 16_000
MAX_MESSAGE_CHARS = 64_000
DTMF_DIGITS = frozenset("0123456789*#ABCD")
PHONE_RATE = 8000  # G.711 µ-law on both carriers: 8 kHz, one byte a sample
# A stream's custom parameter naming our call record (Twilio <Parameter>).
PARAM_CALL_ID = "call_id"


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

    @property
    def call_id(self) -> str | None:
        """The call record the stream names in its parameters, if it names one."""
        return self.custom_parameters.get(PARAM_CALL_ID)


@dataclass(slots=True, kw_only=True)
class Media:
    pcm16: bytes  # caller audio, PCM16 mono at PHONE_RATE (decoded from µ-law)


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


def start(
    *,
    stream_id: object,
    carrier_call_id: object,
    format_problem: str | None,
    params: object,
    names: tuple[str, str, str],
) -> Start:
    """A ``start`` from its parts, checked in this order: ids, media format, parameters.

    ``names``: the carrier's own names of the ids and the parameters, for the errors.
    """
    if not isinstance(stream_id, str) or not stream_id or not isinstance(carrier_call_id, str):
        raise ProtocolError(f"start without {names[0]}/{names[1]}")
    if format_problem is not None:
        raise ProtocolError(format_problem)
    if not isinstance(params, dict):
        raise ProtocolError(f"{names[2]} is not an object")
    return Start(
        stream_id=stream_id,
        carrier_call_id=carrier_call_id,
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


def mark(message: dict[str, Any]) -> Mark:
    name = section(message, "mark").get("name")
    if not isinstance(name, str):
        raise ProtocolError("mark without a name")
    return Mark(name=name)


# Events both carriers send alike; each adds its own start and media (and Telnyx, error).
COMMON_PARSERS: dict[str, Callable[[dict[str, Any]], Inbound]] = {
    "connected": lambda message: Connected(),
    "mark": mark,
    "dtmf": lambda message: Dtmf(digit=dtmf_digit(section(message, "dtmf"))),
    "stop": lambda message: Stop(),
}


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


def inbound_track(media: dict[str, Any]) -> bool:
    """Only the caller's side is ours to hear."""
    return media.get("track", "inbound") in ("inbound", "inbound_track")


def audio_in(ulaw: bytes) -> bytes:
    """Carrier µ-law -> PCM16 at PHONE_RATE: the one place caller audio is decoded."""
    return ulaw_to_pcm16(ulaw)


def audio_out(pcm16: bytes) -> str:
    """PCM16 at PHONE_RATE -> the base64 µ-law payload both carriers take."""
    return base64.b64encode(pcm16_to_ulaw(pcm16)).decode("ascii")


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))
