"""Twilio's wire: Media Streams messages, TwiML and request signatures.

Inbound socket messages become :mod:`telephony.wire` messages (caller audio decoded from
µ-law to PCM16 8 kHz); session output (PCM16 frames, marks, clears) becomes Twilio JSON
with µ-law payloads. See docs/telephony.md and docs/protocols.md §1.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from telephony import links, wire

logger = logging.getLogger(__name__)

CARRIER = "twilio"
# <Parameter> names carried from the TwiML into start.customParameters.
PARAM_CALL_ID = wire.PARAM_CALL_ID
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

    def media(self, pcm16: bytes) -> str:
        """A PCM16 8 kHz frame of the agent's voice, as Twilio plays it (µ-law)."""
        return self._message("media", media={"payload": wire.audio_out(pcm16)})

    def mark(self, name: str) -> str:
        return self._message("mark", mark={"name": name})

    def clear(self) -> str:
        return self._message("clear")

    def _message(self, event: str, **body: Any) -> str:
        return wire.dump({"event": event, "streamSid": self.stream_sid, **body})

    @staticmethod
    def log_upgrade(scope: dict[str, Any]) -> None:
        """Twilio may sign the upgrade; evidence conflicts (docs/protocols.md §1.5), so log only."""
        headers = dict(scope.get("headers") or [])
        signature = headers.get(b"x-twilio-signature", b"").decode("latin-1")
        if not signature:
            logger.info("twilio stream upgrade: no x-twilio-signature header")
            return
        url = links.ws_url(scope.get("path", links.TWILIO_STREAM_PATH))
        valid = signature_valid(url, {}, signature)
        logger.info(
            "twilio stream upgrade: x-twilio-signature %s over %s",
            "valid" if valid else "INVALID",
            url,
        )


def _start(message: dict[str, Any]) -> wire.Start:
    start = wire.section(message, "start")
    fmt = start.get("mediaFormat", {})
    mulaw = isinstance(fmt, dict) and (
        fmt.get("encoding", "audio/x-mulaw"),
        str(fmt.get("sampleRate", 8000)),
    ) == ("audio/x-mulaw", "8000")
    return wire.start(
        stream_id=start.get("streamSid") or message.get("streamSid"),
        carrier_call_id=start.get("callSid"),
        format_problem=None
        if mulaw
        else f"unsupported mediaFormat {fmt!r}; expected audio/x-mulaw 8000",
        params=start.get("customParameters") or {},
        names=("streamSid", "callSid", "customParameters"),
    )


def _media(message: dict[str, Any]) -> wire.Inbound:
    media = wire.section(message, "media")
    if not wire.inbound_track(media):
        return wire.Ignored(reason=f"{media.get('track')} track")
    return wire.Media(pcm16=wire.audio_in(wire.ulaw_payload(media)))


_PARSERS = {**wire.COMMON_PARSERS, "start": _start, "media": _media}


# --- TwiML ----------------------------------------------------------------------------------


def connect_twiml(*, stream_url: str, call_id: str, token: str) -> str:
    """Bridge the call to our media socket; nothing after <Connect>, so closing it hangs up."""
    response = VoiceResponse()
    stream = response.connect().stream(url=stream_url)
    stream.parameter(name=PARAM_CALL_ID, value=call_id)
    stream.parameter(name=PARAM_TOKEN, value=token)
    return str(response)


def transfer_twiml(*, destination: str, caller_id: str = "") -> str:
    """Hand the call to a person: ``<Dial>`` a number (``<Number>``) or a SIP URI (``<Sip>``).

    Nothing follows ``</Dial>``: when the person hangs up, or nobody answers, the call ends.
    ``caller_id`` empty: Twilio's default (on an inbound call, the caller's own number).
    """
    response = VoiceResponse()
    dial = response.dial(caller_id=caller_id) if caller_id else response.dial()
    if destination.startswith(("sip:", "sips:")):
        dial.sip(destination)
    else:
        dial.number(destination)
    return str(response)


def apology_twiml(*, text: str, language: str = "") -> str:
    response = VoiceResponse()
    if _SAY_LANGUAGE.match(language):
        response.say(text, language=language)
    else:
        response.say(text)
    response.hangup()
    return str(response)


def reject_twiml() -> str:
    """Refuse the call unanswered: the caller hears a busy tone, nothing is billed."""
    response = VoiceResponse()
    response.reject(reason="busy")
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
