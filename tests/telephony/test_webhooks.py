"""Carrier webhooks with recorded payloads (tests/data/), signed here with test keys."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import pytest
from django.utils import timezone
from nacl.signing import SigningKey

from calls import global_stop
from calls.models import Call, CallStatus, EndReason
from telephony import tokens
from telephony.telnyx import wire as telnyx
from tests.scripted import scripted_profile
from tests.telephony.conftest import PUBLIC, payload, telnyx_headers, twilio_signature

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("calls_allowed")]

VOICE = "/telephony/twilio/voice/"
STATUS = "/telephony/twilio/status/"
TELNYX = "/telephony/telnyx/webhook/"


def post_twilio(
    client, path: str, params: dict[str, str], *, signature: str | None = None, **headers
):
    if signature is None:
        signature = twilio_signature(PUBLIC + path, params)
    if signature:
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    return client.post(path, params, **headers)


def post_telnyx(
    client, body: dict | bytes, key: SigningKey | None, *, timestamp: int | None = None
):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = telnyx_headers(key, raw, timestamp=timestamp) if key is not None else {}
    return client.post(TELNYX, raw, content_type="application/json", headers=headers)


def stream_of(twiml: bytes) -> tuple[str, dict[str, str]]:
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None, twiml
    return stream.get("url"), {p.get("name"): p.get("value") for p in stream.findall("Parameter")}


# --- Twilio -------------------------------------------------------------------------------


def test_a_signed_twilio_call_gets_a_connect_stream_with_a_call_token(client):
    profile = scripted_profile(phone_numbers="+34910000001")
    params = payload("twilio_voice_inbound.json")

    response = post_twilio(client, VOICE, params)

    assert response.status_code == 200 and response["Content-Type"].startswith("text/xml")
    url, parameters = stream_of(response.content)
    assert url == "wss://agent.example.com/ws/telephony/twilio/"
    call = Call.objects.get(pk=parameters["call_id"])
    assert tokens.peek(parameters["token"], carrier="twilio").call_id == str(call.id)
    assert (call.status, call.channel, call.direction) == (CallStatus.RINGING, "twilio", "inbound")
    assert (call.external_id, call.from_number, call.to_number) == (
        params["CallSid"],
        params["From"],
        params["To"],
    )
    assert call.profile == profile


@pytest.mark.parametrize(
    "signature",
    ["", "bm90IGEgc2lnbmF0dXJl", twilio_signature(PUBLIC + VOICE, {"From": "+1"}, "another-token")],
)
def test_it_rejects_unsigned_or_forged_twilio_webhooks(client, signature):
    scripted_profile()
    response = post_twilio(client, VOICE, payload("twilio_voice_inbound.json"), signature=signature)
    assert response.status_code == 403
    assert not Call.objects.exists()


def test_twilio_signatures_are_checked_against_the_public_url_not_the_proxied_one(client):
    scripted_profile()
    params = payload("twilio_voice_inbound.json")
    # Behind a tunnel Django sees http://testserver...; Twilio signed the public https URL.
    proxied = twilio_signature("http://testserver" + VOICE, params)
    assert post_twilio(client, VOICE, params, signature=proxied).status_code == 403
    assert post_twilio(client, VOICE, params, HTTP_HOST="localhost:8000").status_code == 200


def test_a_tampered_twilio_param_breaks_the_signature(client):
    scripted_profile()
    params = payload("twilio_voice_inbound.json")
    signature = twilio_signature(PUBLIC + VOICE, params)
    response = post_twilio(client, VOICE, {**params, "From": "+15550000000"}, signature=signature)
    assert response.status_code == 403


def test_the_profile_comes_from_the_called_number_then_the_query_then_the_default(client):
    default = scripted_profile(slug="front-desk", is_default=True)
    by_number = scripted_profile(slug="sales", phone_numbers="+34910000009, +34910000001")
    by_query = scripted_profile(slug="support")
    params = payload("twilio_voice_inbound.json")

    def profile_for(params: dict[str, str], path: str = VOICE) -> str:
        _, parameters = stream_of(post_twilio(client, path, params).content)
        return Call.objects.get(pk=parameters["call_id"]).profile.slug

    assert profile_for(params) == by_number.slug
    other = {**params, "To": "+34999999999", "Called": "+34999999999", "CallSid": "CA2"}
    assert profile_for(other, VOICE + "?profile=support") == by_query.slug
    assert profile_for({**other, "CallSid": "CA3"}, VOICE + "?profile=nope") == default.slug
    assert profile_for({**other, "CallSid": "CA4"}) == default.slug


def test_while_calls_are_globally_stopped_twilio_callers_hear_the_apology_and_are_hung_up(
    client, settings
):
    scripted_profile(apology_message="Sorry, we cannot take calls right now.", is_default=True)
    for _ in range(settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW):
        global_stop.report_critical_error(reason="test")

    response = post_twilio(client, VOICE, payload("twilio_voice_inbound.json"))

    root = ET.fromstring(response.content)
    assert response.status_code == 200 and root.find("./Connect") is None
    assert root.find("./Say").text == "Sorry, we cannot take calls right now."
    assert root.find("./Say").get("language") == "en-US"
    assert [child.tag for child in root] == ["Say", "Hangup"]
    call = Call.objects.get()
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.GLOBAL_STOP)


def test_a_repeated_twilio_delivery_reuses_the_call_record(client):
    scripted_profile()
    params = payload("twilio_voice_inbound.json")
    first = stream_of(post_twilio(client, VOICE, params).content)[1]
    second = stream_of(post_twilio(client, VOICE, params).content)[1]
    assert first["call_id"] == second["call_id"] and Call.objects.count() == 1


def test_unsigned_webhooks_pass_only_when_allowed_for_development(client, settings):
    scripted_profile()
    params = payload("twilio_voice_inbound.json")
    assert post_twilio(client, VOICE, params, signature="").status_code == 403
    settings.TELEPHONY_ALLOW_UNSIGNED = True
    assert post_twilio(client, VOICE, params, signature="").status_code == 200


def test_a_twilio_status_callback_ends_an_unanswered_outbound_call_as_not_connected(client):
    params = payload("twilio_status_no_answer.json")
    call = Call.objects.create(
        channel="twilio",
        direction="outbound",
        status=CallStatus.RINGING,
        external_id=params["CallSid"],
        started_at=timezone.now(),
    )
    assert post_twilio(client, STATUS, params).status_code == 204
    assert post_twilio(client, STATUS, params).status_code == 204  # repeated: no-op
    call.refresh_from_db()
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.NOT_CONNECTED)
    assert post_twilio(client, STATUS, params, signature="forged").status_code == 403


def test_twilio_webhooks_only_take_post(client):
    assert client.get(VOICE).status_code == 405


# --- Telnyx -------------------------------------------------------------------------------


def test_a_signed_telnyx_call_is_answered_with_a_bidirectional_pcmu_stream(
    client, telnyx_key, fake_carrier
):
    scripted_profile(phone_numbers="+34910000001")
    body = payload("telnyx_call_initiated.json")

    response = post_telnyx(client, body, telnyx_key)

    assert response.status_code == 204
    control_id = body["data"]["payload"]["call_control_id"]
    call = Call.objects.get()
    assert (call.status, call.channel, call.external_id) == (
        CallStatus.RINGING,
        "telnyx",
        control_id,
    )
    (answer,) = fake_carrier.of("telnyx.answer")
    assert answer.path == f"/v2/calls/{control_id}/actions/answer"
    assert answer.headers["authorization"] == "Bearer KEYtest"
    sent = answer.body
    assert sent["stream_track"] == "inbound_track"
    assert (
        sent["stream_bidirectional_mode"] == "rtp" and sent["stream_bidirectional_codec"] == "PCMU"
    )
    prefix = "wss://agent.example.com/ws/telephony/telnyx/"
    assert sent["stream_url"].startswith(prefix) and sent["stream_url"].endswith("/")
    secret = sent["stream_url"][len(prefix) : -1]
    assert tokens.peek(secret, carrier="telnyx").call_id == str(call.id)
    assert telnyx.read_client_state(sent["client_state"])["call_id"] == str(call.id)


@pytest.mark.parametrize("problem", ["missing", "forged", "stale", "tampered"])
def test_it_rejects_telnyx_webhooks_without_a_valid_fresh_signature(
    client, telnyx_key, fake_carrier, problem
):
    scripted_profile()
    body = json.dumps(payload("telnyx_call_initiated.json")).encode()
    if problem == "missing":
        response = post_telnyx(client, body, None)
    elif problem == "forged":
        response = post_telnyx(client, body, SigningKey.generate())
    elif problem == "stale":
        response = post_telnyx(client, body, telnyx_key, timestamp=int(time.time()) - 301)
    else:
        headers = telnyx_headers(telnyx_key, body)
        response = client.post(
            TELNYX,
            body.replace(b"+34600111222", b"+34600999999"),
            content_type="application/json",
            headers=headers,
        )
    assert response.status_code == 403
    assert not Call.objects.exists() and not fake_carrier.requests


def test_repeated_telnyx_deliveries_answer_once_and_end_once(client, telnyx_key, fake_carrier):
    scripted_profile()
    initiated = payload("telnyx_call_initiated.json")
    for _ in range(2):
        assert post_telnyx(client, initiated, telnyx_key).status_code == 204
    assert Call.objects.count() == 1 and len(fake_carrier.of("telnyx.answer")) == 1

    for name in ("telnyx_call_answered.json", "telnyx_streaming_started.json"):
        assert post_telnyx(client, payload(name), telnyx_key).status_code == 204
    assert Call.objects.get().status == CallStatus.RINGING  # the media socket activates it

    hangup = payload("telnyx_call_hangup.json")
    for _ in range(2):
        assert post_telnyx(client, hangup, telnyx_key).status_code == 204
    call = Call.objects.get()
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.CALLER_HANGUP)
    first_end = call.ended_at
    post_telnyx(client, hangup, telnyx_key)
    call.refresh_from_db()
    assert call.ended_at == first_end


def test_an_unanswered_outbound_telnyx_call_ends_as_not_connected(client, telnyx_key):
    call = Call.objects.create(
        channel="telnyx",
        direction="outbound",
        status=CallStatus.RINGING,
        external_id="v3:out",
        started_at=timezone.now(),
    )
    hangup = payload("telnyx_call_hangup.json")
    hangup["data"]["payload"].update(
        call_control_id="v3:other-id",
        hangup_cause="timeout",
        hangup_source="callee",
        client_state=telnyx.client_state(call_id=str(call.id), mode="stream"),
    )
    assert post_telnyx(client, hangup, telnyx_key).status_code == 204
    call.refresh_from_db()
    assert (call.end_reason, call.error_detail) == (EndReason.NOT_CONNECTED, "telnyx: timeout")


def test_while_calls_are_globally_stopped_telnyx_callers_hear_the_apology_and_are_hung_up(
    client, telnyx_key, fake_carrier, settings
):
    scripted_profile(is_default=True, apology_message="Sorry, no calls now.")
    for _ in range(settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW):
        global_stop.report_critical_error(reason="test")

    post_telnyx(client, payload("telnyx_call_initiated.json"), telnyx_key)
    (answer,) = fake_carrier.of("telnyx.answer")
    assert "stream_url" not in answer.body
    answered = payload("telnyx_call_answered.json")
    answered["data"]["payload"]["client_state"] = answer.body["client_state"]
    post_telnyx(client, answered, telnyx_key)
    (speak,) = fake_carrier.of("telnyx.speak")
    assert speak.body["payload"] == "Sorry, no calls now." and speak.body["language"] == "en-US"
    spoken = {**answered, "data": {**answered["data"], "event_type": "call.speak.ended"}}
    post_telnyx(client, spoken, telnyx_key)
    assert len(fake_carrier.of("telnyx.hangup")) == 1
    assert Call.objects.get().end_reason == EndReason.GLOBAL_STOP


def test_malformed_or_unknown_telnyx_events_never_crash(client, telnyx_key):
    assert post_telnyx(client, b"{not json", telnyx_key).status_code == 400
    assert post_telnyx(client, {"data": {"payload": {}}}, telnyx_key).status_code == 400
    unknown = {"data": {"event_type": "call.recording.saved", "payload": {"call_control_id": "x"}}}
    assert post_telnyx(client, unknown, telnyx_key).status_code == 204


def test_a_failed_answer_ends_the_call_with_the_error(client, telnyx_key, fake_carrier):
    scripted_profile()
    fake_carrier.script(
        "telnyx.answer", 422, {"errors": [{"code": "90015", "title": "Call not found"}]}
    )
    assert post_telnyx(client, payload("telnyx_call_initiated.json"), telnyx_key).status_code == 204
    call = Call.objects.get()
    assert call.end_reason == EndReason.ERROR and "answer failed" in call.error_detail
