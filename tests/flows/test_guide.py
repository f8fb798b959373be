"""The local model's guide through the demo flow (orchestrator/flows/guide.py): what each
round may call, with which values, and when a call is due. Plain data: the flow, the
node, the messages the model is about to be sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from calls.demo_flows import DEMO_FLOW_EN, DEMO_FLOW_ES
from orchestrator import caller_facts
from orchestrator.flows import guide, parse_flow
from orchestrator.flows.demo_booking import DEMO_BOOKING
from orchestrator.tools import ToolSpec

END_CALL = ToolSpec(name="end_call", description="Hang up.", parameters={})
TOOLS = {"demo_booking": DEMO_BOOKING, "end_call": END_CALL}
EN = parse_flow(DEMO_FLOW_EN)
ES = parse_flow(DEMO_FLOW_ES)


def offer(
    node: str,
    lines: list[tuple[str, str]],
    *,
    flow: Any = EN,
    spoke: bool = True,
    collected: dict[str, Any] | None = None,
    extra: list[dict[str, Any]] | None = None,
) -> guide.Offer:
    """The guide's offer in ``node`` after ``lines`` ((role, text), oldest first)."""
    messages = [{"role": "system", "content": "You take bookings."}]
    messages += [{"role": role, "content": text} for role, text in lines]
    return guide.offer(
        [TOOLS[name] for name in flow.nodes[node].tools],
        flow.transitions_of(node),
        global_names={t.name for t in flow.global_transitions},
        collected=collected or {},
        caller_spoke_in_node=spoke,
        messages=messages + (extra or []),
    )


def names(result: guide.Offer) -> list[str]:
    return [entry["function"]["name"] for entry in result.schemas]


def pinned(result: guide.Offer, name: str) -> dict[str, Any]:
    entry = next(e for e in result.schemas if e["function"]["name"] == name)
    props = entry["function"]["parameters"]["properties"]
    return {key: prop["const"] for key, prop in props.items() if "const" in prop}


def test_a_caller_asking_to_book_makes_the_booking_transition_due():
    result = offer("greet", [("user", "Hi, I would like to book a table, please.")])
    assert names(result) == ["wants_booking"] and result.required
    assert result.due == ("wants_booking", {})  # made without a model round


def test_a_question_about_opening_hours_offers_no_transition():
    result = offer("greet", [("user", "What time do you open on Sunday?")])
    assert names(result) == [] and not result.required and result.due is None


def test_nothing_is_offered_in_a_node_the_caller_has_not_spoken_in_yet():
    said = [("user", "I want to book a table.")]
    result = offer("collect", said, spoke=False)
    assert names(result) == []  # not speak_to_person: the model asks for the party size
    assert offer("confirm", said, spoke=False).schemas == []  # not "confirmed" unheard


def test_the_details_transition_waits_until_every_value_was_said():
    lines = [
        ("user", "I want to book a table."),
        ("assistant", "How many people will be joining?"),
        ("user", "Four people."),
        ("assistant", "Which day?"),
        ("user", "On Friday."),
    ]
    result = offer("collect", lines)
    assert "set_booking_details" not in names(result)
    # The model is told what it has and what to ask next.
    assert result.note == (
        "The caller has given: party_size=4, day=Friday. "
        "Still to ask for, one at a time: time, name."
    )


def test_short_answers_are_read_by_the_question_and_fill_the_details_pinned():
    lines = [
        ("user", "I want to book a table."),
        ("assistant", "How many people will be joining you?"),
        ("user", "Four."),
        ("assistant", "Which day would you like?"),
        ("user", "Friday."),
        ("assistant", "At what time?"),
        ("user", "At nine in the evening."),
        ("assistant", "What name should I put the booking under?"),
        ("user", "Lola."),
    ]
    result = offer("collect", lines)
    assert names(result) == ["set_booking_details"] and result.required
    details = {"party_size": 4, "day": "Friday", "time": "21:00", "name": "Lola"}
    assert pinned(result, "set_booking_details") == details
    assert result.due == ("set_booking_details", details) and not result.note


