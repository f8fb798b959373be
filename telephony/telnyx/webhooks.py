"""Telnyx's signed Call Control webhook: one URL, a handler per event type.

See ``telephony/views.py`` for what every carrier webhook does alike.
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

from calls import global_stop, selectors, services
from calls.db_deadline import DatabaseUnavailable, run_with_deadline
from calls.models import AgentProfile, Call, CallStatus, Channel, EndReason, VoicemailAction
from live import admission
from orchestrator.config import DEFAULT_APOLOGY
from telephony import amd, links, tokens
from telephony.telnyx import rest, wire
from telephony.views import OPEN, end_call, forbidden, profile_for, refuse

logger = logging.getLogger(__name__)

# client_state modes of calls answered without a stream: "apology" has a call record (its
# profile's apology is spoken), "unavailable" had no database (CALL_UNAVAILABLE_MESSAGE is).
APOLOGY, UNAVAILABLE = "apology", "unavailable"
APOLOGY_MODES = (APOLOGY, UNAVAILABLE)


def _telnyx_call(payload: dict[str, Any]) -> Call | None:
    state = wire.read_client_state(payload.get("client_state"))
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
    api = rest.CallControl()
    try:
        opened = run_with_deadline(
            lambda: _telnyx_open_call(payload, control_id=control_id),
            what="telnyx call.initiated",
        )
    except DatabaseUnavailable as exc:
        # Without a record there is no stream to give; the caller still hears why
        # (call.answered in "unavailable" mode needs no database) instead of ringing out.
        logger.error("telnyx call %s refused, database unavailable: %s", control_id, exc)
        api.answer_plain(control_id, client_state=wire.client_state(call_id="", mode=UNAVAILABLE))
        return
    if opened is None:
        return  # a repeated delivery
    call, profile = opened
    call_id = str(call.id)
    try:
        if profile is None or not global_stop.calls_allowed():
            # Answer without a stream, say the apology, hang up on call.speak.ended.
            reason = EndReason.GLOBAL_STOP if profile is not None else EndReason.ERROR
            refuse(
                call=call, reason=reason, error="" if profile is not None else "no active profile"
            )
            api.answer_plain(
                control_id, client_state=wire.client_state(call_id=call_id, mode=APOLOGY)
            )
            return
        if (refused := admission.controller.host_refusal()) is not None:
            # This process is full: refused unanswered, the caller hears busy.
            admission.record_refusal(channel=Channel.TELNYX, refused=refused, call_id=call_id)
            refuse(call=call, reason=EndReason.BUSY, error=f"refused, process busy: {refused}")
            api.reject(control_id, cause="USER_BUSY")
            logger.info("telnyx call %s (%s) rejected: busy", call_id, control_id)
            return
        admission.controller.reserve(call_id)  # a place for its stream, which starts shortly
        token = tokens.mint(call_id=call_id, carrier=Channel.TELNYX)
        api.answer(
            control_id,
            stream_url=links.telnyx_stream_url(token),
            client_state=wire.client_state(call_id=call_id, mode="stream"),
        )
    except rest.CallControlError as exc:
        logger.error("telnyx answer of %s failed: %s", control_id, exc)
        admission.controller.unreserve(call_id)
        end_call(call_id=call_id, reason=EndReason.ERROR, error=f"answer failed: {exc}")
        return
    logger.info("telnyx call %s (%s) answered -> profile %s", call_id, control_id, profile.slug)


def _telnyx_open_call(
    payload: dict[str, Any], *, control_id: str
) -> tuple[Call, AgentProfile | None] | None:
    """A new ringing record for an incoming call, or None for a repeated delivery."""
    if _telnyx_call(payload) is not None:
        return None
    profile = profile_for(called=str(payload.get("to", "")), slug="")
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
    mode = wire.read_client_state(payload.get("client_state")).get("mode")
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
    rest.CallControl().speak(
        str(payload.get("call_control_id", "")),
        text=text,
        language=language,
        client_state=payload.get("client_state") or "",
    )


def _telnyx_speak_ended(payload: dict[str, Any]) -> None:
    if wire.read_client_state(payload.get("client_state")).get("mode") in APOLOGY_MODES:
        rest.CallControl().hang_up(str(payload.get("call_control_id", "")))


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
        rest.CallControl().hang_up(str(payload.get("call_control_id", "")))


def _telnyx_hangup(payload: dict[str, Any]) -> None:
    state = wire.read_client_state(payload.get("client_state"))
    if state.get("mode") == rest.TRANSFER_LEG:
        _telnyx_transfer_leg_ended(payload, state)
        return
    run_with_deadline(lambda: _telnyx_end_on_hangup(payload), what="telnyx call.hangup")


def _telnyx_transfer_leg_ended(payload: dict[str, Any], state: dict[str, str]) -> None:
    """The leg a transfer dialled is over: the person hung up, or never answered (busy,
    ``timeout_secs``, unreachable). The caller's leg is then hung up too: after a bridge
    Telnyx has done so already (90018, fine); without one it would stay up, parked and
    silent (our stream was stopped at the transfer). The record already says transferred."""
    caller_leg = state.get("caller_leg", "")
    cause = payload.get("hangup_cause")
    logger.info("telnyx transfer leg of call %s ended (%s)", state.get("call_id"), cause)
    if caller_leg and rest.CallControl().hang_up(caller_leg):
        logger.warning(
            "telnyx transfer of call %s not answered (%s): caller's leg hung up",
            state.get("call_id"),
            cause,
        )


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


# call.machine.* results -> the stored vocabulary of telephony/amd.py.
_DETECTION = {"human": "human", "machine": amd.MACHINE_START, "not_sure": "unknown"}
_GREETING_END = {
    "beep_detected": "machine_end_beep",
    "ended": "machine_end_silence",
    "not_sure": "machine_end_other",
}


def _telnyx_machine_detection(payload: dict[str, Any]) -> None:
    # Retries come out of order: a late detection must not replace the greeting's end.
    stored = _DETECTION.get(str(payload.get("result", "")), "unknown")
    _telnyx_store_answer(payload, stored, keep=amd.GREETING_OVER)


def _telnyx_machine_greeting_ended(payload: dict[str, Any]) -> None:
    stored = _GREETING_END.get(str(payload.get("result", "")), "machine_end_other")
    _telnyx_store_answer(payload, stored, keep=())


def _telnyx_store_answer(payload: dict[str, Any], stored: str, *, keep: tuple[str, ...]) -> None:
    """Store an answering-machine verdict, then hand it to the call's session (amd.py)."""

    def store() -> tuple[str, str] | None:
        call = _telnyx_call(payload)
        if call is None:
            return None
        services.call_set_answered_by(call_id=call.id, answered_by=stored, keep=keep)
        action = call.profile.voicemail_action if call.profile is not None else VoicemailAction.OFF
        return str(call.id), action

    found = run_with_deadline(store, what="telnyx call.machine")
    if found is None:
        logger.warning("telnyx AMD result for an unknown call ignored")
        return
    call_id, action = found
    amd.deliver(call_id, stored, action=action)


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
    "call.machine.detection.ended": _telnyx_machine_detection,
    "call.machine.greeting.ended": _telnyx_machine_greeting_ended,
}


@csrf_exempt
@require_POST
def telnyx_webhook(request: HttpRequest) -> HttpResponse:
    problem = wire.signature_problem(
        request.body,
        request.headers.get("telnyx-signature-ed25519", ""),
        request.headers.get("telnyx-timestamp", ""),
    )
    if problem is not None and (denied := forbidden("telnyx", problem)) is not None:
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
    except rest.CallControlError as exc:
        # Logged; a retry of this delivery would find the same state and do the same thing.
        logger.error("telnyx %s: Call Control command failed: %s", event_type, exc)
    except DatabaseUnavailable as exc:
        # Telnyx sends a delivery that got a non-2xx to the failover URL, when one is set;
        # handlers are idempotent, so a second delivery is safe.
        logger.error("telnyx %s not handled, database unavailable: %s", event_type, exc)
        return HttpResponse(status=503)
    return HttpResponse(status=204)
