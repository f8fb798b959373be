"""The local LLM following a flow by a JSON grammar (orchestrator/engines/local_tools.py):
the answer's schema per node, its words streamed as the JSON grows, the call parsed, values
nobody said left out, and the switch that keeps a plain profile on the free-text path.
One test runs a real grammar on the real default model (a few seconds)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bench.scripted_engines import ScriptedLLM
from orchestrator.config import CallConfig
from orchestrator.engines import local as local_engines
from orchestrator.engines.local import LocalLLM
from orchestrator.engines.local_tools import (
    SayStream,
    grammar_for,
    grammar_schema,
    heard_only,
    tool_prompt,
)
from orchestrator.flows import parse_flow
from orchestrator.flows.toolbox import FlowToolBox, follows_flows, toolbox_for
from orchestrator.tools import ToolCall, ToolSpec
from orchestrator.tools.toolbox import ToolBox
from tests.flows.booking import FLOW

DETAILS = {
    "type": "object",
    "properties": {
        "party_size": {"type": "integer", "minimum": 1, "maximum": 12},
        "day": {"type": "string", "pattern": "^[A-Z][a-z]+$", "format": "date"},
        "name": {"type": "string"},
    },
    "required": ["party_size", "day"],
}
TOOLS = [
    ToolSpec(name="set_details", description="All details are known.", parameters=DETAILS).schema(),
    ToolSpec(name="speak_to_person", description="The caller asks for a person.").schema(),
]


def test_the_answer_schema_offers_only_the_nodes_tools_call_first():
    schema = grammar_schema(TOOLS)
    assert list(schema["properties"]) == ["call", "say"]
    null, details, person = schema["properties"]["call"]["anyOf"]
    assert null == {"type": "null"}
    assert details["properties"]["name"] == {"const": "set_details"}
    assert person["properties"]["arguments"] == {"type": "object", "properties": {}, "required": []}
    # What llama.cpp's converter cannot compile is left to the schema check at run time.
    day = details["properties"]["arguments"]["properties"]["day"]
    assert day == {"type": "string", "maxLength": 60}
    assert "minimum" not in details["properties"]["arguments"]["properties"]["party_size"]
    grammar_for(json.dumps(schema))  # compiles


def test_the_words_stream_as_the_json_grows_and_the_call_comes_whole():
    raw = (
        '{"call": {"name": "set_details", "arguments": {"party_size": 4, "day": "say",'
        ' "name": "Zo\\u00eb \\"Lola\\""}}, "say": "Thanks, Zo\\u00eb.\\nOne moment."}'
    )
    answer = SayStream()
    pieces = [answer.push(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    words = [p for p in pieces if p]
    assert "".join(words) == "Thanks, Zoë.\nOne moment."
    assert len(words) > 3  # streamed, not all at the end
    # Nothing is said before the "say" key, even with a "say" value in the arguments.
    assert "".join(pieces[: raw.index('"say": "Thanks') // 3]) == ""
    say, call = answer.finish()
    assert say == "Thanks, Zoë.\nOne moment."
    assert call is not None and call.name == "set_details"
    assert call.parsed_arguments() == {"party_size": 4, "day": "say", "name": 'Zoë "Lola"'}


def test_an_answer_cut_short_keeps_its_words_and_calls_nothing():
    answer = SayStream()
    answer.push('{"call": null, "say": "For how many peo')
    assert answer.finish() == ("For how many peo", None)


class ChunkModel:
    """Stands for a model's thread: ``iterate`` yields the scripted raw text in chunks."""

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self.closed_at: int | None = None

    async def iterate(self, produce, *args, queue_timeout_s=None):
        sent = 0
        try:
            for i in range(0, len(self.raw), 4):
                sent = i + 4
                yield self.raw[i : i + 4]
        finally:
            self.closed_at = sent  # closed early = the generation was stopped


