"""The admin's call list: the columns that matter at 1,280 px, the "slow turns" and
"unanswered turns" filters, and the CSV/JSON export of the calls listed."""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import re
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from calls import selectors, services
from calls.admin import EXPORT_CSV_COLUMNS, csv_cell
from calls.models import Call

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/calls/call/"
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("PLAYWRIGHT_CHROMIUM", "/usr/bin/chromium")


def _call(profile, external_id: str, replies_ms=(), *, unanswered=False, minutes_ago=0, **kw):
    """An ended call: a caller turn and a reply per voice-to-voice latency in ``replies_ms``;
    ``unanswered``: one more caller turn the agent never answered."""
    call = services.call_start(profile=profile, channel="twilio", external_id=external_id, **kw)
    start = timezone.now() - datetime.timedelta(minutes=minutes_ago)
    Call.objects.filter(pk=call.pk).update(started_at=start)
    at = start
    sequence = 0
    for v2v in replies_ms:
        for role, text, metrics in (
            ("user", "a table for two", {}),
            ("assistant", "For what time?", {"voice_to_voice_ms": v2v, "stt_ms": 200}),
        ):
            sequence += 1
            at += datetime.timedelta(seconds=2)
            services.turn_record(
                call_id=call.pk, role=role, text=text, started_at=at, ended_at=at,
                sequence=sequence, metrics=metrics,
            )  # fmt: skip
    if unanswered:
        sequence += 1
        services.turn_record(
            call_id=call.pk, role="user", text="hello?", started_at=at, ended_at=at,
            sequence=sequence,
        )  # fmt: skip
        services.turn_mark_unanswered(call_id=call.pk, sequence=sequence, reason="llm: timeout")
    services.call_end(call_id=call.pk, reason="caller_hangup")
    return Call.objects.get(pk=call.pk)


@pytest.fixture
def calls(profile):
    return {
        "slow": _call(profile, "CA-slow", [900, 2100], minutes_ago=1),
        "fast": _call(profile, "CA-fast", [800, 1200], minutes_ago=2),
        "unanswered": _call(profile, "CA-unanswered", [700], unanswered=True, minutes_ago=3),
        "silent": _call(profile, "CA-silent", minutes_ago=4),
    }


def listed(client, **params) -> set[str]:
    response = client.get(LIST_URL, params)
    assert response.status_code == 200
    return {call.external_id for call in response.context["cl"].result_list}


def export(client, fmt: str, **params):
    response = client.get(reverse("admin:calls_call_export", args=[fmt]), params)
    assert response.status_code == 200, response
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()


def test_slow_turns_filter_lists_calls_with_a_reply_over_the_threshold(admin_client, calls):
    assert listed(admin_client, slow_turns="yes") == {"CA-slow"}
    assert listed(admin_client, slow_turns="no") == {"CA-fast", "CA-unanswered", "CA-silent"}


def test_slow_turns_threshold_is_the_setting(admin_client, calls, settings):
    settings.SLOW_TURN_MS = 1000
    assert listed(admin_client, slow_turns="yes") == {"CA-slow", "CA-fast"}
    page = admin_client.get(LIST_URL).content.decode()
    assert "A reply over 1000 ms" in page


def test_a_reply_exactly_at_the_threshold_is_not_slow(profile):
    _call(profile, "CA-edge", [1500])
    assert not selectors.calls_with_slow_turns(calls=Call.objects.all()).exists()


def test_unanswered_turns_filter_lists_calls_with_a_turn_left_unanswered(admin_client, calls):
    assert listed(admin_client, unanswered="yes") == {"CA-unanswered"}
    assert listed(admin_client, unanswered="no") == {"CA-slow", "CA-fast", "CA-silent"}


def test_the_list_shows_the_columns_that_matter(admin_client, calls):
    page = admin_client.get(LIST_URL).content.decode()
    for header in ("started", "channel", "profile", "direction", "status / end", "duration"):
        assert f">{header}<" in page.lower() or f">{header}</a>" in page.lower()
    # The median of 900 and 2100 ms, and the one reply over SLOW_TURN_MS (1500).
    assert re.search(r"1500 ms <span[^>]*>\(1 slow\)</span>", page)
    assert "Caller hang-up" in page and "Inbound" in page
    assert 'title="CA-slow' in page  # the carrier's id is on the start time's tooltip


def test_csv_export_has_one_row_per_listed_call_honouring_filters(admin_client, calls):
    response, body = export(admin_client, "csv")
    assert response["Content-Type"].startswith("text/csv")
    assert 'attachment; filename="calls-' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["external_id"] for r in rows] == [
        "CA-slow", "CA-fast", "CA-unanswered", "CA-silent",
    ]  # fmt: skip  # newest first, as listed
    slow = rows[0]
    assert slow["id"] == str(calls["slow"].pk)
    assert (slow["turns"], slow["slow_turns"], slow["median_voice_to_voice_ms"]) == (
        "4", "1", "1500",
    )  # fmt: skip
    assert (slow["end_reason"], slow["channel"], slow["profile"]) == (
        "caller_hangup", "twilio", calls["slow"].profile.slug,
    )  # fmt: skip
    assert rows[2]["unanswered_turns"] == "1" and rows[3]["turns"] == "0"

    _, filtered = export(admin_client, "csv", slow_turns="yes")
    assert [r["external_id"] for r in csv.DictReader(io.StringIO(filtered))] == ["CA-slow"]
    _, searched = export(admin_client, "csv", q="CA-unanswered")
    assert [r["external_id"] for r in csv.DictReader(io.StringIO(searched))] == ["CA-unanswered"]


