"""Twilio's REST API, the calls we make: hang up, place an outbound call (blocking SDK)."""

from __future__ import annotations

from django.conf import settings
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from telephony import links
from telephony.twilio.wire import connect_twiml

ERRORS = (TwilioRestException,)


def client() -> Client:
    twilio = Client(settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN)
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


# What an outbound call needs set; the last is the number we call from.
FROM_NUMBER_SETTING = "TWILIO_FROM_NUMBER"
DIAL_SETTINGS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", FROM_NUMBER_SETTING)


def dial(*, to: str, from_: str, call_id: str, token: str) -> str:
    """Dial ``to``; once answered it streams to us like an inbound call. Returns the CallSid."""
    return place_call(
        to=to,
        from_=from_,
        twiml=connect_twiml(stream_url=links.twilio_stream_url(), call_id=call_id, token=token),
        status_callback=links.public_url(links.TWILIO_STATUS_PATH),
    )


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
