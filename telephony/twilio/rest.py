"""Twilio's REST API, the calls we make: hang up, transfer, place an outbound call (with
answering-machine detection) — blocking SDK, so the consumer runs them in a thread."""

from __future__ import annotations

from django.conf import settings
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from calls.models import VoicemailAction
from telephony import links
from telephony.twilio.wire import connect_twiml, transfer_twiml

ERRORS = (TwilioRestException,)
# MachineDetection per profile action: to hang up, the first sign of a machine is enough
# (AnsweredBy machine_start); to leave a message, wait for the end of its greeting
# (machine_end_beep / _silence / _other), so the message is not spoken over it.
_MACHINE_DETECTION = {
    VoicemailAction.HANG_UP: "Enable",
    VoicemailAction.LEAVE_MESSAGE: "DetectMessageEnd",
}


def client(*, timeout_s: float | None = None) -> Client:
    # timeout_s bounds each HTTP request in the worker thread itself, so a request that
    # outlives the caller's wait cannot still take effect much later.
    http = TwilioHttpClient(timeout=timeout_s) if timeout_s is not None else None
    twilio = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, http_client=http)
    if settings.TWILIO_API_BASE_URL:
        twilio.api.base_url = settings.TWILIO_API_BASE_URL
    return twilio


def can_hang_up() -> bool:
    return bool(settings.TWILIO_ACCOUNT_SID and settings.TWILIO_AUTH_TOKEN)


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


def transfer(
    call_sid: str, destination: str, *, call_id: str = "", caller_id: str = "", timeout_s: float
) -> None:
    """Cold transfer: replace the call's TwiML (our ``<Connect><Stream>``) with a ``<Dial>``.

    Twilio then ends the media stream itself (a ``stop`` on the socket) and dials
    ``destination`` (E.164 or SIP URI). Raises ``TwilioRestException`` (e.g. 404: the call
    is over) or a network error; blocking, like every call here. ``call_id`` (our record)
    is not needed: Twilio reports nothing about the transfer that we act on.
    """
    client(timeout_s=timeout_s).calls(call_sid).update(
        twiml=transfer_twiml(destination=destination, caller_id=caller_id)
    )


def release_stream(call_sid: str) -> None:
    """After a transfer: nothing to do, the new TwiML already ended ``<Connect><Stream>``."""


# What an outbound call needs set; the last is the number we call from.
FROM_NUMBER_SETTING = "TWILIO_FROM_NUMBER"
DIAL_SETTINGS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", FROM_NUMBER_SETTING)


def dial(*, to: str, from_: str, call_id: str, token: str, voicemail_action: str) -> str:
    """Dial ``to``; once answered it streams to us like an inbound call. Returns the CallSid.

    Unless ``voicemail_action`` is off, Twilio also runs answering-machine detection in the
    background (``AsyncAmd``: the stream starts at once) and posts its ``AnsweredBy`` to
    our signed AMD webhook, which names the call record."""
    machine_detection = _MACHINE_DETECTION.get(voicemail_action)
    amd = (
        {
            "machine_detection": machine_detection,
            "async_amd": "true",
            "async_amd_status_callback": links.public_url(links.twilio_amd_path(call_id)),
            "async_amd_status_callback_method": "POST",
        }
        if machine_detection
        else {}
    )
    call = client().calls.create(
        to=to,
        from_=from_,
        twiml=connect_twiml(stream_url=links.twilio_stream_url(), call_id=call_id, token=token),
        status_callback=links.public_url(links.TWILIO_STATUS_PATH),
        status_callback_method="POST",
        **amd,
    )
    return str(call.sid)
