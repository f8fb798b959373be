"""The flow format: what parse_flow accepts, and each problem it names."""

from __future__ import annotations

import pytest

from orchestrator.flows import ActionKind, ContextStrategy, FlowError, parse_flow
from tests.flows.booking import FLOW, NOTHING, flow


def problems(data: object, **kwargs: object) -> list[str]:
    with pytest.raises(FlowError) as caught:
        parse_flow(data, **kwargs)
    return caught.value.problems


def test_it_parses_the_booking_flow():
    parsed = parse_flow(FLOW, known_tools=["book_table"], transfer_labels=["Front desk"])
    assert parsed.start == "greet"
    assert list(parsed.nodes) == ["greet", "collect", "confirm", "book", "goodbye", "transfer"]
    collect = parsed.nodes["collect"]
    assert (collect.max_turns, collect.fallback) == (3, "transfer")
    assert parsed.nodes["book"].context is ContextStrategy.VALUES
    assert [t.name for t in parsed.transitions_of("collect")] == [
        "set_booking_details", "speak_to_person"
    ]
    transfer = parsed.nodes["transfer"]
    assert [a.kind for a in transfer.on_enter] == [ActionKind.SAY, ActionKind.TRANSFER]
    assert transfer.terminal and not collect.terminal


def test_it_refuses_a_flow_that_is_not_an_object():
    assert problems([1, 2]) == ["A flow must be a JSON object with “start” and “nodes”."]


def test_it_names_a_missing_start_and_an_unknown_start():
    assert "The flow has no start node (“start”)." in problems(flow(start=""))
    assert "The start node “lobby” is not a node." in problems(flow(start="lobby"))


def test_it_names_a_transition_to_an_unknown_node():
    data = flow()
    data["nodes"][0]["transitions"][0]["target"] = "nowhere"
    found = problems(data)
    assert ("Transition “wants_booking” of node “greet” goes to an unknown node “nowhere”."
            in found)  # fmt: skip


def test_it_names_an_unreachable_node():
    data = flow()
    data["nodes"].append({"name": "island", "task": "Never here."})
    assert problems(data) == ["Node “island” cannot be reached from the start node."]


def test_it_names_a_transition_without_a_schema():
    data = flow()
    del data["nodes"][2]["transitions"][0]["schema"]
    assert problems(data) == ["Transition “confirmed” of node “confirm” has no schema."]


def test_it_names_a_schema_that_is_not_an_object_schema():
    data = flow()
    data["nodes"][2]["transitions"][0]["schema"] = {"type": "string"}
    (problem,) = problems(data)
    assert problem.startswith("The schema of transition “confirmed” of node “confirm”")


def test_it_names_a_tool_the_profile_does_not_define():
    found = problems(FLOW, known_tools=["check_availability"])
    assert found == ["Tool “book_table” in node “book” is not defined on the profile."]
    # Built-ins are always defined; without known_tools the tools are not checked.
    parse_flow(FLOW)


def test_it_names_a_fallback_to_an_unknown_node_and_a_limit_without_fallback():
    data = flow()
    data["nodes"][1]["fallback"] = "operator"
    assert "The fallback of node “collect” is an unknown node “operator”." in problems(data)
    data = flow()
    del data["nodes"][1]["fallback"]
    assert "Node “collect” needs both max_turns and fallback, or neither." in problems(data)


def test_it_names_a_transfer_to_a_destination_the_profile_lacks():
    found = problems(FLOW, transfer_labels=["Events team"])
    assert found == [
        "Transfer to “Front desk” in the on_enter of node “transfer” is not one of the "
        "profile's transfer destinations."
    ]


def test_it_lists_every_problem_at_once():
    data = flow(start="lobby")
    data["nodes"][0]["transitions"].append({"name": "end_call", "description": "x",
                                            "schema": NOTHING, "target": "goodbye"})
    data["nodes"][3]["context"] = "forget"
    data["nodes"][4]["on_enter"] = ["dance"]
    found = problems(data)
    assert "The start node “lobby” is not a node." in found
    assert "Transition “end_call” in node “greet” has a tool's name." in found
    assert "The context of node “book” must be one of: keep, summary, values." in found
    assert any(p.startswith("Unknown action 'dance' in the on_enter of node “goodbye”")
               for p in found)  # fmt: skip
    assert str(FlowError(found)) == "; ".join(found)


@pytest.mark.parametrize("start", [["greet"], {"node": "greet"}, 7])
def test_a_start_that_is_not_text_is_a_problem_not_a_crash(start):
    # (A list or object is unhashable: "start in nodes" used to raise, a 500 in the admin.)
    assert "The start node (“start”) must be a node's name." in problems(flow(start=start))


@pytest.mark.parametrize("fallback", [["transfer"], {"node": "transfer"}, 3])
def test_a_fallback_that_is_not_text_is_a_problem(fallback):
    data = flow()
    data["nodes"][1]["fallback"] = fallback
    found = problems(data)
    assert "The fallback of node “collect” must be a node's name." in found
    assert not any("needs both" in p or "unknown node" in p for p in found)


def test_a_name_with_a_trailing_newline_is_refused_for_nodes_transitions_and_http_tools():
    from django.core.exceptions import ValidationError

    from calls.models import tool_name_validator

    data = flow()
    data["nodes"][0]["transitions"][0]["name"] = "wants_booking\n"
    assert ("The name of transition “wants_booking\n” of node “greet” must be letters, "
            "digits, _ or -.") in problems(data)  # fmt: skip
    tool_name_validator("book_table")
    with pytest.raises(ValidationError):
        tool_name_validator("book_table\n")


def test_say_lines_fill_collected_values_and_broken_placeholders_are_refused():
    from orchestrator.flows.spec import fill_line

    line = "A table for {party_size} on {day}, {{ref}} {ref}."
    assert fill_line(line, {"party_size": 4, "day": "Friday"}) == (
        "A table for 4 on Friday, {ref} {ref}."  # a value not collected stays as written
    )
    assert fill_line("{name:d} {name!r}", {"name": "Lola"}) == "{name:d} {name!r}"
    assert fill_line("{name}", {"name": "{ref} O'Brien"}) == "{ref} O'Brien"
    data = flow()
    data["nodes"][2]["on_enter"] = [{"say": "For {party_size"}, {"say": "Ref {0}."}]
    found = problems(data)
    assert found == [
        "The line “For {party_size” in the on_enter of node “confirm” has a lone brace "
        "(write {{ and }} for a brace).",
        "The line “Ref {0}.” in the on_enter of node “confirm” has a placeholder “{0}” that "
        "is not a value's name.",
    ]
    # At call time such a flow still runs (saved before placeholders existed).
    assert parse_flow(data, check_lines=False).nodes["confirm"].on_enter[0].text == (
        "For {party_size"
    )


def test_respond_immediately_is_read_and_must_be_a_boolean():
    data = flow()
    data["nodes"][2]["respond_immediately"] = False
    assert parse_flow(data).nodes["confirm"].respond_immediately is False
    assert parse_flow(flow()).nodes["confirm"].respond_immediately is True
    data["nodes"][2]["respond_immediately"] = "no"
    assert problems(data) == ["respond_immediately of node “confirm” must be true or false."]
