"""Carrier webhooks.

Every webhook: ``csrf_exempt`` + ``require_POST``, signature first (403 with a logged
reason unless ``TELEPHONY_ALLOW_UNSIGNED=true``), then a handler picked from a dict by
event type. Handlers are idempotent: carriers retry deliveries, and a repeated event
finds the call record already in the state it would have put it in.

Database work runs through :func:`calls.db_deadline.run_with_deadline`, so a database that
is down or hung costs a webhook at most ``DB_REQUEST_TIMEOUT_SECONDS``: a Twilio caller then
hears ``CALL_UNAVAILABLE_MESSAGE`` and is hung up, a Telnyx caller is answered, hears it and
is hung up, and other Telnyx events get a 503 (Telnyx sends a non-2xx delivery to the
application's failover URL, when one is set). Carrier REST calls stay outside the deadline:
they have their own timeouts.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import get_signature_algorithm

from calls import global_stop, selectors, services
from calls.db_deadline import DatabaseUnavailable, run_with_deadline
from calls.models import AgentProfile, Call, CallStatus, Channel, EndReason
from orchestrator.config import DEFAULT_APOLOGY
from telephony import links, telnyx, tokens, twilio

logger = logging.getLogger(__name__)

OPEN = (CallStatus.RINGING, CallStatus.ACTIVE)

# client_state modes of calls answered without a stream: "apology" has a call record (its
# profile's apology is spoken), "unavailable" had no database (CALL_UNAVAILABLE_MESSAGE is).
APOLOGY, UNAVAILABLE = "apology", "unavailable"
APOLOGY_MODES = (APOLOGY, UNAVAILABLE)


def _forbidden(carrier: str, reason: str) -> HttpResponse | None:
    if settings.TELEPHONY_ALLOW_UNSIGNED:
        logger.warning(
            "%s webhook: %s; accepted because TELEPHONY_ALLOW_UNSIGNED=true", carrier, reason
        )
        return None
    logger.warning("%s webhook rejected: %s", carrier, reason)
    return HttpResponse(f"forbidden: {reason}", status=403, content_type="text/plain")


def _profile_for(*, called: str, slug: str) -> AgentProfile | None:
    """By the called number, else ``?profile=<slug>``, else the default profile."""
    profile = selectors.profile_for_number(number=called)
    if profile is not None:
        return profile
    if slug:
        try:
            return selectors.profile_get(slug=slug)
        except selectors.ProfileNotFound:
            logger.warning("webhook names unknown profile %r; using the default", slug)
    try:
        return selectors.profile_get(slug=None)
    except selectors.ProfileNotFound:
        return None


def _refuse(*, call: Call, reason: str, error: str = "") -> None:
    _end_call(call_id=call.id, reason=reason, error=error)


def _end_call(*, call_id: object, reason: str, error: str = "") -> None:
    """End a call we are refusing anyway; without a database the orphan sweeper ends it later."""
    try:
        run_with_deadline(
            lambda: services.call_end(call_id=call_id, reason=reason, error=error),
            what=f"ending call {call_id}",
        )
    except DatabaseUnavailable as exc:
        logger.error("call %s could not be ended (%s): %s", call_id, reason, exc)


# --- Twilio -------------------------------------------------------------------------------------


def _twilio_denied(request: HttpRequest) -> HttpResponse | None:
    # Signed over the URL configured at Twilio (public base + path + query), not the URL a
    # proxy or tunnel handed us.
    url = links.public_url(request.get_full_path_info())
    signature = request.headers.get("X-Twilio-Signature", "")
    algorithm = get_signature_algorithm(
        request.headers.get("X-Twilio-Webhooks-Signature-Settings", "")
    )
    if not signature:
        return _forbidden("twilio", "missing X-Twilio-Signature")
    if not settings.TWILIO_AUTH_TOKEN:
        return _forbidden("twilio", "TWILIO_AUTH_TOKEN is not set")
    if not twilio.signature_valid(url, request.POST, signature, algorithm=algorithm):
        return _forbidden("twilio", f"bad X-Twilio-Signature for {url}")
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
    profile = _profile_for(called=params.get("To", ""), slug=slug)
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
        return _twiml(twilio.apology_twiml(text=settings.CALL_UNAVAILABLE_MESSAGE))
    if opened is None:
        return _twiml(twilio.hangup_twiml())  # a retry for a call that is already over
    call, profile = opened
    call_sid = call.external_id
    apology = profile.apology_message if profile is not None else DEFAULT_APOLOGY
    language = profile.language if profile is not None else ""
    if not global_stop.calls_allowed():
        _refuse(call=call, reason=EndReason.GLOBAL_STOP)
        return _twiml(twilio.apology_twiml(text=apology, language=language))
    if profile is None:
        _refuse(call=call, reason=EndReason.ERROR, error="no active profile")
        return _twiml(twilio.apology_twiml(text=apology, language=language))
    token = tokens.mint(call_id=call.id, carrier=Channel.TWILIO)
    logger.info("twilio call %s (%s) -> profile %s", call.id, call_sid, profile.slug)
    return _twiml(
        twilio.connect_twiml(
            stream_url=links.twilio_stream_url(), call_id=str(call.id), token=token
        )
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


# --- Telnyx -------------------------------------------------------------------------------------


def _telnyx_call(payload: dict[str, Any]) -> Call | None:
    state = telnyx.read_client_state(payload.get("client_state"))
    if state.get("call_id"):
        call = selectors.call_get(call_id=state["call_id"]) if _is_uuid(state["call_id"]) else None
        if call is not None and call.channel == Channel.TELNYX:
            return call
    return selectors.call_by_external_id(
        channel=Channel.TELNYX, external_id=str(payload.get("call_control_id", ""))
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _telnyx_initiated(payload: dict[str, Any]) -> None:
    if payload.get("direction") != "incoming":
        return  # our own outbound call: its record exists and the dial carried the stream
    control_id = str(payload.get("call_control_id", ""))
    if not control_id:
        return
    api = telnyx.CallControl()
    try:
        opened = run_with_deadline(
            lambda: _telnyx_open_call(payload, control_id=control_id),
            what="telnyx call.initiated",
        )
    except DatabaseUnavailable as exc:
        # Without a record there is no stream to give; the caller still hears why
        # (call.answered in "unavailable" mode needs no database) instead of ringing out.
        logger.error("telnyx call %s refused, database unavailable: %s", control_id, exc)
        api.answer_plain(control_id, client_state=telnyx.client_state(call_id="", mode=UNAVAILABLE))
        return
    if opened is None:
        return  # a repeated delivery
    call, profile = opened
    call_id = str(call.id)
    try:
        if profile is None or not global_stop.calls_allowed():
            # Answer without a stream, say the apology, hang up on call.speak.ended.
            reason = EndReason.GLOBAL_STOP if profile is not None else EndReason.ERROR
            _refuse(
                call=call, reason=reason, error="" if profile is not None else "no active profile"
            )
            api.answer_plain(
                control_id, client_state=telnyx.client_state(call_id=call_id, mode=APOLOGY)
            )
            return
        token = tokens.mint(call_id=call_id, carrier=Channel.TELNYX)
        api.answer(
            control_id,
            stream_url=links.telnyx_stream_url(token),
            client_state=telnyx.client_state(call_id=call_id, mode="stream"),
        )
    except telnyx.CallControlError as exc:
        logger.error("telnyx answer of %s failed: %s", control_id, exc)
        _end_call(call_id=call_id, reason=EndReason.ERROR, error=f"answer failed: {exc}")
        return
    logger.info("telnyx call %s (%s) answered -> profile %s", call_id, control_id, profile.slug)


def _telnyx_open_call(
    payload: dict[str, Any], *, control_id: str
) -> tuple[Call, AgentProfile | None] | None:
    """A new ringing record for an incoming call, or None for a repeated delivery."""
    if _telnyx_call(payload) is not None:
        return None
    profile = _profile_for(called=str(payload.get("to", "")), slug="")
    call = services.call_start(
        profile=profile,
        channel=Channel.TELNYX,
        external_id=control_id,
        from_number=str(payload.get("from", ""))[:40],
        to_number=str(payload.get("to", ""))[:40],
        status=CallStatus.RINGING,
    )
    return call, profile


def _telnyx_answered(payload: dict[str, Any]) -> None:
    mode = telnyx.read_client_state(payload.get("client_state")).get("mode")
    if mode not in APOLOGY_MODES:
        return  # streamed calls start when the media socket says start
    text, language = settings.CALL_UNAVAILABLE_MESSAGE, ""
    if mode == APOLOGY:
        try:
            call = run_with_deadline(lambda: _telnyx_call(payload), what="telnyx call.answered")
        except DatabaseUnavailable as exc:
            logger.error("telnyx apology without its profile, database unavailable: %s", exc)
        else:
            profile = call.profile if call is not None else None
            text = profile.apology_message if profile is not None else DEFAULT_APOLOGY
            language = profile.language if profile is not None else ""
    telnyx.CallControl().speak(
        str(payload.get("call_control_id", "")),
        text=text,
        language=language,
        client_state=payload.get("client_state") or "",
    )


def _telnyx_speak_ended(payload: dict[str, Any]) -> None:
    if telnyx.read_client_state(payload.get("client_state")).get("mode") in APOLOGY_MODES:
        telnyx.CallControl().hang_up(str(payload.get("call_control_id", "")))


def _telnyx_streaming_failed(payload: dict[str, Any]) -> None:
    def end_if_open() -> bool:
        call = _telnyx_call(payload)
        if call is None or call.status not in OPEN:
            return False
        return services.call_end(
            call_id=call.id,
            reason=EndReason.ERROR,
            error=f"telnyx streaming failed: {payload.get('failure_reason', '')}",
        )

    if run_with_deadline(end_if_open, what="telnyx streaming.failed"):
        telnyx.CallControl().hang_up(str(payload.get("call_control_id", "")))


def _telnyx_hangup(payload: dict[str, Any]) -> None:
    run_with_deadline(lambda: _telnyx_end_on_hangup(payload), what="telnyx call.hangup")


def _telnyx_end_on_hangup(payload: dict[str, Any]) -> None:
    call = _telnyx_call(payload)
    if call is None or call.status not in OPEN:
        return  # unknown or already ended (repeated delivery, or the session ended it first)
    cause = str(payload.get("hangup_cause", ""))
    if cause == "time_limit":
        reason = EndReason.MAX_DURATION
    elif call.status == CallStatus.RINGING and call.direction == "outbound":
        reason = EndReason.NOT_CONNECTED
    else:
        reason = EndReason.CALLER_HANGUP
    services.call_end(
        call_id=call.id,
        reason=reason,
        error="" if reason == EndReason.CALLER_HANGUP else f"telnyx: {cause}",
    )


def _telnyx_log(payload: dict[str, Any]) -> None:
    # The media socket's own start/stop drive the call; these only confirm it.
    logger.info(
        "telnyx streaming event for %s (%s)",
        payload.get("call_control_id"),
        payload.get("stream_url"),
    )


TELNYX_HANDLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "call.initiated": _telnyx_initiated,
    "call.answered": _telnyx_answered,
    "call.speak.ended": _telnyx_speak_ended,
    "streaming.started": _telnyx_log,
    "streaming.stopped": _telnyx_log,
    "streaming.failed": _telnyx_streaming_failed,
    "call.hangup": _telnyx_hangup,
}


@csrf_exempt
@require_POST
def telnyx_webhook(request: HttpRequest) -> HttpResponse:
    problem = telnyx.signature_problem(
        request.body,
        request.headers.get("telnyx-signature-ed25519", ""),
        request.headers.get("telnyx-timestamp", ""),
    )
    if problem is not None and (denied := _forbidden("telnyx", problem)) is not None:
        return denied
    try:
        data = json.loads(request.body)["data"]
        event_type = str(data["event_type"])
        payload = data.get("payload") or {}
        if not isinstance(payload, dict):
            raise TypeError("payload is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("telnyx webhook: malformed body ignored (%r)", exc)
        return HttpResponse(status=400)
    handler = TELNYX_HANDLERS.get(event_type)
    if handler is None:
        logger.info("telnyx webhook: %s ignored", event_type)
        return HttpResponse(status=204)
    try:
        handler(payload)
    except telnyx.CallControlError as exc:
        # Logged; a retry of this delivery would find the same state and do the same thing.
        logger.error("telnyx %s: Call Control command failed: %s", event_type, exc)
    except DatabaseUnavailable as exc:
        # Telnyx sends a delivery that got a non-2xx to the failover URL, when one is set;
        # handlers are idempotent, so a second delivery is safe.
        logger.error("telnyx %s not handled, database unavailable: %s", event_type, exc)
        return HttpResponse(status=503)
    return HttpResponse(status=204)
