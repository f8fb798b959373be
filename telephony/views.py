"""What the carriers' webhooks share (``telephony/<carrier>/webhooks.py``).

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

import logging

from django.conf import settings
from django.http import HttpResponse

from calls import selectors, services
from calls.db_deadline import DatabaseUnavailable, run_with_deadline
from calls.models import AgentProfile, Call, CallStatus

logger = logging.getLogger(__name__)

OPEN = (CallStatus.RINGING, CallStatus.ACTIVE)


def forbidden(carrier: str, reason: str) -> HttpResponse | None:
    if settings.TELEPHONY_ALLOW_UNSIGNED:
        logger.warning(
            "%s webhook: %s; accepted because TELEPHONY_ALLOW_UNSIGNED=true", carrier, reason
        )
        return None
    logger.warning("%s webhook rejected: %s", carrier, reason)
    return HttpResponse(f"forbidden: {reason}", status=403, content_type="text/plain")


def profile_for(*, called: str, slug: str) -> AgentProfile | None:
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


def refuse(*, call: Call, reason: str, error: str = "") -> None:
    end_call(call_id=call.id, reason=reason, error=error)


def end_call(*, call_id: object, reason: str, error: str = "") -> None:
    """End a call we are refusing anyway; without a database the orphan sweeper ends it later."""
    try:
        run_with_deadline(
            lambda: services.call_end(call_id=call_id, reason=reason, error=error),
            what=f"ending call {call_id}",
        )
    except DatabaseUnavailable as exc:
        logger.error("call %s could not be ended (%s): %s", call_id, reason, exc)
