"""The admin side of tools: HTTP tools on the profile page and their own page, the "test this
tool" view against a real local endpoint, schema validation, and tool turns, transfers and
answering-machine verdicts on the call page."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from django.utils import timezone

from calls import services
from calls.models import Call, ProfileTool
from tests.calls.test_admin_pages import profile_form_data
from tests.tools.fake_tool_server import SECRET, serving

pytestmark = pytest.mark.django_db

BOOKING_SCHEMA = {
    "type": "object",
    "properties": {
        "party_size": {"type": "integer", "minimum": 1},
        "day": {"type": "string", "format": "date"},
        "name": {"type": "string", "examples": ["Lola"]},
    },
    "required": ["party_size", "day"],
}


@pytest.fixture
def tool_server():
    with serving() as server:
        yield server


@pytest.fixture
def tool(profile, tool_server):
    return ProfileTool.objects.create(
        profile=profile,
        name="book_table",
        description="Book a table once you know the day and the party size.",
        parameters=BOOKING_SCHEMA,
        url=tool_server.url("/echo"),
        secret=SECRET,
        timeout_s=3,
    )


def test_the_profile_page_shows_the_tools_fieldset_and_its_http_tools(staff_client, tool):
    response = staff_client.get(reverse("admin:calls_agentprofile_change", args=[tool.profile.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "The local offline LLM cannot call tools" in html
    for field in ("end_call_enabled", "transfer_destinations", "tool_filler", "voicemail_action"):
        assert f'name="{field}"' in html
    assert "book_table" in html
    assert reverse("admin:calls_profiletool_test", args=[tool.pk]) in html
    assert reverse("admin:calls_profiletool_add") + f"?profile={tool.profile.pk}" in html


def test_a_tool_is_switched_off_from_the_profile_page(staff_client, tool):
    url, data = profile_form_data(staff_client, tool.profile)
    data.update(
        {
            "tools-TOTAL_FORMS": "1",
            "tools-INITIAL_FORMS": "1",
            "tools-0-id": str(tool.pk),
            "tools-0-profile": str(tool.profile.pk),
            "tools-0-name": "book_table",
            "tools-0-method": "POST",
            "tools-0-url": tool.url,
            "tools-0-timeout_s": "2.5",
            # "tools-0-is_active" absent: the box is unticked
        }
    )

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    tool.refresh_from_db()
    assert tool.is_active is False and tool.timeout_s == 2.5
    assert tool.description.startswith("Book a table")  # not on the row: left as it was


def test_the_tool_page_has_a_test_button(staff_client, tool):
    response = staff_client.get(reverse("admin:calls_profiletool_change", args=[tool.pk]))

    assert response.status_code == 200
    assert b"Test this tool" in response.content
    assert reverse("admin:calls_profiletool_test", args=[tool.pk]).encode() in response.content


def test_the_test_view_starts_from_example_arguments_that_fit_the_schema(staff_client, tool):
    response = staff_client.get(reverse("admin:calls_profiletool_test", args=[tool.pk]))

    assert response.status_code == 200
    example = json.loads(response.context["form"]["arguments"].value())
    assert example["party_size"] == 2 and example["name"] == "Lola"
    assert len(example["day"]) == 10  # an ISO date


def test_testing_a_tool_sends_a_signed_request_and_shows_what_came_back(
    staff_client, tool, tool_server
):
    arguments = {"party_size": 4, "day": "2026-12-24", "name": "Lola"}

    response = staff_client.post(
        reverse("admin:calls_profiletool_test", args=[tool.pk]),
        {"arguments": json.dumps(arguments)},
    )

    assert response.status_code == 200
    (received,) = tool_server.requests
    assert received.signature_valid
    assert received.json() == {
        "tool": "book_table",
        "call_id": "admin-test",
        "arguments": arguments,
    }
    outcome = response.context["outcome"]
    assert outcome["body"] == received.body.decode()
    assert json.loads(outcome["result"]) == {"signature_valid": True, "received": arguments}
    html = response.content.decode()
    assert ">ok<" in html and "X-Voiceapp-Signature: sha256=" in html
    assert "&quot;signature_valid&quot;:true" in html


def test_testing_a_failing_tool_shows_the_error(staff_client, tool, tool_server):
    tool.url = tool_server.url("/fail")
    tool.save()

    response = staff_client.post(
        reverse("admin:calls_profiletool_test", args=[tool.pk]),
        {"arguments": '{"party_size": 2, "day": "2026-12-24"}'},
    )

    assert b">error<" in response.content and b"HTTP 500" in response.content


def test_arguments_that_do_not_fit_the_schema_send_nothing(staff_client, tool, tool_server):
    response = staff_client.post(
        reverse("admin:calls_profiletool_test", args=[tool.pk]),
        {"arguments": '{"party_size": 0}'},
    )

    assert response.status_code == 200
    assert b"None sent" in response.content and b"&#x27;day&#x27; is a required" in response.content
    assert tool_server.requests == []


def test_arguments_that_are_not_a_json_object_are_a_form_error(staff_client, tool, tool_server):
    response = staff_client.post(
        reverse("admin:calls_profiletool_test", args=[tool.pk]), {"arguments": "[1, 2]"}
    )

    assert b"The arguments must be a JSON object" in response.content
    assert tool_server.requests == []


def test_the_test_view_is_for_staff_only(client, tool, tool_server):
    response = client.post(
        reverse("admin:calls_profiletool_test", args=[tool.pk]),
        {"arguments": '{"party_size": 2, "day": "2026-12-24"}'},
    )

    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert tool_server.requests == []


def _tool_form(profile, **overrides):
    data = {
        "profile": profile.pk,
        "name": "check_availability",
        "is_active": "on",
        "description": "Free tables on a day.",
        "parameters": '{"type": "object", "properties": {"day": {"type": "string"}}}',
        "method": "GET",
        "url": "https://tools.example.com/availability",
        "timeout_s": "2",
        "secret": "s3cret",
    }
    data.update(overrides)
    return data


def test_a_tool_is_added_from_the_admin(staff_client, profile):
    response = staff_client.post(reverse("admin:calls_profiletool_add"), _tool_form(profile))

    assert response.status_code == 302
    saved = ProfileTool.objects.get(profile=profile, name="check_availability")
    assert saved.method == "GET" and saved.parameters["properties"] == {"day": {"type": "string"}}


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ('{"type": "array"}', "Tool parameters must be a JSON Schema with &quot;type&quot;"),
        ('{"type": "object", "properties": {"day": {"type": 7}}}', "Invalid JSON Schema"),
        ("{not json", "Enter a valid JSON"),
    ],
)  # fmt: skip
def test_an_invalid_schema_is_rejected_with_a_clear_message(
    staff_client, profile, parameters, message
):
    response = staff_client.post(
        reverse("admin:calls_profiletool_add"), _tool_form(profile, parameters=parameters)
    )

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ProfileTool.objects.filter(name="check_availability").exists()


def test_a_built_in_tool_name_is_refused(staff_client, profile):
    response = staff_client.post(
        reverse("admin:calls_profiletool_add"), _tool_form(profile, name="end_call")
    )

    assert response.status_code == 200 and b"is a built-in tool" in response.content


def test_the_tool_timeout_is_bounded(staff_client, profile):
    response = staff_client.post(
        reverse("admin:calls_profiletool_add"), _tool_form(profile, timeout_s="30")
    )

    assert response.status_code == 200 and b"less than or equal to 10" in response.content


@pytest.fixture
def transferred_call(profile):
    call = services.call_start(profile=profile, channel="twilio", external_id="CA-tool-1")
    now = timezone.now()
    services.turn_record(
        call_id=call.id, role="user", text="a table for four tomorrow", started_at=now, ended_at=now
    )
    services.turn_record(
        call_id=call.id, role="tool", text="", started_at=now, ended_at=now,
        tool={
            "name": "book_table",
            "arguments": {"party_size": 4, "day": "2026-12-24"},
            "result": '{"booked":true,"ref":"A7"}' + "x" * 1000,
            "status": "ok",
            "latency_ms": 212.4,
        },
    )  # fmt: skip
    services.call_end(call_id=call.id, reason="transferred", transferred_to="+34910000000")
    # The answering-machine verdict arrives from the carrier's webhook; set it as stored.
    Call.objects.filter(pk=call.pk).update(answered_by="human")
    return call


def test_the_call_page_shows_tool_turns_transfer_and_answering_machine_verdict(
    staff_client, transferred_call
):
    response = staff_client.get(reverse("admin:calls_call_change", args=[transferred_call.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "<code>book_table(" in html and "&quot;party_size&quot;: 4" in html
    assert ">ok<" in html and "212 ms" in html
    assert "&quot;ref&quot;:&quot;A7&quot;" in html
    assert "x" * 400 not in html.split("title=", 1)[0]  # the visible result is shortened
    assert "Transferred → +34910000000" in html
    assert "human" in html


def test_the_calls_list_shows_where_a_call_was_transferred(staff_client, transferred_call):
    response = staff_client.get("/admin/calls/call/", {"end_reason": "transferred"})

    assert response.status_code == 200
    assert "Transferred → +34910000000" in response.content.decode()
