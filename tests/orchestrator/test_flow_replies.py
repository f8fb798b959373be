"""A flow's move the caller never heard: its lines are said in the next reply."""

from __future__ import annotations

import asyncio

from bench.scripted_engines import ScriptedLLM, ScriptedTTS
from orchestrator.flows import parse_flow
from orchestrator.session import EndReason

NOTHING = {"type": "object", "properties": {}}
FLOW = {
    "start": "confirm",
    "nodes": [
        {"name": "confirm", "task": "CONFIRM: read the booking back.",
         "transitions": [{"name": "confirmed", "description": "The caller said yes.",
                          "schema": NOTHING, "target": "goodbye"}]},
        {"name": "goodbye", "on_enter": [{"say": "Your table is booked. Goodbye!"}, "end_call"]},
    ],
}  # fmt: skip


async def test_lines_of_a_move_the_caller_went_on_over_are_said_next_and_the_call_ends(
    make_harness,
):
    h = make_harness(
        llm=ScriptedLLM(
            ttft_ms=30, tokens_per_s=200, replies=["[[confirmed {}]]", "Anything else?"]
        ),
        # Slow synthesis: the caller goes on before the reply's first word is sent.
        tts=ScriptedTTS(ttfb_ms=1500, ms_per_char=8, chunk_ms=40, realtime=0),
        overrides={"flow": parse_flow(FLOW)},
    )
    h.start()
    h.say("Yes.")
    await h.until(lambda: bool(h.recorder.by_role("tool")))  # "Yes." moved the flow
    assert not h.transport.frames
    h.say("That is right, thank you very much.")
    assert await asyncio.wait_for(h.task, 20) is EndReason.AGENT_HANGUP
    assert h.recorder.by_role("assistant")[-1].text == "Your table is booked. Goodbye!"
