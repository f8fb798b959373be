import pytest
from django.urls import reverse
from django.utils import timezone

from calls import services
from calls.models import AgentProfile, Call

pytestmark = pytest.mark.django_db


@pytest.fixture
def call_with_turns(profile):
    call = services.call_start(profile=profile, channel="browser", external_id="sim-1")
    now = timezone.now()
    services.turn_record(
        call_id=call.id, role="user", text="book a table", started_at=now, ended_at=now
    )
    services.turn_record(
        call_id=call.id, role="assistant", text="For how many?", started_at=now, ended_at=now,
        metrics={"stt_ms": 300, "llm_ttft_ms": 200, "tts_ttfb_ms": 90, "voice_to_voice_ms": 1290},
    )  # fmt: skip
    return call


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/calls/call/",
        "/admin/calls/agentprofile/",
    ],
)
def test_admin_pages_redirect_anonymous_users_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_admin_lists_and_shows_calls_with_transcript_and_latency(staff_client, call_with_turns):
    listing = staff_client.get("/admin/calls/call/")
    assert listing.status_code == 200
    assert b"sim-1" in listing.content and b"1290 ms" in listing.content

    detail = staff_client.get(reverse("admin:calls_call_change", args=[call_with_turns.pk]))
    assert detail.status_code == 200
    assert b"book a table" in detail.content and b"For how many?" in detail.content
    assert b"<svg" in detail.content


def test_admin_call_search_finds_transcript_text(staff_client, call_with_turns):
    response = staff_client.get("/admin/calls/call/", {"q": "book a table"})
    assert response.status_code == 200 and b"sim-1" in response.content


def test_admin_profile_pages_render(staff_client, profile):
    assert staff_client.get("/admin/calls/agentprofile/").status_code == 200
    change = staff_client.get(reverse("admin:calls_agentprofile_change", args=[profile.pk]))
    assert change.status_code == 200 and b"Channel overlays" in change.content


def test_admin_rejects_an_invalid_overlay_with_a_field_error(staff_client, profile):
    url = reverse("admin:calls_agentprofile_change", args=[profile.pk])
    form = staff_client.get(url).context["adminform"].form
    data = {k: ("" if v is None else v) for k, v in form.initial.items()}
    data.update(
        {
            "extraction_schema": "null",
            "overlays-TOTAL_FORMS": "1",
            "overlays-INITIAL_FORMS": "0",
            "overlays-0-channel": "twilio",
            "overlays-0-overrides": '{"not_a_field": 1}',
        }
    )
    for key in ("is_active", "is_default", "barge_in_enabled"):
        if not data.get(key):
            data.pop(key, None)
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert b"Unknown field(s): not_a_field" in response.content


def test_the_profile_page_groups_turn_taking_and_explains_smart_and_silence(staff_client, profile):
    change = staff_client.get(reverse("admin:calls_agentprofile_change", args=[profile.pk]))
    html = change.content.decode()
    fieldset = html[html.index("Turn-taking") :]
    for name in (
        "turn_detection", "vad_stop_ms", "max_turn_silence_ms", "turn_threshold",
        "stt_partial_interval_ms", "noise_suppression", "barge_in_min_ms", "backchannel_words",
    ):  # fmt: skip
        assert f'name="{name}"' in fieldset
    assert "Smart (model + words)" in html and "Silence timer" in html
    assert "Pause that makes the agent check whether the caller is done" in html
    assert "backchannel" in fieldset and "resume" in fieldset


def profile_form_data(staff_client, profile) -> tuple[str, dict]:
    url = reverse("admin:calls_agentprofile_change", args=[profile.pk])
    form = staff_client.get(url).context["adminform"].form
    data = {k: ("" if v is None else v) for k, v in form.initial.items()}
    data.update(
        {
            "extraction_schema": "null",
            "overlays-TOTAL_FORMS": "0",
            "overlays-INITIAL_FORMS": "0",
            "tools-TOTAL_FORMS": "0",  # the HTTP tools inline (the demo profile has none)
            "tools-INITIAL_FORMS": "0",
        }
    )
    for key in ("is_active", "is_default", "barge_in_enabled", "noise_suppression"):
        if not data.get(key):
            data.pop(key, None)
    return url, data


def test_the_profile_form_saves_turn_taking_settings(staff_client, profile):
    url, data = profile_form_data(staff_client, profile)
    data.update(
        {
            "turn_detection": "silence",
            "silence_timeout_ms": "900",
            "turn_threshold": "0.7",
            "backchannel_words": "claro, got it",
        }
    )
    data.pop("noise_suppression", None)  # an unticked box is absent from the POST
    response = staff_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors

    profile = AgentProfile.objects.get(pk=profile.pk)
    assert profile.turn_detection == "silence" and profile.silence_timeout_ms == 900
    assert profile.turn_threshold == 0.7 and profile.noise_suppression is False
    assert profile.backchannel_words == "claro, got it"


def test_the_profile_form_rejects_out_of_range_turn_taking_values(staff_client, profile):
    url, data = profile_form_data(staff_client, profile)
    data.update({"turn_threshold": "1.5", "vad_stop_ms": "900", "max_turn_silence_ms": "600"})
    response = staff_client.post(url, data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "turn_threshold" in errors and "max_turn_silence_ms" in errors


def test_a_call_shows_each_end_of_turn_decision_and_its_overlaps(staff_client, profile):
    call = services.call_start(profile=profile, channel="twilio", external_id="CA-eot")
    now = timezone.now()
    replies = [
        {"eot_reason": "model", "eot_score": 0.934, "eot_wait_ms": 270.4, "endpointing_ms": 270},
        {"eot_reason": "max_silence", "eot_score": 0.21, "eot_wait_ms": 2500},
        {"eot_reason": "dtmf", "eot_score": None, "eot_wait_ms": 0},
    ]
    for metrics in replies:
        services.turn_record(
            call_id=call.id, role="user", text="hi", started_at=now, ended_at=now
        )
        services.turn_record(
            call_id=call.id, role="assistant", text="Hello", started_at=now, ended_at=now,
            metrics={"voice_to_voice_ms": 900, **metrics},
        )  # fmt: skip
    Call.objects.filter(pk=call.pk).update(
        metrics={
            "overlaps": 5, "backchannels": 3, "interruptions": 2, "false_starts": 0,
            "endpointing_p50_ms": 270.0, "voice_to_voice_p50_ms": 900.0,
        }
    )  # fmt: skip

    detail = staff_client.get(reverse("admin:calls_call_change", args=[call.pk]))

    html = detail.content.decode()
    assert detail.status_code == 200
    assert "model 0.93 · 270 ms" in html
    assert "longest wait (model 0.21) · 2500 ms" in html
    assert "keypad · 0 ms" in html
    assert "The turn model judged the turn complete." in html  # the tooltip says why
    assert "Caller spoke over the agent 5×: 3 backchannels (agent resumed), 2 interruptions" in html
    assert "End of turn p50 270 ms" in html


def test_a_call_recorded_before_overlaps_were_counted_still_renders(staff_client, call_with_turns):
    Call.objects.filter(pk=call_with_turns.pk).update(metrics={"interruptions": 1})
    detail = staff_client.get(reverse("admin:calls_call_change", args=[call_with_turns.pk]))
    assert detail.status_code == 200
    assert "1 interruption" in detail.content.decode()
