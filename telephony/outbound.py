"""Outbound calls: the agent dials a number with a chosen profile (API and admin).

``POST /api/calls/outbound/`` is :func:`outbound_call`; the admin's form is in
``telephony/admin.py``.

The call record is created first (outbound, ringing) so the stream token can name it;
the carrier then gets the same stream instructions an inbound call gets (each carrier's
``rest.dial``: Twilio the ``<Connect><Stream>`` TwiML inline, Telnyx ``stream_url`` on the
dial command), plus answering-machine detection when the profile's ``voicemail_action`` is
not off (telephony/amd.py).
"""

from __future__ import annotations

import json
import logging
import re

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from calls import global_stop, selectors, services
from calls.auth import require_api_key
from calls.db_deadline import DatabaseUnavailable, run_with_deadline
from calls.models import AgentProfile, Call, CallStatus, EndReason
from live import admission
from telephony import carriers, tokens

logger = logging.getLogger(__name__)

# How long an outbound call holds its admission place while the callee's phone rings.
RINGING_RESERVE_S = 90.0

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class OutboundError(Exception):
    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def place_call(*, profile: AgentProfile, to: str, carrier: str = carriers.DEFAULT) -> Call:
    """Dial ``to``; returns the ringing call record. Raises :class:`OutboundError`."""
    if not E164.match(to):
        raise OutboundError("'to' must be an E.164 number such as +34600111222", status=400)
    chosen = carriers.get(carrier)
    if chosen is None:
        names = " or ".join(f"'{name}'" for name in carriers.CARRIERS)
        raise OutboundError(f"carrier must be {names}", status=400)
    if not global_stop.calls_allowed():
        raise OutboundError("calls are globally stopped; an operator must reset them", status=503)
    from_ = getattr(settings, chosen.rest.FROM_NUMBER_SETTING)
    missing = [name for name in chosen.rest.DIAL_SETTINGS if not getattr(settings, name)]
    if missing:
        raise OutboundError(f"{carrier} is not configured: set {', '.join(missing)}", status=503)

    call = services.call_start(
        profile=profile,
        channel=carrier,
        from_number=from_,
        to_number=to,
        direction="outbound",
        status=CallStatus.RINGING,
    )
    call_id = str(call.id)
    if (refused := admission.controller.host_refusal()) is not None:
        # Nothing is dialled from a process that could not serve the call; the record
        # shows the attempt, ended busy.
        admission.record_refusal(channel=carrier, refused=refused, call_id=call_id)
        services.call_end(
            call_id=call_id, reason=EndReason.BUSY, error=f"refused, process busy: {refused}"
        )
        raise OutboundError(
            f"all lines busy: this server is full ({refused}); try again later", status=503
        )
    # A place for its stream while the phone rings (carriers give up after ~60 s).
    admission.controller.reserve(call_id, ttl_s=RINGING_RESERVE_S)
    token = tokens.mint(call_id=call_id, carrier=carrier)
    try:
        external_id = chosen.rest.dial(
            to=to,
            from_=from_,
            call_id=call_id,
            token=token,
            # Answering-machine detection when the profile acts on machines (telephony/amd.py).
            voicemail_action=profile.voicemail_action,
        )
    except carriers.REST_ERRORS as exc:
        logger.error("outbound %s call to %s failed: %s", carrier, to, exc)
        admission.controller.unreserve(call_id)
        services.call_end(
            call_id=call_id, reason=EndReason.NOT_CONNECTED, error=f"dial failed: {exc}"
        )
        raise OutboundError(f"{carrier} refused the call: {exc}", status=502) from exc
    services.call_set_external_id(call_id=call_id, external_id=external_id)
    call.external_id = external_id
    logger.info("outbound %s call %s to %s placed (%s)", carrier, call_id, to, external_id)
    return call


@csrf_exempt
@require_POST
@require_api_key
def outbound_call(request: HttpRequest) -> JsonResponse:
    """``POST /api/calls/outbound/`` ``{"to": "+34...", "profile": "<slug>", "carrier": "twilio"}``
    with ``Authorization: Bearer <ADMIN_API_KEY>`` (compared in constant time by
    ``require_api_key``)."""
    try:
        body = json.loads(request.body or b"{}")
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except ValueError:
        return JsonResponse({"error": "the body must be a JSON object"}, status=400)
    to, slug, carrier = (
        body.get("to"),
        body.get("profile") or None,
        body.get("carrier") or carriers.DEFAULT,
    )
    if not isinstance(to, str) or not isinstance(carrier, str) or not isinstance(slug, str | None):
        return JsonResponse({"error": "'to', 'profile' and 'carrier' must be strings"}, status=400)
    try:
        profile = run_with_deadline(
            lambda: selectors.profile_get(slug=slug), what="outbound call profile"
        )
    except selectors.ProfileNotFound as exc:
        return JsonResponse({"error": str(exc)}, status=404)
    except DatabaseUnavailable as exc:
        logger.error("outbound call refused, database unavailable: %s", exc)
        return JsonResponse({"error": "the database is unavailable; try again"}, status=503)
    try:
        call = place_call(profile=profile, to=to, carrier=carrier)
    except OutboundError as exc:
        return JsonResponse({"error": str(exc)}, status=exc.status)
    return JsonResponse(
        {
            "call_id": str(call.id),
            "carrier": carrier,
            "external_id": call.external_id,
            "profile": profile.slug,
            "to": to,
            "status": call.status,
        },
        status=201,
    )