def test_csv_export_of_no_calls_is_the_header(admin_client, db):
    _, body = export(admin_client, "csv")
    assert body.splitlines() == [",".join(EXPORT_CSV_COLUMNS)]


def test_json_export_has_the_filtered_calls_with_their_turns(admin_client, calls):
    response, body = export(admin_client, "json", unanswered="yes")
    assert response["Content-Type"] == "application/json"
    (record,) = json.loads(body)
    assert record["external_id"] == "CA-unanswered"
    assert [(t["sequence"], t["role"]) for t in record["turns"]] == [
        (1, "user"), (2, "assistant"), (3, "user"),
    ]  # fmt: skip
    assert record["turns"][1]["metrics"]["voice_to_voice_ms"] == 700
    assert record["turns"][2]["unanswered"] is True
    assert record["turns"][2]["unanswered_reason"] == "llm: timeout"
    assert record["turns"][1]["offset_s"] == 4.0

    _, everything = export(admin_client, "json")
    assert {c["external_id"] for c in json.loads(everything)} == {
        "CA-slow", "CA-fast", "CA-unanswered", "CA-silent",
    }  # fmt: skip


def test_the_list_links_to_the_export_with_its_filters(admin_client, calls):
    page = admin_client.get(LIST_URL, {"slow_turns": "yes"}).content.decode()
    assert reverse("admin:calls_call_export", args=["csv"]) + "?slow_turns=yes" in page
    assert reverse("admin:calls_call_export", args=["json"]) + "?slow_turns=yes" in page


def test_export_is_for_staff_only(client, django_user_model, calls):
    url = reverse("admin:calls_call_export", args=["csv"])
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    user = django_user_model.objects.create_user(username="caller", password="pw-x-12345")
    client.force_login(user)  # signed in, not staff
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_export_needs_view_permission_on_calls(client, django_user_model, calls):
    user = django_user_model.objects.create_user(
        username="staff-no-calls", password="pw-x-12345", is_staff=True
    )
    client.force_login(user)
    assert client.get(reverse("admin:calls_call_export", args=["csv"])).status_code == 403


def test_an_unknown_export_format_is_not_found(admin_client, db):
    assert admin_client.get(reverse("admin:calls_call_export", args=["xlsx"])).status_code == 404


def test_export_reads_page_by_page_each_call_once_even_with_equal_start_times(profile):
    made = [_call(profile, f"CA-{i}", [1000]) for i in range(5)]
    same = timezone.now() - datetime.timedelta(hours=1)
    Call.objects.filter(pk__in=[c.pk for c in made[1:4]]).update(started_at=same)

    pages = list(selectors.calls_in_pages(calls=Call.objects.all(), page_size=2))

    assert [len(page) for page in pages] == [2, 2, 1]
    seen = [call.pk for page in pages for call in page]
    assert sorted(map(str, seen)) == sorted(str(c.pk) for c in made)
    assert all(len(call.turns.all()) == 2 for page in pages for call in page)


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised():
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("+1+cmd") == "'+1+cmd"
    assert csv_cell("+34910000000") == "+34910000000"
    assert csv_cell(None) == "" and csv_cell(3) == 3


@pytest.mark.django_db(transaction=True)
async def test_export_streams_an_async_iterator_under_asgi(async_client, profile, admin_user):
    """daphne serves ASGI: the export must stream there, not be read whole into a list."""
    from channels.db import database_sync_to_async

    await database_sync_to_async(_call)(profile, "CA-asgi", [1600])
    await async_client.aforce_login(admin_user)

    response = await async_client.get(reverse("admin:calls_call_export", args=["csv"]))

    assert response.status_code == 200 and response.is_async
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert "CA-asgi" in body


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_list_fits_a_1280_px_screen_without_horizontal_scroll(live_server, profile):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_superuser("list-admin", "", "pw-list-12345")
    # Wide values: a transfer with its number, a slow reply, audio issues, a live call.
    moved = _call(
        profile, "CA0123456789abcdef0123456789abcdef", [900, 2100, 1800],
        from_number="+34600000000", to_number="+34910000000", unanswered=True,
    )  # fmt: skip
    Call.objects.filter(pk=moved.pk).update(
        end_reason="transferred", transferred_to="+34910000001", audio_issues=12
    )
    _call(profile, "CA-fast", [800, 1200], minutes_ago=5)
    services.call_start(profile=profile, channel="browser", direction="outbound")

    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{live_server.url}/admin/login/?next={LIST_URL}")
            page.fill("#id_username", "list-admin")
            page.fill("#id_password", "pw-list-12345")
            page.click("input[type=submit]")
            page.wait_for_selector("#result_list")
            page.screenshot(path=str(artifacts / "call-list-1280.png"), full_page=True)
            widths = page.evaluate(
                """() => {
                    const results = document.querySelector('#changelist-form .results');
                    return {
                        page: document.documentElement.scrollWidth,
                        table: results.scrollWidth,
                        box: results.clientWidth,
                        styled: getComputedStyle(document.querySelector('#changelist-filter'))
                            .display !== 'inline',
                        headers: [...document.querySelectorAll('#result_list thead th')]
                            .map(th => th.innerText.trim().toLowerCase()),
                    };
                }"""
            )
        finally:
            browser.close()

    assert widths["styled"], "the admin's CSS did not load: the measurement means nothing"
    assert widths["page"] <= 1280, widths
    assert widths["table"] <= widths["box"], f"the table scrolls sideways: {widths}"
    for header in ("started", "channel", "profile", "direction", "status / end", "duration",
                   "turns", "median voice-to-voice", "audio"):  # fmt: skip
        assert header in widths["headers"], widths["headers"]
