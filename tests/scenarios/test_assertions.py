"""The checks on a stored call, without a server: what passes, and the failure messages."""

from __future__ import annotations

from scenarios.assertions import evaluate
from scenarios.spec import parse_spec
from scenarios.stored_call import StoredCall, StoredTurn

CALL = StoredCall(
    id="c1",
    status="ended",
    end_reason="agent_hangup",
    duration_s=42.5,
    metrics={"interruptions": 1, "backchannels": 0},
    dtmf_digits="12#",
    extraction_status="done",
    extraction={"party_size": 4, "customer_name": "Anna Lee", "booking_time": None},
    turns=[
        StoredTurn(sequence=1, role="assistant", text="Hello, Casa Lola.", interrupted=True),
        StoredTurn(sequence=2, role="user", text="A table for four on Friday."),
        StoredTurn(
            sequence=3,
            role="tool",
            text="",
            tool_name="book_table",
            tool_arguments={"party_size": 4, "day": "Friday"},
        ),
        StoredTurn(
            sequence=4,
            role="assistant",
            text="Booked, see you Friday.",
            metrics={"voice_to_voice_ms": 900.0},
        ),
        StoredTurn(sequence=5, role="user", text="Thanks.", metrics={}),
        StoredTurn(
            sequence=6, role="assistant", text="Bye.", metrics={"voice_to_voice_ms": 2500.0}
        ),
    ],
)


async def results(*assertions: dict) -> list[tuple[str, str]]:
    spec = parse_spec({"caller": {"script": [{"hang_up": True}]}, "assertions": list(assertions)})
    return [(r.status, r.message) for r in await evaluate(spec.checks, CALL, judge=None)]


async def test_tool_extraction_dtmf_and_end_reason_checks():
    assert await results(
        {"tool_called": {"name": "book_table", "arguments": {"day": "friday"}}},
        {"tool_called": {"name": "book_table", "arguments": {"party_size": 2}}},
        {"extraction": {"field": "party_size", "equals": 4}},
        {"extraction": {"field": "customer_name", "contains": "lee"}},
        {"extraction": "booking_time"},
        {"dtmf_received": "12#"},
        {"end_reason": "caller_hangup"},
    ) == [
        ("passed", "book_table({'party_size': 4, 'day': 'Friday'}) in turn 3"),
        (
            "failed",
            "book_table with {'party_size': 2} was not called "
            "(tool calls: [\"book_table({'party_size': 4, 'day': 'Friday'})\"])",
        ),
        ("passed", "party_size = 4"),
        ("passed", "customer_name = 'Anna Lee'"),
        ("failed", "booking_time was not extracted (None)"),
        ("passed", "digits '12#' received"),
        ("failed", "ended by agent_hangup, expected caller_hangup"),
    ]


async def test_latency_turns_interruption_and_length_checks():
    assert await results(
        {"voice_to_voice": {"p50_ms": 1000, "max_ms": 2000}},
        {"voice_to_voice": {"max_ms": 3000}},
        {"turns": {"side": "caller", "min": 2, "max": 2}},
        {"interruptions": {"min": 1}},
        {"no_false_interruption": True},
        {"max_call_seconds": 30},
        {"transcript_regex": {"side": "caller", "pattern": r"table for (two|four)"}},
    ) == [
        ("failed", "max_ms 2500 ms > 2000 ms (slowest: turn 6, 2500 ms)"),
        ("passed", "max_ms 2500 ms within budget"),
        ("passed", "caller turns 2"),
        ("passed", "interruptions 1"),
        ("failed", "the agent was interrupted 1 time(s): turn 1 (agent): 'Hello, Casa Lola.'"),
        ("failed", "call seconds 42.5 s > max 30 s"),
        ("passed", "/table for (two|four)/ matched 'table for four' in turn 2 (caller): "
                   "'A table for four on Friday.'"),
    ]  # fmt: skip
