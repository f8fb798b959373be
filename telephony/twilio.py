"""Twilio: Media Streams wire format, TwiML, request signatures and the REST calls we make.

Inbound socket messages become :mod:`telephony.wire` messages; session output (µ-law
frames, marks, clears) becomes Twilio JSON. See docs/telephony.md and PROTOCOLS.md §1.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from django.conf import settings
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from telephony import wire

logger = logging.getLogger(__name__)

CARRIER = "twilio"
# <Parameter> names carried from the TwiML into start.customParameters.
PARAM_CALL_ID = "call_id"
PARAM_TOKEN = "token"
_SAY_LANGUAGE = re.compile(r"^[a-z]{2}-[A-Z]{2}$")


# --- Media Streams socket -------------------------------------------------------------------


class TwilioStream:
    """One Media Streams socket: parses Twilio messages and writes ours with its streamSid."""

    carrier = CARRIER

    def __init__(self) -> None:
        self.stream_sid = ""

    def parse(self, text: str | None) -> list[wire.Inbound]:
        """One socket message -> the messages it yields (always one for Twilio)."""
        parsed = wire.dispatch(_PARSERS, wire.json_object(text))
        if isinstance(parsed, wire.Start):
            self.stream_sid = parsed.stream_id
        return [parsed]

    @staticmethod
    def token(start: wire.Start, path_kwargs: dict[str, Any]) -> str:
        return start.custom_parameters.get(PARAM_TOKEN, "")

    def media(self, ulaw: bytes) -> str:
        return _dump(
            {"event": "media", "streamSid": self.stream_sid, "media": {"payload": wire.b64(ulaw)}}
        )

    def mark(self, name: str) -> str:
        return _dump({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    def clear(self) -> str:
        return _dump({"event": "clear", "streamSid": self.stream_sid})

    @staticmethod
    def can_hang_up() -> bool:
        return bool(settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN)

    @staticmethod
    def hang_up(carrier_call_id: str) -> bool:
        return hang_up(carrier_call_id)


def _start(message: dict[str, Any]) -> wire.Start:
    start = wire.section(message, "start")
    stream_sid = start.get("streamSid") or message.get("streamSid")
    call_sid = start.get("callSid")
    if not isinstance(stream_sid, str) or not stream_sid or not isinstance(call_sid, str):
        raise wire.ProtocolError("start without streamSid/callSid")
    fmt = start.get("mediaFormat", {})
    if not isinstance(fmt, dict) or (
        fmt.get("encoding", "audio/x-mulaw"),
        str(fmt.get("sampleRate", 8000)),
    ) != ("audio/x-mulaw", "8000"):
        raise wire.ProtocolError(f"unsupported mediaFormat {fmt!r}; expected audio/x-mulaw 8000")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise wire.ProtocolError("customParameters is not an object")
    return wire.Start(
        stream_id=stream_sid,
        carrier_call_id=call_sid,
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


def _media(message: dict[str, Any]) -> wire.Inbound:
    media = wire.section(message, "media")
    if media.get("track", "inbound") not in ("inbound", "inbound_track"):
        return wire.Ignored(reason=f"{media.get('track')} track")
    return wire.Media(ulaw=wire.ulaw_payload(media))


def _mark(message: dict[str, Any]) -> wire.Mark:
    name = wire.section(message, "mark").get("name")
    if not isinstance(name, str):
        raise wire.ProtocolError("mark without a name")
    return wire.Mark(name=name)


_PARSERS = {
    "connected": lambda message: wire.Connected(),
    "start": _start,
    "media": _media,
    "mark": _mark,
    "dtmf": lambda message: wire.Dtmf(digit=wire.dtmf_digit(wire.section(message, "dtmf"))),
    "stop": lambda message: wire.Stop(),
}


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


# --- TwiML ----------------------------------------------------------------------------------


def connect_twiml(*, stream_url: str, call_id: str, token: str) -> str:
    """Bridge the call to our media socket; nothing after <Connect>, so closing it hangs up."""
    response = VoiceResponse()
    stream = response.connect().stream(url=stream_url)
    stream.parameter(name=PARAM_CALL_ID, value=call_id)
    stream.parameter(name=PARAM_TOKEN, value=token)
    return str(response)


def apology_twiml(*, text: str, language: str = "") -> str:
    response = VoiceResponse()
    if _SAY_LANGUAGE.match(language):
        response.say(text, language=language)
    else:
        response.say(text)
    response.hangup()
    return str(response)


def hangup_twiml() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


# --- Signatures -----------------------------------------------------------------------------


def signature_valid(url: str, params: Any, signature: str, *, algorithm: str | None = None) -> bool:
    """``X-Twilio-Signature`` over ``url`` (as configured at Twilio) and the POST params
    (a dict or Django ``QueryDict``; multi-valued params are signed sorted)."""
    if not settings.TWILIO_AUTH_TOKEN or not signature:
        return False
    validator = RequestValidator(settings.TWILIO_AUTH_TOKEN)
    return bool(validator.validate(url, params, signature, algorithm=algorithm))


# --- REST -----------------------------------------------------------------------------------


def client() -> Client:
    twilio = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN)
    if settings.TWILIO_API_BASE_URL:
        twilio.api.base_url = settings.TWILIO_API_BASE_URL
    return twilio


def hang_up(call_sid: str) -> bool:
    """Complete a call. True if we ended it, False if it had already ended (404).

    Blocking (the SDK uses ``requests``): call it through ``asyncio.to_thread`` on the loop.
    Raises ``TwilioRestException`` for any other failure.
    """
    try:
        client().calls(call_sid).update(status="completed")
    except TwilioRestException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def place_call(*, to: str, from_: str, twiml: str, status_callback: str) -> str:
    """Dial ``to`` and run ``twiml`` when answered; returns the CallSid (blocking)."""
    call = client().calls.create(
        to=to,
        from_=from_,
        twiml=twiml,
        status_callback=status_callback,
        status_callback_method="POST",
    )
    return str(call.sid)
