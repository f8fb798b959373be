from datetime import timedelta

import pytest
from django.utils import timezone

from calls import selectors, services
from calls.models import Call, CallStatus, EndReason

pytestmark = pytest.mark.django_db


def _turn(call, role, text):
    now = timezone.now()
    return services.turn_record(
        call_id=call.id, role=role, text=text, started_at=now, ended_at=now,
        metrics={"voice_to_voice_ms": 850.0} if role == "assistant" else {},
    )  # fmt: skip


def test_turns_are_readable_while_the_call_is_still_active(profile):
    call = services.call_start(profile=profile, channel="browser")
    _turn(call, "user", "I want a table for two")
    _turn(call, "assistant", "Sure, for what time?")

    assert Call.objects.get(pk=call.pk).status == CallStatus.ACTIVE
    turns = selectors.call_turns(call_id=call.id)
    assert [(t.sequence, t.role) for t in turns] == [(1, "user"), (2, "assistant")]
    assert selectors.call_voice_to_voice_ms(call=call) == [850.0]


def test_a_call_ends_exactly_once_with_the_first_reason(profile):
    call = services.call_start(profile=profile, channel="twilio", external_id="CA1")
    assert services.call_end(call_id=call.id, reason=EndReason.CALLER_HANGUP, metrics={"turns": 0})
    assert not services.call_end(call_id=call.id, reason=EndReason.ORPHANED)
    call.refresh_from_db()
    assert call.end_reason == EndReason.CALLER_HANGUP
    assert call.status == CallStatus.ENDED and call.ended_at is not None


def test_an_error_end_marks_the_call_failed_with_its_detail(profile):
    call = services.call_start(profile=profile, channel="browser")
    services.call_end(call_id=call.id, reason=EndReason.ERROR, error="groq 500: upstream")
    call.refresh_from_db()
    assert call.status == CallStatus.FAILED and call.error_detail == "groq 500: upstream"


def test_calls_without_heartbeat_are_swept_as_orphaned(profile):
    stale = services.call_start(profile=profile, channel="browser")
    fresh = services.call_start(profile=profile, channel="browser")
    Call.objects.filter(pk=stale.pk).update(
        last_heartbeat_at=timezone.now() - timedelta(minutes=10)
    )

    ended = services.calls_sweep_orphaned(older_than=timedelta(seconds=90))

    assert ended == [str(stale.id)]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.end_reason == EndReason.ORPHANED
    assert fresh.status == CallStatus.ACTIVE


def test_dtmf_digits_are_appended_to_the_call(profile):
    call = services.call_start(profile=profile, channel="twilio")
    for digit in "12#":
        services.call_record_dtmf(call_id=call.id, digit=digit)
    call.refresh_from_db()
    assert call.dtmf_digits == "12#"
