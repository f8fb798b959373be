import pytest
from django.urls import reverse
from django.utils import timezone

from calls import services

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
