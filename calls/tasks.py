"""Celery tasks: thin, idempotent wrappers around services, with bounded retries."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings

logger = logging.getLogger(__name__)

EXTRACTION_MAX_RETRIES = 3


@shared_task(bind=True, name="calls.tasks.extract_call", max_retries=EXTRACTION_MAX_RETRIES)
def extract_call(self, call_id: str) -> str:  # type: ignore[no-untyped-def]
    from calls.extraction import TransientExtractionError, extract_call_data
    from calls.models import ExtractionStatus
    from calls.services import call_set_extraction
    from calls.webhooks import enqueue_call_webhook

    try:
        status = extract_call_data(call_id=call_id)
    except TransientExtractionError as exc:
        if self.request.retries < self.max_retries:
            logger.warning("extraction of %s failed (%s); retrying", call_id, exc)
            raise self.retry(exc=exc, countdown=2 ** (self.request.retries + 1)) from exc
        call_set_extraction(
            call_id=call_id,
            status=ExtractionStatus.FAILED,
            error=f"gave up after {self.max_retries + 1} attempts: {exc}",
        )
        status = ExtractionStatus.FAILED
    enqueue_call_webhook(call_id)
    return status


@shared_task(bind=True, name="calls.tasks.deliver_call_webhook", max_retries=5)
def deliver_call_webhook(self, call_id: str) -> str:  # type: ignore[no-untyped-def]
    from calls.webhooks import WebhookDeliveryError, deliver

    try:
        return deliver(call_id=call_id, attempt=self.request.retries + 1)
    except WebhookDeliveryError as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries)) from exc
        from calls.models import Call

        Call.objects.filter(pk=call_id).update(webhook_status=f"failed: {exc}"[:40])
        return "failed"


@shared_task(name="calls.tasks.sweep_orphaned_calls")
def sweep_orphaned_calls() -> list[str]:
    from calls.services import calls_sweep_orphaned

    return calls_sweep_orphaned(older_than=timedelta(seconds=settings.ORPHAN_AFTER_SECONDS))
