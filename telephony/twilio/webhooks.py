"""Twilio's signed webhooks: the voice webhook (a call comes in), the status callback and
the answering-machine detection callback of outbound calls.

See ``telephony/views.py`` for what every carrier webhook does alike.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import get_signature_algorithm

from calls import global_stop, selectors, services
from calls.db_deadline import DatabaseUnavailable, run_with_deadline
from calls.models import AgentProfile, Call, CallStatus, Channel, EndReason, VoicemailAction
from live import admission
from orchestrator.config import DEFAULT_APOLOGY
from telephony import amd, links, tokens
from telephony.twilio import wire
from telephony.views import OPEN, forbidden, profile_for, refuse

logger = logging.getLogger(__name__)


def _twilio_denied(request: HttpRequest) -> HttpResponse | None:
    # Signed over the URL configured at Twilio (public base + path + query), not the URL a
    # proxy or tunnel handed us.
    url = links.public_url(request.get_full_path_info())
    signature = request.headers.get("X-Twilio-Signature", "")
    algorithm = get_signature_algorithm(
        request.headers.get("X-Twilio-Webhooks-Signature-Settings", "")
    )
    if not signature:
        return forbidden("twilio", "missing X-Twilio-Signature")
    if not settings.TWILIO_AUTH_TOKEN:
        return forbidden("twilio", "TWILIO_AUTH_TOKEN is not set")
    if not wire.signature_valid(url, request.POST, signature, algorithm=algorithm):
        return forbidden("twilio", f"bad X-Twilio-Signature for {url}")
    return None


def _twiml(xml: str) -> HttpResponse:
    return HttpResponse(xml, content_type="text/xml")


def _twilio_open_call(
    params: dict[str, str], *, slug: str
) -> tuple[Call, AgentProfile | None] | None:
    """The call record of this delivery (created on the first), or None if it is over."""
    call_sid = params.get("CallSid", "")
    existing = selectors.call_by_external_id(channel=Channel.TWILIO, external_id=call_sid)
    if existing is not None:
        return (existing, existing.profile) if existing.status in OPEN else None
    profile = profile_for(called=params.get("To", ""), slug=slug)
    call = services.call_start(
        profile=profile,
        channel=Channel.TWILIO,
        external_id=call_sid,
        from_number=params.get("From", "")[:40],
        to_number=params.get("To", "")[:40],
        direction="inbound" if params.get("Direction", "inbound") == "inbound" else "outbound",
        status=CallStatus.RINGING,
    )
    return call, profile


@csrf_exempt
@require_POST
def twilio_voice(request: HttpRequest) -> HttpResponse:
    """A call came in: bridge it to our media socket (or apologise and hang up)."""
    if (denied := _twilio_denied(request)) is not None:
        return denied
    params, slug = request.POST.dict(), request.GET.get("profile", "")
    try:
        opened = run_with_deadline(
            lambda: _twilio_open_call(params, slug=slug), what="twilio voice webhook"
        )
    except DatabaseUnavailable as exc:
        logger.error("twilio call %s refused, database unavailable: %s", params.get("CallSid"), exc)
        return _twiml(wire.apology_twiml(text=settings.CALL_UNAVAILABLE_MESSAGE))
    if opened is None:
        return _twiml(wire.hangup_twiml())  # a retry for a call that is already over
    call, profile = opened
    call_sid = call.external_id
    apology = profile.apology_message if profile is not None else DEFAULT_APOLOGY
    language = profile.language if profile is not None else ""
    if not global_stop.calls_allowed():
        refuse(call=call, reason=EndReason.GLOBAL_STOP)
        return _twiml(wire.apology_twiml(text=apology, language=language))
    if profile is None:
        refuse(call=call, reason=EndReason.ERROR, error="no active profile")
        return _twiml(wire.apology_twiml(text=apology, language=language))
    if (refused := admission.controller.host_refusal()) is not None:
        # This process is full: a busy tone, and Twilio may try the call elsewhere (the
        # load balancer already keeps full processes out through /health/ready/).
        admission.record_refusal(channel=Channel.TWILIO, refused=refused, call_id=call.id)
        refuse(call=call, reason=EndReason.BUSY, error=f"refused, process busy: {refused}")
        if profile.busy_message:  # the profile prefers a spoken "all our lines are busy"
            return _twiml(wire.apology_twiml(text=profile.busy_message, language=language))
        return _twiml(wire.reject_twiml())
    admission.controller.reserve(call.id)  # a place for its stream, which starts shortly
    token = tokens.mint(call_id=call.id, carrier=Channel.TWILIO)
    logger.info("twilio call %s (%s) -> profile %s", call.id, call_sid, profile.slug)
    return _twiml(
        wire.connect_twiml(stream_url=links.twilio_stream_url(), call_id=str(call.id), token=token)
    )


def _twilio_not_connected(call: Call, params: dict[str, str]) -> None:
    services.call_end(
        call_id=call.id, reason=EndReason.NOT_CONNECTED, error=f"twilio: {params.get('CallStatus')}"
    )


def _twilio_completed(call: Call, params: dict[str, str]) -> None:
    # A call with a live stream is ended by its session (which knows who hung up); only
    # one that never got its stream is ended here.
    if call.status == CallStatus.RINGING:
        reason = (
            EndReason.NOT_CONNECTED if call.direction == "outbound" else EndReason.CALLER_HANGUP
        )
        services.call_end(
            call_id=call.id, reason=reason, error="call completed before its stream started"
        )


TWILIO_STATUS_HANDLERS: dict[str, Callable[[Call, dict[str, str]], None]] = {
    "completed": _twilio_completed,
    "busy": _twilio_not_connected,
    "no-answer": _twilio_not_connected,
    "failed": _twilio_not_connected,
    "canceled": _twilio_not_connected,
}


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    """Call status callback (set on outbound calls; optional on numbers)."""
    if (denied := _twilio_denied(request)) is not None:
        return denied
    params = request.POST.dict()
    handler = TWILIO_STATUS_HANDLERS.get(params.get("CallStatus", ""))
    if handler is None:
        return HttpResponse(status=204)

    def handle() -> None:
        call = selectors.call_by_external_id(
            channel=Channel.TWILIO, external_id=params.get("CallSid", "")
        )
        if call is not None:
            handler(call, params)

    try:
        run_with_deadline(handle, what="twilio status callback")
    except DatabaseUnavailable as exc:
        # Twilio does not retry status callbacks: the session or the orphan sweeper ends
        # the call; the 503 shows in Twilio's debugger.
        logger.error("twilio status %s not applied: %s", params.get("CallSid"), exc)
        return HttpResponse(status=503)
    return HttpResponse(status=204)


# AnsweredBy values we store as they are (telephony/amd.py); anything else is "unknown".
_ANSWERED_BY = ("human", "fax", "unknown", amd.MACHINE_START, *amd.GREETING_OVER)


def _twilio_amd_call(call_id: str, call_sid: str) -> Call | None:
    """The call the callback URL names (signed with it), if it is that Twilio call."""
    try:
        call = selectors.call_get(call_id=uuid.UUID(call_id))
    except ValueError:
        call = None
    if call is None:
        call = selectors.call_by_external_id(channel=Channel.TWILIO, external_id=call_sid)
    if call is None or call.channel != Channel.TWILIO:
        return None
    if call.external_id and call_sid and call.external_id != call_sid:
        return None
    return call


@csrf_exempt
@require_POST
def twilio_amd(request: HttpRequest) -> HttpResponse:
    """``AsyncAmdStatusCallback`` of an outbound call (``?call_id=<uuid>``): who answered.

    Stored on the call record, then handed to its session (telephony/amd.py)."""
    if (denied := _twilio_denied(request)) is not None:
        return denied
    params = request.POST.dict()
    answered_by = params.get("AnsweredBy", "")
    stored = answered_by if answered_by in _ANSWERED_BY else "unknown"

    def store() -> tuple[str, str] | None:
        call = _twilio_amd_call(request.GET.get("call_id", ""), params.get("CallSid", ""))
        if call is None:
            return None
        # Twilio sends one AMD result per call, so the last one stored is the one.
        services.call_set_answered_by(call_id=call.id, answered_by=stored)
        action = call.profile.voicemail_action if call.profile is not None else VoicemailAction.OFF
        return str(call.id), action

    try:
        found = run_with_deadline(store, what="twilio AMD callback")
    except DatabaseUnavailable as exc:
        # Not retried by Twilio: the session's wait ends by itself (answer_wait_s).
        logger.error("twilio AMD %s not stored: %s", params.get("CallSid"), exc)
        return HttpResponse(status=503)
    if found is None:
        logger.warning("twilio AMD callback for an unknown call %s ignored", params.get("CallSid"))
        return HttpResponse(status=204)
    call_id, action = found
    amd.deliver(call_id, stored, action=action)
    return HttpResponse(status=204)
