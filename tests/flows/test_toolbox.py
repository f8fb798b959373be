"""The flow's tool box alone: what a node offers, what it refuses, what a transition does."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from orchestrator.config import CallConfig
from orchestrator.flows import parse_flow
from orchestrator.flows.toolbox import FlowToolBox
from orchestrator.recorder_queue import RecorderQueue
from orchestrator.stats import CallStats
from orchestrator.tools import ToolCall, ToolSpec
from orchestrator.tools.builtin import Transfer
from orchestrator.transcript import Transcript
from tests.flows.booking import DETAILS, FLOW

BOOKED = {"party_size": 4, "day": "Friday", "time": "21:00", "name": "Lola"}


class Recorder:
    async def call_started(self, config): ...
    async def turn_recorded(self, turn): ...
    async def turn_unanswered(self, *, sequence, reason): ...
    async def heartbeat(self): ...
    async def call_ended(self, **kwargs): ...


async def emit(event: dict) -> None: ...


def toolbox() -> tuple[FlowToolBox, Transcript]:
    config = CallConfig(
        call_id="c-1", system_prompt="ROLE.",
        tools=(ToolSpec(name="book_table", description="Book.", parameters=DETAILS,
                        url="http://127.0.0.1:9/never"),),
        transfer_targets=(("Front desk", "+34910000000"),),
    )  # fmt: skip
    transcript = Transcript(recorder=Recorder(), queue=RecorderQueue("c-1"), stats=CallStats(),
                            wall=lambda t: datetime.now(UTC))  # fmt: skip
    box = FlowToolBox(config, parse_flow(FLOW), transcript=transcript, emit=emit,
                      clock=lambda: 0.0, wall=lambda t: datetime.now(UTC))  # fmt: skip
    return box, transcript


def call(name: str, arguments: object) -> ToolCall:
    return ToolCall(id="1", name=name, arguments=json.dumps(arguments))


async def test_a_node_offers_its_tools_and_transitions_only_and_refuses_the_others():
    box, _ = toolbox()
    assert box.names == ["wants_booking", "speak_to_person"]  # greet: no book_table, no end_call
    result, after = await box.run(call("book_table", BOOKED))
    assert (result.status, after) == ("refused", None)
    assert "not available in the current step (greet)" in result.content
    result, _ = await box.run(call("set_booking_details", BOOKED))  # another node's transition
    assert result.status == "refused" and box.state.node == "greet"


async def test_invalid_values_are_an_error_the_llm_can_act_on_and_the_node_stays():
    box, _ = toolbox()
    await box.run(call("wants_booking", {}))
    result, _ = await box.run(call("set_booking_details", {**BOOKED, "party_size": "four"}))
    assert result.status == "error"
    assert result.content.startswith("Invalid values for set_booking_details: party_size:")
    assert box.state.node == "collect" and box.state.values == {}
    result, _ = await box.run(call("set_booking_details", BOOKED))
    assert result.ok and json.loads(result.content)["moved_to"] == "confirm"
    assert box.state.values == BOOKED
    # The new node's prompt: the role, its task, the values.
    system = box.messages()[0]["content"]
    assert system.startswith("ROLE.") and "CONFIRM:" in system and '"name": "Lola"' in system


async def test_entering_a_transfer_node_says_its_line_and_asks_for_the_transfer():
    box, _ = toolbox()
    result, after = await box.run(call("speak_to_person", {}))
    assert result.ok and box.state.node == "transfer"
    assert after == Transfer(destination="+34910000000", label="Front desk")
    assert box.take_lines() == ["Putting you through."] and box.take_lines() == []


def test_a_flow_on_a_profile_with_no_tools_still_offers_its_transitions():
    """No end_call, no transfer targets, no HTTP tools: the box must still be truthy, or the
    reply never lets the LLM call a transition and the flow is never followed."""
    config = CallConfig(call_id="c-2", system_prompt="ROLE.", end_call_enabled=False)
    transcript = Transcript(recorder=Recorder(), queue=RecorderQueue("c-2"), stats=CallStats(),
                            wall=lambda t: datetime.now(UTC))  # fmt: skip
    box = FlowToolBox(config, parse_flow(FLOW), transcript=transcript, emit=emit,
                      clock=lambda: 0.0, wall=lambda t: datetime.now(UTC))  # fmt: skip
    assert not box._specs  # the profile itself offers nothing
    assert box.names == ["wants_booking", "speak_to_person"]
    assert bool(box)
