"""Outgoing per-profile webhook: the call, its transcript and its analysis, signed.

Header ``X-Voiceapp-Signature: sha256=<hex HMAC-SHA256(webhook_secret, raw body)>``, plus
``X-Voiceapp-Event: call.analyzed``. Retried with backoff by the Celery task.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

import httpx

from calls import selectors, services
from calls.models import Call, Turn

logger = logging.getLogger(__name__)


class WebhookDeliveryError(Exception):
    pass


def wanted(call: Call | None) -> bool:
    """Whether ``call``'s profile asks for the webhook."""
    return call is not None and call.profile is not None and bool(call.profile.webhook_url)


def payload_for(call: Call) -> dict[str, Any]:
    return {
        "event": "call.analyzed",
        "call": {
            "id": str(call.pk),
            "profile": call.profile.slug if call.profile else None,
            "channel": call.channel,
            "direction": call.direction,
            "external_id": call.external_id,
            "from": call.from_number,
            "to": call.to_number,
            "status": call.status,
            "end_reason": call.end_reason,
            "started_at": call.started_at.isoformat(),
            "ended_at": call.ended_at.isoformat() if call.ended_at else None,
            "transferred_to": call.transferred_to or None,
            "answered_by": call.answered_by or None,
            "metrics": call.metrics,
        },
        "transcript": [_turn(t) for t in selectors.call_turns(call_id=call.pk)],
        "extraction": {
            "status": call.extraction_status,
            "data": call.extraction,
            "error": call.extraction_error,
        },
    }


def _turn(turn: Turn) -> dict[str, Any]:
    item: dict[str, Any] = {
        "role": turn.role,
        "text": turn.text,
        "interrupted": turn.interrupted,
        "at": turn.started_at.isoformat(),
    }
    if turn.role == "tool":
        item["tool"] = {
            "name": turn.tool_name,
            "arguments": turn.tool_arguments,
            "status": turn.tool_status,
            "result": turn.tool_result,
            "latency_ms": turn.tool_latency_ms,
        }
    return item


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(*, call_id: str, attempt: int = 1) -> str:
    call = selectors.call_get(call_id=call_id)
    if not wanted(call):
        return "skipped"
    if call.webhook_status == "delivered":
        return "delivered"  # idempotent: re-runs do not POST twice
    body = json.dumps(payload_for(call), ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json", "X-Voiceapp-Event": "call.analyzed"}
    if call.profile.webhook_secret:
        headers["X-Voiceapp-Signature"] = sign(call.profile.webhook_secret, body)
    try:
        response = httpx.post(call.profile.webhook_url, content=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        logger.warning("webhook attempt %d failed: %s", attempt, exc, extra={"call_id": call_id})
        raise WebhookDeliveryError(str(exc)) from exc
    if response.status_code >= 300:
        logger.warning(
            "webhook attempt %d got HTTP %s",
            attempt,
            response.status_code,
            extra={"call_id": call_id},
        )
        raise WebhookDeliveryError(f"HTTP {response.status_code}")
    services.call_set_webhook_status(call_id=call_id, status="delivered")
    return "delivered"
