import json

import pytest
from django.utils import timezone

from calls import inline_tasks, services
from calls.models import Call, ExtractionStatus
from calls.webhooks import sign
from tests.fake_vendor import Reply

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {
    "summary": "The caller booked a table for two tomorrow at 8 pm.",
    "intent": "book_table",
    "sentiment": "positive",
    "extracted_entities": {"party_size": 2, "time": "20:00"},
    "next_action": "confirm the booking by SMS",
    "party_size": 2,
    "booking_time": "tomorrow 20:00",
    "customer_name": "Ana",
}


@pytest.fixture
def vendor(groq_vendor):
    return groq_vendor


def _ended_call(profile, *, user_text="A table for two tomorrow at eight, please. I'm Ana."):
    call = services.call_start(profile=profile, channel="browser")
    now = timezone.now()
    if user_text:
        services.turn_record(
            call_id=call.id, role="user", text=user_text, started_at=now, ended_at=now
        )
        services.turn_record(
            call_id=call.id, role="assistant", text="Done!", started_at=now, ended_at=now
        )
    services.call_end(call_id=call.id, reason="caller_hangup")  # on_commit -> eager extract_call
    assert inline_tasks.wait_idle(30)  # eager tasks run off the call's thread
    call.refresh_from_db()
    return call


def test_ending_a_call_extracts_its_data_with_the_groq_model(profile, vendor, settings):
    vendor.default["chat"] = Reply.chat("Here you go:\n```json\n" + json.dumps(GOOD) + "\n```")
    call = _ended_call(profile)

    assert call.extraction_status == ExtractionStatus.DONE, call.extraction_error
    assert call.extraction["intent"] == "book_table" and call.extraction["party_size"] == 2
    request = vendor.calls("chat")[0]
    assert request.json["model"] == settings.GROQ_EXTRACTION_MODEL
    assert "A table for two" in json.dumps(request.json["messages"])
    # The profile's schema fields are asked for.
    assert "booking_time" in request.json["messages"][0]["content"]


def test_a_second_run_on_a_done_call_does_nothing(profile, vendor):
    vendor.default["chat"] = Reply.chat(json.dumps(GOOD))
    call = _ended_call(profile)
    from calls.tasks import extract_call

    extract_call.delay(str(call.pk))
    assert len(vendor.calls("chat")) == 1


def test_calls_without_user_speech_are_skipped(profile, vendor):
    call = _ended_call(profile, user_text="")
    assert call.extraction_status == ExtractionStatus.SKIPPED
    assert vendor.calls("chat") == []


def test_an_answer_that_breaks_the_schema_fails_with_the_reason(profile, vendor):
    vendor.default["chat"] = Reply.chat(json.dumps({"summary": "x", "sentiment": "furious"}))
    call = _ended_call(profile)
    assert call.extraction_status == ExtractionStatus.FAILED
    assert "invalid answer" in call.extraction_error


def test_transient_errors_are_retried_then_succeed(profile, vendor):
    vendor.script("chat", Reply.error(503), Reply.error(429))
    vendor.default["chat"] = Reply.chat(json.dumps(GOOD))
    call = _ended_call(profile)
    assert call.extraction_status == ExtractionStatus.DONE
    assert len(vendor.calls("chat")) >= 3


def test_persistent_transient_errors_end_in_failed_after_bounded_retries(profile, vendor):
    vendor.default["chat"] = Reply.error(500)
    call = _ended_call(profile)
    assert call.extraction_status == ExtractionStatus.FAILED
    assert "gave up" in call.extraction_error
    assert (
        len(vendor.calls("chat")) <= 4 * 3
    )  # 4 task attempts, each with the SDK's own bounded retries


def test_without_any_key_an_offline_heuristic_is_used_and_labelled(profile, settings):
    settings.GROQ_API_KEY = ""
    call = _ended_call(profile)
    assert call.extraction_status == ExtractionStatus.DONE
    assert call.extraction["engine"] == "offline-heuristic"
    assert set(GOOD) <= set(call.extraction)


def test_profile_webhook_receives_the_signed_call(profile, vendor, httpserver_calls):
    url, received = httpserver_calls
    profile.webhook_url = url
    profile.webhook_secret = "whsec"
    profile.save()
    vendor.default["chat"] = Reply.chat(json.dumps(GOOD))
    call = _ended_call(profile)

    assert len(received) == 1
    body = received[0]
    assert body["event"] == "call.analyzed" and body["call"]["id"] == str(call.pk)
    assert body["extraction"]["data"]["intent"] == "book_table"
    assert [t["role"] for t in body["transcript"]] == ["user", "assistant"]
    assert Call.objects.get(pk=call.pk).webhook_status == "delivered"


def test_webhook_signature_is_hmac_sha256_of_the_body():
    assert sign("k", b"{}") == "sha256=" + __import__("hmac").new(b"k", b"{}", "sha256").hexdigest()


def test_the_admin_action_reruns_the_extraction_of_ended_calls_only(profile, vendor, staff_client):
    vendor.default["chat"] = Reply.chat(json.dumps(GOOD))
    ended = _ended_call(profile)
    live = services.call_start(profile=profile, channel="browser")
    response = staff_client.post(
        "/admin/calls/call/",
        {"action": "rerun_extraction", "_selected_action": [str(ended.pk), str(live.pk)]},
    )
    assert response.status_code == 302
    assert inline_tasks.wait_idle(30)
    assert len(vendor.calls("chat")) == 2  # once when the call ended, once re-run
    assert Call.objects.get(pk=ended.pk).extraction_status == ExtractionStatus.DONE
    assert Call.objects.get(pk=live.pk).extraction_status == ExtractionStatus.PENDING
