"""The shipped demo flow: seeded valid, and its built-in booking store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calls.selectors import call_config_for
from calls.services import profile_ensure_demo_flow, profile_ensure_demo_flow_es
from orchestrator.flows import parse_flow
from orchestrator.flows.demo_booking import book

VALUES = {"party_size": 4, "day": "Friday", "time": "21:00", "name": "Lola"}


@pytest.mark.django_db
def test_the_demo_flow_profile_is_seeded_valid_and_reaches_the_call():
    profile = profile_ensure_demo_flow()
    profile._check_flow()  # what saving it in the admin checks
    flow = call_config_for(profile=profile, channel="browser").flow
    assert flow is not None
    assert list(flow.nodes) == ["greet", "collect", "confirm", "book", "goodbye", "transfer"]
    assert flow.nodes["book"].tools == ("demo_booking",)
    assert profile_ensure_demo_flow().pk == profile.pk  # seeding twice: one profile


def test_the_demo_booking_store_answers_a_reference_and_refuses_missing_values():
    first = book("call-1", VALUES)
    assert first.ok
    answer = json.loads(first.content)
    assert answer["booked"] is True and answer["ref"].startswith("CL-")
    assert book("call-1", VALUES).content == first.content  # a retry is the same booking
    refused = book("call-1", {"party_size": 4})
    assert refused.status == "error" and "'day' is a required property" in refused.content


def test_the_demo_flow_is_valid_without_any_profile_tool():
    from calls.demo_flows import DEMO_FLOW_EN

    parse_flow(DEMO_FLOW_EN, known_tools=[], transfer_labels=["Front desk"])


@pytest.mark.django_db
def test_the_spanish_demo_flow_is_the_same_graph_in_spanish():
    profile = profile_ensure_demo_flow_es()
    profile._check_flow()
    flow = call_config_for(profile=profile, channel="twilio").flow
    english = parse_flow(profile_ensure_demo_flow().flow)
    assert flow.edges() == english.edges()
    assert flow.nodes["collect"].task.startswith("Recoge la reserva")
    assert flow.nodes["transfer"].on_enter[1].text == "Recepción"


@pytest.mark.django_db
def test_seeding_again_updates_an_unedited_earlier_demo_flow_and_keeps_an_edited_one():
    from calls.demo_flows import DEMO_FLOW_EN

    profile = profile_ensure_demo_flow()
    # The demo flow as the first version seeded it (its fingerprint is in calls/services.py).
    profile.flow = json.loads((Path(__file__).parent / "data" / "demo_flow_en_v1.json").read_text())
    profile.save()
    assert profile_ensure_demo_flow().flow == DEMO_FLOW_EN

    edited = {**DEMO_FLOW_EN, "start": "collect"}
    profile.flow = edited
    profile.save()
    assert profile_ensure_demo_flow().flow == edited