def test_a_later_correction_wins():
    lines = [
        ("user", "A table for four on Friday at nine in the evening, my name is Lola."),
        ("assistant", "Four people on Friday at 21:00 for Lola, right?"),
        ("user", "Actually we are five people."),
    ]
    assert pinned(offer("collect", lines), "set_booking_details")["party_size"] == 5


def test_the_person_transfer_needs_the_caller_to_ask_for_it():
    booking = [("user", "A table for one person, please.")]
    assert "speak_to_person" not in names(offer("collect", booking))
    asked = [("user", "Can I speak to a person, please?")]
    result = offer("collect", asked)
    # Offered, not forced: a global transition is the model's to take (words are thin
    # evidence for leaving the node, and every node offers it).
    assert names(result) == ["speak_to_person"] and not result.required and result.due is None


@pytest.mark.parametrize(
    ("answer", "due"),
    [
        ("Yes, that is right.", "confirmed"),
        ("Yes.", "confirmed"),
        ("No, the time is wrong.", "change_details"),
        ("I'd like to change the day.", "change_details"),
    ],
)
def test_a_read_back_is_confirmed_or_changed_by_the_callers_answer(answer, due):
    lines = [("assistant", "Four people on Friday at 21:00 for Lola. Is that right?"),
             ("user", answer)]  # fmt: skip
    result = offer("confirm", lines)
    assert names(result) == [due] and result.required


def test_the_booking_tool_is_due_with_the_collected_values_then_booked_with_its_reference():
    collected = {"party_size": 4, "day": "Friday", "time": "21:00", "name": "Lola"}
    lines = [("user", "Yes, that is right.")]
    first = offer("book", lines, spoke=False, collected=collected)
    assert names(first) == ["demo_booking"] and first.required
    assert pinned(first, "demo_booking") == collected
    assert "booked" not in names(first)  # no reference to make up yet

    result = {"booked": True, "ref": "CL-1A2B3", **collected}
    exchange = [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "demo_booking", "arguments": json.dumps(collected)}}]},
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps(result)},
    ]  # fmt: skip
    second = offer("book", lines, spoke=False, collected=collected, extra=exchange)
    assert names(second) == ["booked"] and second.required
    assert pinned(second, "booked") == {"ref": "CL-1A2B3"}


def test_a_node_whose_only_way_on_is_hanging_up_must_hang_up():
    closing = parse_flow({
        "start": "goodbye",
        "global_transitions": DEMO_FLOW_EN["global_transitions"],
        "nodes": [
            {"name": "goodbye", "task": "Say goodbye and call end_call.", "tools": ["end_call"]},
            {"name": "transfer", "on_enter": [{"transfer": "Front desk"}]},
        ],
    })  # fmt: skip
    result = offer("goodbye", [("user", "Yes.")], flow=closing, spoke=False)
    assert names(result) == ["end_call"] and result.required
    assert result.due is None  # the model writes the goodbye that goes with it


def test_spanish_callers_book_and_ask_for_a_person():
    want = offer("greet", [("user", "Hola, quería reservar una mesa.")], flow=ES)
    assert names(want) == ["wants_booking"]
    party = offer("collect", [("user", "Una mesa para cuatro personas.")], flow=ES)
    assert "speak_to_person" not in names(party)
    person = offer("collect", [("user", "Quiero hablar con una persona.")], flow=ES)
    assert names(person) == ["speak_to_person"]
    yes = offer("confirm", [("assistant", "¿Es correcto?"), ("user", "Sí, correcto.")], flow=ES)
    assert names(yes) == ["confirmed"]


@pytest.mark.parametrize(
    ("question", "answer", "facts"),
    [
        ("How many people will be joining?", "Four.", {"party_size": 4}),
        ("What name should I put it under?", "It's Lola Smith.", {"name": "Lola Smith"}),
        ("And what time?", "Nine.", {"time": "9:00"}),
        ("When would you like to come, and for how many?", "Four.", {"party_size": 4}),
        ("¿Para cuántas personas?", "Cuatro.", {"party_size": 4}),
        ("¿A nombre de quién?", "Ana García.", {"name": "Ana García"}),
        ("What name should I put it under?", "Friday.", {}),
        ("How many people?", "I would like to come on Friday at nine with my family.", {}),
    ],
)
def test_a_short_answer_is_read_by_what_the_question_asked(question, answer, facts):
    assert caller_facts.answer_facts(question, answer) == facts


