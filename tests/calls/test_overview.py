"""The overview across calls: selectors.calls_overview's numbers (per day, end reasons,
error rate, p50/p95 voice-to-voice per profile and channel, intents) and its admin page.
CI runs these on PostgreSQL (DATABASE_URL); without it on SQLite."""

from __future__ import annotations

import datetime
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from calls import selectors, services
from calls.models import AgentProfile, Call

pytestmark = pytest.mark.django_db


def _call(profile, channel: str, replies_ms=(), *, days_ago=0, reason="caller_hangup",
          intent: str | None = None) -> Call:  # fmt: skip
    call = services.call_start(profile=profile, channel=channel)
    start = timezone.now() - datetime.timedelta(days=days_ago)
    Call.objects.filter(pk=call.pk).update(started_at=start)
    for n, v2v in enumerate(replies_ms, 1):
        services.turn_record(
            call_id=call.pk, role="assistant", text="ok", started_at=start, ended_at=start,
            sequence=n, metrics={"voice_to_voice_ms": v2v},
        )  # fmt: skip
    if reason:
        services.call_end(call_id=call.pk, reason=reason)
    if intent:
        services.call_set_extraction(call_id=call.pk, status="done", data={"intent": intent})
    return call


@pytest.fixture
def seeded(profile):
    other = AgentProfile.objects.create(name="Other", slug="other", language="en-US")
    # demo/twilio: 10 replies 100..1000 ms; demo/browser: 3; other/twilio: 2.
    _call(profile, "twilio", [100, 200, 300, 400, 500], intent="book_table")
    _call(profile, "twilio", [600, 700, 800, 900, 1000], days_ago=1, intent="book_table")
    _call(profile, "browser", [1500, 1200, 1800], days_ago=1, reason="error",
          intent="ask_opening_hours")  # fmt: skip
    _call(other, "twilio", [400, 2000], days_ago=3, reason="agent_hangup")
    _call(other, "twilio", days_ago=3, reason="")  # still live: counted, no end reason
    _call(profile, "twilio", [50], days_ago=40)  # outside the range
    # A reply without a figure and a caller turn are not replies.
    call = _call(profile, "twilio", reason="idle_timeout")
    services.turn_record(call_id=call.pk, role="assistant", text="hm", started_at=timezone.now(),
                         ended_at=timezone.now(), sequence=1, metrics={"stt_ms": 3})  # fmt: skip
    return {"demo": profile, "other": other}


def _overview(**kw):
    today = timezone.localdate()
    return selectors.calls_overview(since=today - datetime.timedelta(days=13), until=today, **kw)


def test_percentiles_by_profile_and_channel_are_nearest_rank(seeded):
    overview = _overview()
    groups = {(g.profile, g.channel): (g.replies, g.p50_ms, g.p95_ms) for g in overview.latency}
    assert groups == {
        ("All profiles", "all channels"): (15, 700.0, 2000.0),
        ("Demo receptionist", "twilio"): (10, 500.0, 1000.0),
        ("Demo receptionist", "browser"): (3, 1500.0, 1800.0),
        ("Other", "twilio"): (2, 400.0, 2000.0),
    }
    assert overview.latency[0].profile == "All profiles"


def test_calls_per_day_cover_every_day_of_the_range(seeded):
    overview = _overview()
    assert len(overview.per_day) == 14 and overview.per_day[-1].day == timezone.localdate()
    counts = {d.day: (d.calls, d.errors) for d in overview.per_day if d.calls}
    today = timezone.localdate()
    assert counts == {
        today: (2, 0),
        today - datetime.timedelta(days=1): (2, 1),
        today - datetime.timedelta(days=3): (2, 0),
    }
    assert sum(d.calls for d in overview.per_day) == overview.calls == 6


