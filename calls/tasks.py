"""Celery tasks: thin, idempotent wrappers around services."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings


@shared_task(name="calls.tasks.extract_call")
def extract_call(call_id: str) -> str:
    from calls.extraction import extract_call_data

    return extract_call_data(call_id=call_id)


@shared_task(name="calls.tasks.sweep_orphaned_calls")
def sweep_orphaned_calls() -> list[str]:
    from calls.services import calls_sweep_orphaned

    return calls_sweep_orphaned(older_than=timedelta(seconds=settings.ORPHAN_AFTER_SECONDS))
