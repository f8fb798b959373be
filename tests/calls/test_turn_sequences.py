"""Turn writes carry the session's sequence numbers; unanswered turns are visible."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from calls import services
from calls.models import Call, Turn


def _turn(call: Call, sequence: int, text: str, role: str = "user") -> Turn:
    now = timezone.now()
    return services.turn_record(
        call_id=call.pk, role=role, text=text, started_at=now, ended_at=now, sequence=sequence
    )


def test_a_retried_turn_write_keeps_one_row_and_a_lost_turn_leaves_a_gap(profile):
    call = services.call_start(profile=profile, channel="browser")
    _turn(call, 1, "hello")
    _turn(call, 1, "hello")  # the first attempt had committed before the connection dropped
    _turn(call, 3, "third")  # turn 2 never made it

    assert list(call.turns.values_list("sequence", "text")) == [(1, "hello"), (3, "third")]


def test_an_unanswered_turn_shows_its_reason_in_the_admin_and_its_filter(staff_client, profile):
    call = services.call_start(profile=profile, channel="browser")
    _turn(call, 1, "book a table for four")
    answered = services.call_start(profile=profile, channel="browser")
    _turn(answered, 1, "hi")

    assert services.turn_mark_unanswered(
        call_id=call.pk, sequence=1, reason="call ended (caller_hangup) before the reply"
    )
    assert not services.turn_mark_unanswered(call_id=call.pk, sequence=9, reason="no such turn")

    page = staff_client.get(reverse("admin:calls_call_change", args=[call.pk]))
    assert b"call ended (caller_hangup) before the reply" in page.content
    listing = staff_client.get(reverse("admin:calls_call_changelist") + "?unanswered=yes")
    shown = {str(c.pk) for c in listing.context["cl"].result_list}
    assert shown == {str(call.pk)}