def test_back_in_collect_after_a_change_request_the_same_values_are_not_read_back_again():
    lines = [
        ("user", "A table for four on Friday at nine in the evening, my name is Lola."),
        ("assistant", "So that is a table for 4 on Friday at 21:00, under the name Lola. "
                      "Is that right?"),
        ("user", "No, the name is wrong."),
    ]  # fmt: skip
    collected = {"party_size": 4, "day": "Friday", "time": "21:00", "name": "Lola"}
    back = offer("collect", lines, spoke=False, collected=collected)
    assert "set_booking_details" not in names(back) and back.due is None  # the model asks
    lines += [("assistant", "What name should it be?"), ("user", "Maria.")]
    changed = offer("collect", lines, collected=collected)
    assert changed.due == ("set_booking_details", {**collected, "name": "Maria"})


@pytest.mark.parametrize(
    "answer", ["Sure, that's fine, no problem.", "Yes, no worries.", "That works.", "Mhm."]
)
def test_a_yes_with_a_no_in_it_still_confirms(answer):
    lines = [("assistant", "Four people on Friday at 21:00 for Lola. Is that right?"),
             ("user", answer)]  # fmt: skip
    assert offer("confirm", lines).due == ("confirmed", {})


def test_an_answer_to_the_read_back_is_no_name():
    lines = [
        ("user", "A table for four on Friday at nine in the evening, my name is Lola."),
        ("assistant", "So that is a table for 4 on Friday at 21:00, under the name Lola. "
                      "Is that right?"),
        ("user", "Wrong day."),
    ]  # fmt: skip
    assert pinned(offer("collect", lines), "set_booking_details")["name"] == "Lola"


def test_everyday_spanish_does_not_transfer_the_call():
    for line in ("Encantada, somos cuatro personas.",
                 "Quiero hablar de una reserva para cuatro personas."):  # fmt: skip
        assert offer("collect", [("user", line)], flow=ES).due is None


def test_a_value_over_the_schemas_limit_is_asked_again_with_the_reason():
    result = offer("collect", [("user", "A table for fifteen people, please.")])
    assert "set_booking_details" not in names(result)
    assert "party_size (not 15: at least 1, at most 12)" in result.note


def test_a_failed_booking_offers_no_booked_to_make_a_reference_up():
    collected = {"party_size": 4, "day": "Friday", "time": "21:00", "name": "Lola"}
    exchange = [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "demo_booking", "arguments": json.dumps(collected)}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Invalid arguments: HTTP 503"},
    ]  # fmt: skip
    result = offer("book", [("user", "Yes.")], spoke=False, collected=collected, extra=exchange)
    assert "booked" not in names(result)
    # Nor is the booking made again unasked on the caller's next turn.
    again = offer("book", [("user", "Yes."), ("user", "Hello?")], collected=collected,
                  extra=exchange)  # fmt: skip
    assert again.due is None


def test_a_value_the_grammar_cannot_hold_is_left_unpinned():
    collected = {"party_size": 4, "day": "Friday", "time": "21:00", "name": 'Lola "La" Ruiz'}
    result = offer("book", [("user", "Yes.")], spoke=False, collected=collected)
    assert "name" not in pinned(result, "demo_booking") and result.due is None


def test_a_node_waiting_for_a_value_is_not_made_to_hang_up():
    lookup = ToolSpec(name="find_booking", description="Find a booking by name.",
                      parameters={"type": "object", "properties": {"name": {"type": "string"}},
                                  "required": ["name"]})  # fmt: skip
    result = guide.offer([lookup, END_CALL], (), global_names=set(), collected={},
                         caller_spoke_in_node=True,
                         messages=[{"role": "user", "content": "Hi."}])  # fmt: skip
    assert names(result) == ["end_call"] and not result.required


def test_a_function_with_only_optional_values_is_never_forced():
    notes = ToolSpec(name="add_note", description="Add a note.",
                     parameters={"type": "object", "properties": {"name": {"type": "string"}}})
    result = guide.offer([notes], (), global_names=set(), collected={"name": "Lola"},
                         caller_spoke_in_node=False, messages=[])  # fmt: skip
    assert not result.required and result.due is None