async def test_a_looping_answer_is_cut_short_and_its_call_kept_whole():
    from orchestrator.engines.local_tools import stream_calls

    looping = " ".join(["Please call for a booking."] * 20)
    raw = ('{"call": {"name": "set_details", "arguments": {"party_size": 4, "day": "Friday",'
           ' "name": "Lola"}}, "say": "' + looping + '"}')  # fmt: skip
    model = ChunkModel(raw)
    messages = [{"role": "user", "content": "Four on Friday, I am Lola."}]
    items = [item async for item in stream_calls(
        model, messages, TOOLS, rule="", language="en-US", temperature=0.0, max_tokens=50,
        fallback="Sorry?", queue_timeout_s=None)]  # fmt: skip
    words = "".join(i for i in items if isinstance(i, str))
    assert words.strip() == "Please call for a booking."  # said once, the loop cut short
    assert model.closed_at is not None and model.closed_at < len(raw) // 2  # stopped early
    call = items[-1]
    assert isinstance(call, ToolCall) and call.name == "set_details"
    assert call.parsed_arguments() == {"party_size": 4, "day": "Friday", "name": "Lola"}


async def test_a_sentence_said_earlier_in_the_reply_is_not_said_again():
    from orchestrator.engines.local_tools import stream_calls

    raw = '{"call": null, "say": "Thank you for your booking. At what time?"}'
    messages = [
        {"role": "user", "content": "Four on Friday."},
        {"role": "assistant", "content": "Thank you for your booking.", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "wants_booking", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"moved_to": "collect"}'},
    ]  # fmt: skip
    items = [item async for item in stream_calls(
        ChunkModel(raw), messages, TOOLS, rule="", language="en-US", temperature=0.0,
        max_tokens=50, fallback="Sorry?", queue_timeout_s=None)]  # fmt: skip
    assert "".join(items).strip() == "At what time?"


def test_values_nobody_said_are_left_out_of_the_call():
    messages = [
        {"role": "assistant", "content": "Is that for Tuesday, John?"},  # the agent's words
        {"role": "user", "content": "Four people at nine in the evening, I'm Sofía."},
        {"role": "tool", "content": '{"booked": true, "ref": "CL-3F2A1"}'},
    ]
    arguments = {"party_size": 4, "day": "Tuesday", "time": "21:00", "name": "Sofia Smith",
                 "ref": "CL-3F2A1", "late": "13:00", "guests": 6}  # fmt: skip
    call = heard_only(ToolCall(id="c1", name="x", arguments=json.dumps(arguments)), messages)
    assert call.parsed_arguments() == {
        "party_size": 4, "time": "21:00", "name": "Sofia Smith", "ref": "CL-3F2A1"
    }  # fmt: skip


def test_a_call_repeated_in_one_reply_is_dropped_but_its_words_are_said():
    from orchestrator.engines.local_tools import _repeated

    asked = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "set_details", "arguments": '{"party_size": 4}'}}]}  # fmt: skip
    again = ToolCall(id="c2", name="set_details", arguments='{"party_size":4}')
    refused = {"role": "tool", "tool_call_id": "c1", "content": "Invalid values"}
    assert _repeated(again, [{"role": "user", "content": "Four."}, asked, refused])
    # Once the caller has spoken again, the same call is a new attempt.
    assert not _repeated(again, [asked, refused, {"role": "user", "content": "Friday."}])


