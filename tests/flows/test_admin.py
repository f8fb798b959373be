"""The profile page: a flow is checked on save (each problem shown), and drawn once saved."""

from __future__ import annotations

import json

import pytest

from calls.models import AgentProfile, ProfileTool
from calls.selectors import call_config_for
from tests.calls.test_admin_pages import profile_form_data
from tests.flows.booking import FLOW, flow

pytestmark = pytest.mark.django_db


@pytest.fixture
def booking_profile(profile):
    profile.transfer_destinations = "Front desk = +34910000000"
    profile.save()
    ProfileTool.objects.create(profile=profile, name="book_table", description="Book.",
                               url="https://bookings.example.com/book")  # fmt: skip
    return profile


def post_flow(staff_client, profile, data) -> object:
    url, form = profile_form_data(staff_client, profile)
    form["flow"] = json.dumps(data)
    form["transfer_destinations"] = profile.transfer_destinations
    return staff_client.post(url, form)


def test_a_valid_flow_is_saved_drawn_and_reaches_the_call_config(staff_client, booking_profile):
    response = post_flow(staff_client, booking_profile, FLOW)
    assert response.status_code == 302, response.context["adminform"].form.errors
    profile = AgentProfile.objects.get(pk=booking_profile.pk)
    assert profile.flow == FLOW

    page = staff_client.get(f"/admin/calls/agentprofile/{profile.pk}/change/").content.decode()
    start = page.index('aria-label="Flow diagram"')
    svg = page[start : page.index("</svg>", start)]
    for name in ("greet", "collect", "confirm", "book", "goodbye", "transfer", "wants_booking"):
        assert f">{name}<" in svg
    assert "From any node: speak_to_person → transfer" in svg
    # Indented for editing (in the order the database keeps the keys).
    assert '\n      &quot;name&quot;: &quot;greet&quot;,\n' in page

    config = call_config_for(profile=profile, channel="twilio")
    assert config.flow is not None and config.flow.start == "greet"


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda d: d.update(start="lobby"), "The start node “lobby” is not a node."),
        (lambda d: d["nodes"].append({"name": "island"}),
         "Node “island” cannot be reached from the start node."),
        (lambda d: d["nodes"][2]["transitions"][0].pop("schema"),
         "Transition “confirmed” of node “confirm” has no schema."),
        (lambda d: d["nodes"][3].update(tools=["pay_deposit"]),
         "Tool “pay_deposit” in node “book” is not defined on the profile."),
        (lambda d: d["nodes"][1].update(fallback="operator"),
         "The fallback of node “collect” is an unknown node “operator”."),
    ],
)  # fmt: skip
def test_an_invalid_flow_is_refused_with_the_specific_error(
    staff_client, booking_profile, break_it, message
):
    data = flow()
    break_it(data)
    response = post_flow(staff_client, booking_profile, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["flow"] == [message]
    assert message.split("“")[0] in response.content.decode()  # shown under the field
    assert AgentProfile.objects.get(pk=booking_profile.pk).flow is None


def test_a_profile_without_a_flow_says_so_and_runs_without_one(staff_client, profile):
    page = staff_client.get(f"/admin/calls/agentprofile/{profile.pk}/change/").content.decode()
    assert "No flow: the system prompt alone drives the call." in page
    assert call_config_for(profile=profile, channel="browser").flow is None


def test_a_flow_calls_page_shows_its_node_path_and_collected_values(staff_client, profile):
    from calls import services

    call = services.call_start(profile=profile, channel="twilio", external_id="CA-flow")
    flow = {
        "node": "goodbye",
        "path": [{"node": "greet", "entered_at": "2026-11-28T12:00:00+00:00", "via": "",
                  "values": {}},
                 {"node": "goodbye", "entered_at": "2026-11-28T12:00:09+00:00", "via": "booked",
                  "values": {"ref": "A1"}}],
        "values": {"party_size": 4, "ref": "A1"},
    }  # fmt: skip
    services.call_end(call_id=call.pk, reason="agent_hangup", metrics={"turns": 3, "flow": flow})
    page = staff_client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
    assert "Flow path" in page and "greet → goodbye" in page
    assert "Collected values" in page and "&quot;party_size&quot;: 4" in page


def test_a_node_listing_a_built_in_the_profile_turned_off_is_refused(
    staff_client, booking_profile
):
    url, form = profile_form_data(staff_client, booking_profile)
    form.pop("end_call_enabled", None)  # "agent may hang up" unticked
    form["flow"] = json.dumps(FLOW)  # its goodbye node lists end_call
    form["transfer_destinations"] = booking_profile.transfer_destinations
    response = staff_client.post(url, form)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["flow"] == [
        "Tool “end_call” in node “goodbye” is turned off on the profile "
        "(“agent may hang up” is off)."
    ]
    assert AgentProfile.objects.get(pk=booking_profile.pk).flow is None
