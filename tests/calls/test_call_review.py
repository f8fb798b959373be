"""A call's review page (CallAdmin.change_view): the transcript as a chat with offsets from
the call's start, tool cards, interrupted turns, latency waterfalls that add up to
voice-to-voice, readable tables; the live endpoint; `/`, the favicon and global stop."""

from __future__ import annotations

import datetime
import re

import pytest
from django.contrib.staticfiles import finders
from django.urls import reverse
from django.utils import timezone

from calls import global_stop, services
from calls.admin.review import clock, latency_waterfall
from calls.models import Call
from tests.calls.review_calls import REPLY_METRICS, review_call

pytestmark = pytest.mark.django_db


def _page(client, call: Call) -> str:
    response = client.get(reverse("admin:calls_call_change", args=[call.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_transcript_is_a_chat_with_offsets_from_the_call_start(admin_client, profile):
    html = _page(admin_client, review_call(profile))
    turns = re.findall(
        r'<li class="turn turn-(\w+)[^"]*" id="turn-(\d+)" data-start="([\d.]+)"', html
    )
    assert [(role, float(start)) for role, _, start in turns] == [
        ("assistant", 0.8), ("user", 3.5), ("tool", 6.1), ("assistant", 6.6), ("user", 65.0),
        ("assistant", 67.0),
    ]  # fmt: skip
    times = re.findall(r'class="turn-time" data-seek="[\d.]+"[^>]*>([\d:]+)</button>', html)
    assert times == ["0:00", "0:03", "0:06", "0:06", "1:05", "1:07"]
    assert "Greeting" in html and "Booked: a table for four tomorrow at nine." in html
    # The transcript comes before the figures.
    assert html.index('id="transcript"') < html.index("Call figures")


def test_a_tool_turn_is_a_compact_card_and_an_interrupted_turn_is_marked(admin_client, profile):
    html = _page(admin_client, review_call(profile))
    card = html[html.index('class="tool-card"') :][:1200]
    assert "book_table(" in card and "party_size" in card and "212 ms" in card
    assert ">ok<" in card and "table&quot;: 12" in card
    assert html.count("✂ interrupted") == 1
    assert "False" not in html.replace("false", ""), "no per-turn boolean columns"


def test_each_reply_has_a_waterfall_that_adds_up_to_voice_to_voice(admin_client, profile):
    stages = latency_waterfall(REPLY_METRICS)
    assert [s.key for s in stages] == [
        "endpointing", "stt", "llm_ttft", "first_sentence", "tts_ttfb", "send",
    ]  # fmt: skip
    assert sum(s.ms for s in stages) == pytest.approx(REPLY_METRICS["voice_to_voice_ms"])
    assert [s.ms for s in stages] == [250, 180, 420, 140, 210, 100]

    html = _page(admin_client, review_call(profile))
    assert html.count('class="waterfall"') == 2, "the two replies; not the greeting"
    assert "end of turn 250 + STT 180 + LLM first token 420 + first sentence 140" in html
    assert 'class="wf wf-send" style="flex-grow:100"' in html


def test_a_turn_stored_before_the_first_sentence_was_measured_still_adds_up():
    metrics = {**REPLY_METRICS, "llm_first_sentence_ms": None}
    stages = latency_waterfall(metrics)
    assert stages[-1].label == "first sentence + send" and stages[-1].ms == 240
    assert sum(s.ms for s in stages) == pytest.approx(1300)
    held = latency_waterfall({**metrics, "eot_reason": "words", "eot_wait_ms": 2500.0,
                              "voice_to_voice_ms": 3400.0})  # fmt: skip
    assert [s.key for s in held][:3] == ["endpointing", "stt", "held"]
    assert held[2].ms == 2500 - 250 - 180 and sum(s.ms for s in held) == pytest.approx(3400)
    assert latency_waterfall({}) == []
    assert latency_waterfall({"tts_ttfb_ms": 300.0}) == [], "a greeting answers nobody"


def test_the_page_shows_greeting_audio_engines_analysis_and_figures_as_tables(
    admin_client, profile
):
    html = _page(admin_client, review_call(profile))
    assert re.search(r"Greeting, first audio</dt><dd><span[^>]*>800 ms", html)
    assert "TTS first byte 310 ms" in html
    assert re.search(r"<th scope=\"row\">LLM</th><td>[^<]*</td><td>groq \(2 turns\)", html)
    assert '<th scope="row">summary</th><td>Booked a table for four.</td>' in html
    assert '<th scope="row">extracted entities</th><td>four, nine</td>' in html
    assert '<th scope="row">Voice-to-voice p50</th><td>900 ms</td>' in html
    assert "clean" in html and "0 late frames" in html
    assert html.count("<summary>Raw JSON</summary>") == 2  # analysis and figures, collapsed
    assert "Configuration used" in html and "&quot;greeting&quot;" in html


def test_times_are_clock_offsets():
    assert [clock(s) for s in (0, 59.9, 61, 3599, 3661)] == [
        "0:00", "0:59", "1:01", "59:59", "1:01:01",
    ]  # fmt: skip


def test_the_breadcrumb_leads_back_to_the_list_as_it_was_filtered(admin_client, profile):
    call = review_call(profile)
    url = reverse("admin:calls_call_change", args=[call.pk])
    response = admin_client.get(url, {"_changelist_filters": "channel__exact=twilio"})
    assert '/admin/calls/call/?channel__exact=twilio"' in response.content.decode()


def test_the_page_links_to_the_overview_and_to_delete(admin_client, profile):
    call = review_call(profile)
    html = _page(admin_client, call)
    tools = html[html.index('<ul class="object-tools">') :][:600]
    assert reverse("admin:calls_call_overview") in tools
    assert reverse("admin:calls_call_delete", args=[call.pk]) in tools


def test_a_call_without_a_recording_has_no_player(admin_client, profile):
    html = _page(admin_client, review_call(profile))
    assert "<audio" not in html and "has-recording" not in html


def test_a_live_call_polls_its_transcript_until_it_ends(admin_client, profile):
    call = review_call(profile, end=False)
    html = _page(admin_client, call)
    live_url = reverse("admin:calls_call_live", args=[call.pk])
    assert 'data-live="1"' in html and f'data-live-url="{live_url}"' in html

    live = admin_client.get(live_url).json()
    assert live["live"] is True and live["turns"] == 6
    assert "Dogs are welcome on the" in live["html"] and 'id="turn-6"' in live["html"]

    at = timezone.now()
    services.turn_record(call_id=call.pk, role="user", text="Thanks, bye.", started_at=at,
                         ended_at=at)  # fmt: skip
    assert "Thanks, bye." in admin_client.get(live_url).json()["html"]
    services.call_end(call_id=call.pk, reason="caller_hangup")
    assert admin_client.get(live_url).json()["live"] is False
    assert 'data-live="0"' in _page(admin_client, call)


def test_the_review_and_live_pages_are_for_staff_with_view_permission(
    client, django_user_model, profile
):
    call = review_call(profile)
    for url in (
        reverse("admin:calls_call_change", args=[call.pk]),
        reverse("admin:calls_call_live", args=[call.pk]),
    ):
        assert client.get(url).status_code == 302  # to the login page
    django_user_model.objects.create_user("plain-staff", password="pw-12345-abc", is_staff=True)
    client.login(username="plain-staff", password="pw-12345-abc")
    assert client.get(reverse("admin:calls_call_live", args=[call.pk])).status_code == 403


def test_an_unknown_call_redirects_to_the_list_with_a_message(admin_client, db):
    response = admin_client.get(
        reverse("admin:calls_call_change", args=["00000000-0000-0000-0000-000000000000"])
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")


def test_re_run_analysis_from_the_review_page(admin_client, profile):
    call = review_call(profile)
    url = reverse("admin:calls_call_rerun_extraction", args=[call.pk])
    assert url in _page(admin_client, call)
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:calls_call_change", args=[call.pk])
    # Eager Celery in tests: the heuristic analysis ran again.
    assert Call.objects.get(pk=call.pk).extraction_status in ("done", "pending")


def _staff(django_user_model, username: str, *codenames: str):  # type: ignore[no-untyped-def]
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="calls",
                                                        codename__in=codenames))  # fmt: skip
    return user


def test_view_only_staff_cannot_re_run_the_analysis(client, django_user_model, profile):
    """Re-running re-sends the webhook: it needs calls.rerun_extraction, not just view_call."""
    call = review_call(profile)
    Call.objects.filter(pk=call.pk).update(extraction_status="done")
    client.force_login(_staff(django_user_model, "viewer", "view_call"))
    url = reverse("admin:calls_call_rerun_extraction", args=[call.pk])
    assert url not in _page(client, call)  # no button
    assert client.post(url).status_code == 403
    listing = client.get(reverse("admin:calls_call_changelist")).content.decode()
    assert 'value="rerun_extraction"' not in listing  # nor the list action
    client.post(reverse("admin:calls_call_changelist"),
                {"action": "rerun_extraction", "_selected_action": [str(call.pk)]})  # fmt: skip
    assert Call.objects.get(pk=call.pk).extraction_status == "done"  # nothing queued

    client.force_login(_staff(django_user_model, "analyst", "view_call", "rerun_extraction"))
    assert url in _page(client, call)
    assert client.post(url).status_code == 302


# --- Small things ---------------------------------------------------------------------------


def test_the_profile_page_has_the_recording_settings(admin_client, profile):
    html = admin_client.get(reverse("admin:calls_agentprofile_change", args=[profile.pk]))
    page = html.content.decode()
    assert 'name="record_calls"' in page and 'name="recording_consent_line"' in page


def test_the_root_redirects_to_the_admin(client, db):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_the_favicon_answers_and_pages_reference_it(admin_client, profile):
    response = admin_client.get("/favicon.ico")
    assert response.status_code == 302 and response["Location"].endswith("favicon.ico")
    assert finders.find("favicon.ico") and finders.find("favicon.svg")
    for url in ("/admin/", "/simulator/"):
        assert "favicon.svg" in admin_client.get(url).content.decode()


def test_the_admin_index_and_the_call_list_link_to_the_overview(admin_client, db):
    overview = reverse("admin:calls_call_overview")
    assert overview in admin_client.get("/admin/").content.decode()
    assert overview in admin_client.get("/admin/calls/call/").content.decode()


def test_global_stop_errors_have_readable_times_and_clearing_asks_first(admin_client, db):
    for _ in range(3):
        global_stop.report_critical_error(reason="tts down", channel="twilio")
    html = admin_client.get("/admin/global-stop/").content.decode()
    today = timezone.localtime().strftime("%Y-%m-%d")
    assert html.count(f">{today} ") >= 4, "the stop and each error in local time"
    assert "(unix time)" not in html and "When (unix)" not in html
    assert 'onsubmit="return window.confirm(this.dataset.confirm);"' in html
    assert "Resume calls? New calls will be accepted again" in html
    assert re.search(r"Stopped</td><td>policy</td><td>at: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", html)

    global_stop.reset(actor="staff")
    html = admin_client.get("/admin/global-stop/").content.decode()
    assert "Clear the error window?" in html


def test_the_global_stop_audit_trail_shows_local_times(admin_client, db):
    for _ in range(3):
        global_stop.report_critical_error(reason="llm 500", channel="browser")
    html = admin_client.get("/admin/calls/globalstopevent/").content.decode()
    year = str(datetime.date.today().year)
    assert "reason: llm 500" in html and f"at: {year}-" in html
