"""Post-call analysis: summary, intent, sentiment, entities, next action, profile fields."""

from __future__ import annotations

from calls.models import Call, ExtractionStatus
from calls.services import call_set_extraction


def extract_call_data(*, call_id: str) -> str:
    call = Call.objects.filter(pk=call_id).first()
    if call is None:
        return "missing"
    if call.extraction_status in (ExtractionStatus.DONE, ExtractionStatus.SKIPPED):
        return call.extraction_status
    if not call.turns.filter(role="user").exists():
        call_set_extraction(call_id=call_id, status=ExtractionStatus.SKIPPED)
        return ExtractionStatus.SKIPPED
    return call.extraction_status
