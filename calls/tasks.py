"""Celery tasks: thin, idempotent wrappers around services, with bounded retries."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from calls import selectors, services, webhooks
from calls.extraction import TransientExtractionError, extract_call_data
from calls.inline_tasks import enqueue
from calls.models import ExtractionStatus

logger = logging.getLogger(__name__)

EXTRACTION_MAX_RETRIES = 3


@shared_task(bind=True, name="calls.tasks.extract_call", max_retries=EXTRACTION_MAX_RETRIES)
def extract_call(self, call_id: str, deadline: float | None = None) -> str:  # type: ignore[no-untyped-def]
    """Post-call extraction within ``EXTRACTION_TIMEOUT_SECONDS``, all attempts together.

    The first run sets the ``deadline`` (epoch seconds) and hands it to its retries, so a
    hanging LLM ends the extraction ``failed`` ("timed out") instead of holding a worker for
    every retry's full timeout. Time spent waiting in the queue does not count.
    """
    budget = settings.EXTRACTION_TIMEOUT_SECONDS
    deadline = deadline or time.time() + budget
    try:
        remaining = deadline - time.time()
        if remaining <= 0:
            raise TransientExtractionError("no time left for another attempt")
        status = extract_call_data(call_id=call_id, timeout_s=remaining)
    except TransientExtractionError as exc:
        countdown = 2 ** (self.request.retries + 1)
        out_of_time = time.time() + countdown >= deadline
        if self.request.retries < self.max_retries and not out_of_time:
            logger.warning("extraction of %s failed (%s); retrying", call_id, exc)
            raise self.retry(
                exc=exc, countdown=countdown, kwargs={"call_id": call_id, "deadline": deadline}
            ) from exc
        attempts = self.request.retries + 1
        error = (
            f"timed out after {budget:g}s ({attempts} attempt(s)): {exc}"
            if out_of_time
            else f"gave up after {attempts} attempts: {exc}"
        )
        services.call_set_extraction(call_id=call_id, status=ExtractionStatus.FAILED, error=error)
        status = ExtractionStatus.FAILED
    if webhooks.wanted(selectors.call_get(call_id=call_id)):
        enqueue(deliver_call_webhook, str(call_id))
    return status


@shared_task(bind=True, name="calls.tasks.deliver_call_webhook", max_retries=5)
def deliver_call_webhook(self, call_id: str) -> str:  # type: ignore[no-untyped-def]
    try:
        return webhooks.deliver(call_id=call_id, attempt=self.request.retries + 1)
    except webhooks.WebhookDeliveryError as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=min(300, 5 * 2**self.request.retries)) from exc
        services.call_set_webhook_status(call_id=call_id, status=f"failed: {exc}")
        return "failed"


@shared_task(name="calls.tasks.sweep_orphaned_calls")
def sweep_orphaned_calls() -> list[str]:
    """Every minute (beat): end orphaned calls, store the recordings their crashed
    process left, and apply the recordings' retention."""
    ended = services.calls_sweep_orphaned(
        older_than=timedelta(seconds=settings.ORPHAN_AFTER_SECONDS)
    )
    # After the sweep above, so a crashed call's recording is stored in the same run.
    # A spool file untouched for a minute is no longer written: the encoder flushes
    # every second while its call runs.
    services.recordings_store_leftovers(older_than=timedelta(seconds=60))
    if settings.RECORDING_RETENTION_DAYS > 0:
        services.recordings_delete_expired(
            older_than=timedelta(days=settings.RECORDING_RETENTION_DAYS)
        )
    return ended