def test_end_reasons_error_rate_and_intents(seeded):
    overview = _overview()
    assert overview.end_reasons[0][1] == 2
    assert dict(overview.end_reasons) == {
        "caller_hangup": 2, "error": 1, "agent_hangup": 1, "idle_timeout": 1, "": 1,
    }  # fmt: skip
    assert overview.errors == 1 and overview.error_rate == pytest.approx(1 / 6)
    assert overview.intents == [("book_table", 2), ("ask_opening_hours", 1)]


def test_the_profile_and_date_filters(seeded):
    other = _overview(profile_id=seeded["other"].pk)
    assert other.calls == 2 and [g.replies for g in other.latency] == [2, 2]
    today = timezone.localdate()
    yesterday = selectors.calls_overview(
        since=today - datetime.timedelta(days=1), until=today - datetime.timedelta(days=1)
    )
    assert yesterday.calls == 2 and len(yesterday.per_day) == 1
    assert yesterday.intents == [("ask_opening_hours", 1), ("book_table", 1)]


def test_an_empty_range_has_no_rate_and_no_percentiles(db):
    overview = _overview()
    assert overview.calls == 0 and overview.error_rate is None and overview.latency == []
    assert len(overview.per_day) == 14


def test_the_overview_page_renders_the_figures(admin_client, seeded):
    url = reverse("admin:calls_call_overview")
    html = admin_client.get(url).content.decode()
    assert '<dd id="kpi-calls">6</dd>' in html
    assert "16.7 %" in html  # error rate
    assert "Demo receptionist" in html and "1800 ms" in html and "book table" in html
    filtered = admin_client.get(url, {"profile": seeded["other"].pk}).content.decode()
    assert '<dd id="kpi-calls">2</dd>' in filtered
    wrong = admin_client.get(url, {"since": "2026-02-10", "until": "2026-02-01"})
    assert (
        wrong.status_code == 200
        and "The start date is after the end date." in wrong.content.decode()
    )


def test_an_end_reason_links_to_the_call_list_filtered_alike(admin_client, seeded):
    html = admin_client.get(reverse("admin:calls_call_overview")).content.decode()
    links = re.findall(r'<a href="(/admin/calls/call/\?[^"]+)">Error</a>', html)
    assert len(links) == 1 and "started_at__gte=" in links[0]
    listing = admin_client.get(links[0].replace("&amp;", "&"))
    assert listing.status_code == 200, "the list accepts the overview's filters"
    assert listing.context["cl"].result_count == 1


def test_the_overview_is_for_staff_with_view_permission(client, django_user_model, db):
    url = reverse("admin:calls_call_overview")
    assert client.get(url).status_code == 302
    django_user_model.objects.create_user("plain", password="pw-12345-abc", is_staff=True)
    client.login(username="plain", password="pw-12345-abc")
    assert client.get(url).status_code == 403


def test_sql_percentiles_match_the_python_ones(seeded):
    """PostgreSQL takes p50/p95 in SQL (percentile_disc), SQLite in Python: the same groups
    and numbers, a deleted profile's group and non-numeric figures included."""
    from django.db import connection

    gone = AgentProfile.objects.create(name="Gone", slug="gone", language="en-US")
    _call(gone, "browser", [321.25, 123.45, 999])
    gone.delete()
    odd = _call(seeded["demo"], "twilio", reason="idle_timeout")
    for n, value in enumerate(["fast", True, None], 1):
        services.turn_record(call_id=odd.pk, role="assistant", text="x", started_at=timezone.now(),
                             ended_at=timezone.now(), sequence=n,
                             metrics={"voice_to_voice_ms": value})  # fmt: skip
    replies = selectors.Turn.objects.filter(role="assistant",
                                            metrics__has_key="voice_to_voice_ms")  # fmt: skip
    python = selectors._latency_groups_python(replies)
    assert ("(deleted profile)", "browser", 3, 321.2, 999.0) in [
        (g.profile, g.channel, g.replies, g.p50_ms, g.p95_ms) for g in python
    ]
    assert python[0].replies == 19  # 15 in range + 1 older + the deleted profile's 3
    if connection.vendor == "postgresql":
        assert selectors._latency_groups_sql(replies) == python