def test_the_prompt_lists_the_functions_and_shows_earlier_calls_and_results():
    messages = [
        {"role": "system", "content": "ROLE.\n\nCurrent step (collect): ask."},
        {"role": "user", "content": "A table for four."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "set_details", "arguments": '{"party_size": 4}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Invalid values: 'day' is required."},
    ]  # fmt: skip
    prompt = tool_prompt(messages, TOOLS, rule="Always answer in English.", language="en-US",
                         turns=12)  # fmt: skip
    system = prompt.split("<|im_end|>")[0]
    assert "Current step (collect): ask." in system
    assert "- set_details(party_size: integer, day: string, name: string): All details" in system
    assert "- speak_to_person(): The caller asks for a person." in system
    assert '{"call": {"name": "set_details", "arguments": {"party_size": 4}}, "say": ""}' in prompt
    assert "<tool_response>\nset_details: Invalid values: 'day' is required.\n</tool_response>" in (
        prompt
    )
    assert prompt.endswith("<|im_start|>assistant\n")


class GrammarLLM(ScriptedLLM):
    """Stands for the local model: tools by grammar, no free-text tool calls."""

    supports_tools = False
    calls_tools_by_grammar = True


def test_the_local_model_follows_flows_but_a_plain_profile_gets_no_tools():
    assert LocalLLM.calls_tools_by_grammar and not getattr(LocalLLM, "supports_tools", False)
    assert follows_flows(GrammarLLM()) and not follows_flows(object())
    from orchestrator.engines import Engines

    engines = Engines(stt=object(), llm=GrammarLLM(), tts=object())
    common = {"transcript": None, "emit": None, "clock": lambda: 0.0,
              "wall": lambda _: datetime.now(UTC)}  # fmt: skip
    flow = CallConfig(flow=parse_flow(FLOW), transfer_targets=(("Front desk", "+34910000000"),))
    assert isinstance(toolbox_for(flow, engines, **common), FlowToolBox)
    plain = toolbox_for(CallConfig(end_call_enabled=True), engines, **common)
    assert type(plain) is ToolBox


async def test_a_plain_profile_on_the_grammar_model_is_offered_no_tools():
    from tests.orchestrator.conftest import Harness

    llm = GrammarLLM(ttft_ms=10, tokens_per_s=500, reply="Sure. For how many?")
    h = Harness(llm=llm)  # the harness's profile offers end_call
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    await h.finish()
    assert llm.offered == [[]]  # the free-text path: no tools, so no grammar


def _weights() -> bool:
    return local_engines.LLM_WEIGHTS[local_engines.LLM].installed()


@pytest.mark.slow
@pytest.mark.skipif(not _weights(), reason="local LLM weights not installed")
async def test_the_real_model_answers_in_the_grammar_words_first_then_one_offered_call():
    llm = LocalLLM(language="en-US")
    messages = [
        {"role": "system", "content": "You are a restaurant's receptionist. Current step "
         "(greet): find out what the caller wants. For a booking, call wants_booking."},
        {"role": "user", "content": "Hello, I would like to book a table for tonight."},
    ]  # fmt: skip
    tools = [ToolSpec(name="wants_booking", description="The caller wants to book a table.")
             .schema(), TOOLS[1]]  # fmt: skip
    items = [item async for item in llm.stream(messages, temperature=0.0, max_tokens=40,
                                               tools=tools)]  # fmt: skip
    words = "".join(i for i in items if isinstance(i, str))
    calls = [i for i in items if isinstance(i, ToolCall)]
    # What holds for any decoding: words were said (the grammar wants at least one
    # character), at most one call, after the words, of an offered function, with an
    # object for arguments. Which function (if any) is the model's choice.
    assert words.strip()
    assert len(calls) <= 1 and (not calls or items[-1] is calls[0])
    for call in calls:
        assert call.name in {"wants_booking", "speak_to_person"}
        assert call.parsed_arguments() == {}


def test_a_stop_inside_a_number_is_not_the_end_of_a_sentence():
    """Qwen writes "8.30" as "8" "." "30": "8." at the end of what came so far is not a
    finished sentence (it once counted as one, and the two-sentence cap cut "30 pm")."""
    from orchestrator.engines.local_tools import _Words

    words = _Words(already_said=set())
    streamed = [words.push(t) for t in ["Great", ".", " Booked at 8", ".", "3", "0 pm", "."]]
    assert "".join(streamed) + words.flush() == "Great. Booked at 8.30 pm."
