"""Where a call stands in its flow: turn limits, values, and what entering a node keeps."""

from __future__ import annotations

from datetime import UTC, datetime

from orchestrator.flows import parse_flow
from orchestrator.flows.state import FlowState
from tests.flows.booking import FLOW

AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
HISTORY = [
    {"role": "user", "content": "A table please."},
    {"role": "assistant", "content": "For how many?"},
    {"role": "user", "content": "Four, Friday at nine, Lola."},
]


def state() -> FlowState:
    return FlowState.begin(parse_flow(FLOW), at=AT)


def test_a_node_over_its_turn_limit_asks_for_its_fallback():
    s = state()
    s.move("collect", via="wants_booking", values={}, at=AT, history=[])
    assert [s.count_turn() for _ in range(4)] == [False, False, False, True]
    # A node without a limit never does.
    s.move("confirm", via="x", values={}, at=AT, history=[])
    assert not any(s.count_turn() for _ in range(10))


def test_moving_keeps_the_values_and_the_path():
    s = state()
    s.move("collect", via="wants_booking", values={}, at=AT, history=[])
    s.move("confirm", via="set_booking_details", values={"party_size": 4, "name": "Lola"},
           at=AT, history=HISTORY)  # fmt: skip
    summary = s.summary()
    assert summary["node"] == "confirm"
    assert [(p["node"], p["via"]) for p in summary["path"]] == [
        ("greet", ""), ("collect", "wants_booking"), ("confirm", "set_booking_details")
    ]
    assert summary["path"][2]["values"] == {"party_size": 4, "name": "Lola"}
    assert summary["values"] == {"party_size": 4, "name": "Lola"}
    # "keep": the whole conversation stays.
    assert s.context_from == 0


def test_a_values_node_starts_the_llm_context_afresh_with_the_values_in_its_prompt():
    s = state()
    s.move("book", via="confirmed", values={"party_size": 4}, at=AT, history=HISTORY)
    assert s.context_from == len(HISTORY) and s.context_note == ""
    prompt = s.prompt("You are Casa Lola's receptionist.")
    assert prompt.startswith("You are Casa Lola's receptionist.")
    assert "Current step (book): BOOK: call book_table" in prompt
    assert 'Collected so far: {"party_size": 4}' in prompt


def test_a_summary_node_keeps_a_digest_of_earlier_lines():
    flow = dict(FLOW)
    flow["nodes"] = [dict(n, context="summary") if n["name"] == "confirm" else n
                     for n in FLOW["nodes"]]  # fmt: skip
    s = FlowState.begin(parse_flow(flow), at=AT)
    s.move("confirm", via="x", values={}, at=AT, history=[*HISTORY, {"role": "tool",
           "tool_call_id": "1", "content": "{}"}])  # fmt: skip
    assert s.context_note == (
        "Caller: A table please.\nAgent: For how many?\nCaller: Four, Friday at nine, Lola."
    )
    assert "Earlier in this call:\nCaller: A table please." in s.prompt("Role.")
