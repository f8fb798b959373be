"""The post-call analysis of a flow call carries its path and collected values."""

from __future__ import annotations

import json

import pytest

from calls import services
from calls.extraction import extract_call_data
from calls.models import Call
from tests.fake_vendor import FakeVendor, Reply

pytestmark = pytest.mark.django_db

ANALYSIS = {"summary": "A booking.", "intent": "book_table", "sentiment": "positive",
            "extracted_entities": {}, "next_action": "none"}  # fmt: skip
FLOW = {"node": "goodbye", "values": {"party_size": 4, "ref": "A1"},
        "path": [{"node": "greet", "entered_at": "2026-11-28T12:00:00+00:00", "via": "",
                  "values": {}},
                 {"node": "goodbye", "entered_at": "2026-11-28T12:00:09+00:00", "via": "booked",
                  "values": {"ref": "A1"}}]}  # fmt: skip


def test_the_analysis_of_a_flow_call_holds_its_path_and_values(settings, profile):
    call = services.call_start(profile=profile, channel="twilio", external_id="CA-flow")
    services.turn_record(call_id=call.pk, role="user", text="A table for four.",
                         started_at=call.started_at, ended_at=call.started_at)  # fmt: skip
    with FakeVendor() as vendor:
        settings.GROQ_API_KEY = "gsk-test"
        settings.GROQ_BASE_URL = vendor.groq_base_url
        vendor.script("chat", Reply.chat(json.dumps(ANALYSIS)))
        services.call_end(call_id=call.pk, reason="agent_hangup", metrics={"flow": FLOW})
        assert extract_call_data(call_id=str(call.pk), timeout_s=5) == "done"
    extraction = Call.objects.get(pk=call.pk).extraction
    assert extraction["flow"] == {"path": ["greet", "goodbye"], "values": {"party_size": 4,
                                                                          "ref": "A1"}}
    assert extraction["intent"] == "book_table"
