"""Our REST calls to the carriers (hang-up, outbound dial), against a local fake of their APIs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from calls import global_stop
from calls.models import Call, CallStatus, EndReason
from telephony import tokens
from telephony.telnyx import rest as telnyx
from telephony.telnyx import wire as telnyx_wire
from telephony.twilio import rest as twilio
from tests.scripted import scripted_profile

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("calls_allowed")]

OUTBOUND = "/api/calls/outbound/"
AUTH = {"Authorization": "Bearer test-admin-key"}


def dial(client, body: dict, headers: dict | None = None):
    return client.post(
        OUTBOUND,
        json.dumps(body),
        content_type="application/json",
        headers=AUTH if headers is None else headers,
    )


def test_twilio_hang_up_completes_the_call_and_treats_404_as_already_ended(fake_carrier):
    assert twilio.hang_up("CA123") is True
    fake_carrier.script(
        "twilio.update", 404, {"code": 20404, "message": "The requested resource was not found"}
    )
    assert twilio.hang_up("CA123") is False
    first, _ = fake_carrier.of("twilio.update")
    assert first.path == f"/2010-04-01/Accounts/{first.params['account']}/Calls/CA123.json"
    assert first.body == {"Status": "completed"}


def test_other_twilio_errors_are_raised(fake_carrier):
    from twilio.base.exceptions import TwilioRestException

    fake_carrier.script("twilio.update", 500, {"code": 20500, "message": "Internal Server Error"})
    with pytest.raises(TwilioRestException):
        twilio.hang_up("CA123")


def test_telnyx_hang_up_treats_90018_as_already_ended(fake_carrier):
    assert telnyx.CallControl().hang_up("v3:abc") is True
    fake_carrier.script(
        "telnyx.hangup", 422, {"errors": [{"code": "90018", "title": "Call has already ended"}]}
    )
    assert telnyx.CallControl().hang_up("v3:abc") is False
    fake_carrier.script(
        "telnyx.hangup", 401, {"errors": [{"code": "10009", "title": "Authentication failed"}]}
    )
    with pytest.raises(telnyx.CallControlError):
        telnyx.CallControl().hang_up("v3:abc")
    assert all(r.headers["authorization"] == "Bearer KEYtest" for r in fake_carrier.requests)


def test_the_outbound_api_places_a_twilio_call_with_the_stream_twiml(client, fake_carrier):
    scripted_profile(slug="sales")
    response = dial(client, {"to": "+34600111222", "profile": "sales"})

    assert response.status_code == 201, response.content
    data = response.json()
    call = Call.objects.get(pk=data["call_id"])
    assert (call.direction, call.status, call.channel) == ("outbound", CallStatus.RINGING, "twilio")
    assert (call.to_number, call.from_number, call.profile.slug) == (
        "+34600111222",
        "+34910000001",
        "sales",
    )
    assert call.external_id == data["external_id"] == "CA" + "f" * 32
    (create,) = fake_carrier.of("twilio.create")
    assert create.body["To"] == "+34600111222" and create.body["From"] == "+34910000001"
    assert create.body["StatusCallback"] == "https://agent.example.com/telephony/twilio/status/"
    stream = ET.fromstring(create.body["Twiml"]).find("./Connect/Stream")
    assert stream.get("url") == "wss://agent.example.com/ws/telephony/twilio/"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert parameters["call_id"] == str(call.id)
    assert tokens.peek(parameters["token"], carrier="twilio").call_id == str(call.id)


def test_the_outbound_api_places_a_telnyx_call_streaming_to_us(client, fake_carrier):
    scripted_profile(is_default=True)
    response = dial(client, {"to": "+34600111222", "carrier": "telnyx"})

    assert response.status_code == 201, response.content
    call = Call.objects.get(pk=response.json()["call_id"])
    assert (call.channel, call.external_id) == ("telnyx", "v3:fake-outbound-call")
    (sent,) = fake_carrier.of("telnyx.dial")
    assert sent.body["connection_id"] == "2370462823464289344" and sent.body["to"] == "+34600111222"
    assert (
        sent.body["stream_bidirectional_mode"] == "rtp"
        and sent.body["stream_bidirectional_codec"] == "PCMU"
    )
    secret = (
        sent.body["stream_url"]
        .removeprefix("wss://agent.example.com/ws/telephony/telnyx/")
        .rstrip("/")
    )
    assert tokens.peek(secret, carrier="telnyx").call_id == str(call.id)
    assert telnyx_wire.read_client_state(sent.body["client_state"])["call_id"] == str(call.id)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": "Basic dGVzdA=="}, 401),
    ],
)
def test_the_outbound_api_needs_the_admin_api_key(client, fake_carrier, headers, status):
    scripted_profile()
    assert dial(client, {"to": "+34600111222"}, headers=headers).status_code == status
    assert not Call.objects.exists() and not fake_carrier.requests


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"to": "600111222"}, 400),
        ({"to": "+34600111222", "profile": "nope"}, 404),
        ({"to": "+34600111222", "carrier": "pigeon"}, 400),
        ({"to": 34600111222}, 400),
    ],
)
def test_the_outbound_api_refuses_bad_requests(client, fake_carrier, body, status):
    scripted_profile()
    assert dial(client, body).status_code == status
    assert not fake_carrier.requests


def test_a_refused_dial_ends_the_call_record_as_not_connected(client, fake_carrier):
    scripted_profile()
    fake_carrier.script(
        "twilio.create", 400, {"code": 21211, "message": "Invalid 'To' Phone Number"}
    )
    response = dial(client, {"to": "+34600111222"})
    assert response.status_code == 502
    call = Call.objects.get()
    assert (
        call.end_reason == EndReason.NOT_CONNECTED
        and "Invalid 'To' Phone Number" in call.error_detail
    )


def test_no_outbound_calls_while_calls_are_globally_stopped(client, fake_carrier, settings):
    scripted_profile()
    for _ in range(settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW):
        global_stop.report_critical_error(reason="test")
    assert dial(client, {"to": "+34600111222"}).status_code == 503
    assert not fake_carrier.requests


def test_outbound_calls_need_the_carrier_configured(client, settings):
    scripted_profile()
    settings.TWILIO_ACCOUNT_SID = ""
    response = dial(client, {"to": "+34600111222"})
    assert response.status_code == 503 and "TWILIO_ACCOUNT_SID" in response.json()["error"]


def test_staff_can_place_an_outbound_call_from_the_profile_admin(
    client, fake_carrier, django_user_model
):
    profile = scripted_profile(slug="sales")
    admin_user = django_user_model.objects.create_superuser(
        "boss", "boss@example.com", "pw-12345-x"
    )
    client.force_login(admin_user)
    url = f"/admin/calls/agentprofile/{profile.pk}/call/"
    assert client.get(url).status_code == 200

    bad = client.post(url, {"to": "600 111 222", "carrier": "twilio"})
    assert bad.status_code == 200 and b"E.164" in bad.content
    response = client.post(url, {"to": "+34600111222", "carrier": "twilio"})

    call = Call.objects.get(direction="outbound")
    assert response.status_code == 302 and str(call.pk) in response["Location"]
    assert call.to_number == "+34600111222" and call.profile == profile
    assert len(fake_carrier.of("twilio.create")) == 1
