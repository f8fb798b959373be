"""The agent acts: tool calls in the reply loop, end_call, transfer_call, the filler line
for slow tools, and answering-machine verdicts — through a real session with real speech
through the real VAD; scripted engines and a local HTTP endpoint are the network edge."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from bench.scripted_engines import ScriptedLLM
from orchestrator.audio import FRAME_MS
from orchestrator.session import EndReason
from orchestrator.tools import ToolSpec
from tests.orchestrator.conftest import RecordingTransport
from tests.tools.fake_tool_server import SECRET, serving

BOOKING = {
    "type": "object",
    "properties": {"party_size": {"type": "integer"}, "day": {"type": "string"}},
    "required": ["party_size", "day"],
}


class TransferringTransport(RecordingTransport):
    """A carrier that can transfer (or fails to, with ``fail``)."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.transfers: list[str] = []

    async def transfer(self, destination: str) -> None:
        self.transfers.append(destination)
        self.log.append(("transfer", destination))
        if self.fail:
            raise RuntimeError("carrier said 500")


def llm(*replies: str) -> ScriptedLLM:
    return ScriptedLLM(ttft_ms=30, tokens_per_s=200, replies=list(replies))


def tool_messages(request: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in request if m["role"] == "tool"]


@pytest.fixture
def tool_server():
    with serving() as server:
        yield server


async def test_the_llm_calls_an_http_tool_and_speaks_its_result(make_harness, tool_server):
    tool = ToolSpec(name="book_table", description="Book a table.", parameters=BOOKING,
                    url=tool_server.url("/echo"), secret=SECRET)  # fmt: skip
    h = make_harness(
        llm=llm(
            'Let me book that. [[book_table {"party_size": 4, "day": "Friday"}]]',
            "Done: your table for four on Friday is booked.",
        ),
        overrides={"tools": (tool,)},
    )
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)

    # The endpoint got the arguments, signed.
    (request,) = tool_server.requests
    assert request.signature_valid
    assert request.json()["arguments"] == {"party_size": 4, "day": "Friday"}
    # The LLM was offered the tool and then given its result in a tool message.
    assert "book_table" in h.llm.offered[0] and "end_call" in h.llm.offered[0]
    (result_message,) = tool_messages(h.llm.requests[1])
    assert json.loads(result_message["content"])["signature_valid"] is True
    # One reply, both rounds spoken; the tool is a turn between the caller and the agent.
    (reply,) = h.recorder.by_role("assistant")
    assert reply.text == "Let me book that. Done: your table for four on Friday is booked."
    roles = [t.role for t in h.recorder.turns]
    assert roles == ["user", "tool", "assistant"]
    tool_turn = h.recorder.by_role("tool")[0].tool
    assert tool_turn.name == "book_table" and tool_turn.status == "ok"
    assert tool_turn.arguments == {"party_size": 4, "day": "Friday"}
    assert tool_turn.latency_ms > 0
    (event,) = h.transport.of_type("tool")
    assert event["name"] == "book_table" and event["status"] == "ok"
    # Later replies remember what was done.
    assert any(m.get("tool_calls") for m in h.session.history)
    assert await h.finish() is EndReason.CALLER_HANGUP
    assert h.recorder.ended[0]["metrics"]["tool_calls"] == 1


async def test_a_slow_tool_gets_the_filler_line_and_no_long_silence(make_harness, tool_server):
    tool = ToolSpec(name="check", description="Check availability.",
                    url=tool_server.url("/slow"), secret=SECRET, timeout_s=8.0)  # fmt: skip
    h = make_harness(
        llm=llm("[[check {}]]", "Yes, we have a table at eight."),
        overrides={"tools": (tool,), "tool_filler": "One moment, let me check.|Still checking."},
    )
    sent_at: list[float] = []
    h.transport.on_audio = lambda _: sent_at.append(asyncio.get_running_loop().time())
    timer = threading.Timer(3.0, tool_server.release.set)  # the tool answers after 3 s
    h.start()
    h.say()
    await h.until(lambda: bool(tool_server.requests))
    timer.start()
    try:
        await h.until(lambda: len(h.recorder.by_role("assistant")) == 1, timeout=15)
    finally:
        timer.cancel()
        tool_server.release.set()
    (reply,) = h.recorder.by_role("assistant")
    assert reply.text.startswith("One moment, let me check. Still checking.")
    assert reply.text.endswith("Yes, we have a table at eight.")
    # From the filler's first frame to the answer's last: the caller never waits 1.5 s.
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)]
    assert max(gaps) < 1.5, f"silence of {max(gaps):.2f}s on the line"
    assert h.recorder.by_role("tool")[0].tool.latency_ms >= 2900
    await h.finish()


async def test_a_failing_tool_becomes_an_error_result_and_the_call_goes_on(
    make_harness, tool_server
):
    tool = ToolSpec(name="check", description="Check.", url=tool_server.url("/fail"),
                    secret=SECRET)  # fmt: skip
    h = make_harness(
        llm=llm("[[check {}]]", "Sorry, I cannot check that right now.", "Anything else?"),
        overrides={"tools": (tool,)},
    )
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    assert h.recorder.by_role("tool")[0].tool.status == "error"
    assert "500" in tool_messages(h.llm.requests[1])[0]["content"]
    h.say("Can I come tomorrow instead?")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2)
    assert await h.finish() is EndReason.CALLER_HANGUP
    assert h.recorder.ended[0]["metrics"]["tool_failures"] == 1


async def test_end_call_says_goodbye_then_hangs_up(make_harness):
    h = make_harness(llm=llm("Thank you for calling, goodbye! [[end_call]]"))
    h.start()
    h.say("That is all, thank you. Goodbye.")
    assert await h.result(timeout=15) is EndReason.AGENT_HANGUP
    (reply,) = h.recorder.by_role("assistant")
    assert reply.text == "Thank you for calling, goodbye!" and not reply.interrupted
    # Hung up after the goodbye was sent, not before.
    kinds = [kind for kind, _ in h.transport.log]
    assert kinds.index("close") > max(i for i, k in enumerate(kinds) if k == "audio")
    # Terminal: the LLM is not asked again with the result.
    assert not any(tool_messages(request) for request in h.llm.requests)


async def test_end_call_without_words_says_the_profile_goodbye(make_harness):
    h = make_harness(llm=llm("[[end_call]]"))
    h.start()
    h.say("Bye.")
    assert await h.result(timeout=15) is EndReason.AGENT_HANGUP
    assert h.recorder.by_role("assistant")[0].text == "Goodbye."


async def test_an_llm_without_tools_hangs_up_on_its_own_goodbye(make_harness):
    class PlainLLM(ScriptedLLM):
        supports_tools = False

    h = make_harness(llm=PlainLLM(ttft_ms=30, tokens_per_s=200,
                                  reply="Thank you for calling. Goodbye!"))  # fmt: skip
    h.start()
    h.say("That is all, bye.")
    assert await h.result(timeout=15) is EndReason.AGENT_HANGUP
    assert h.llm.offered == [[]]


async def test_transfer_to_an_allowed_destination(make_harness):
    transport = TransferringTransport()
    h = make_harness(
        transport=transport,
        llm=llm("I will put you through to the front desk. "
                '[[transfer_call {"destination": "Front desk"}]]'),  # fmt: skip
        overrides={"transfer_targets": (("Front desk", "+34910000000"),)},
    )
    h.start()
    h.say("Can I talk to a person please?")
    assert await h.result(timeout=15) is EndReason.TRANSFERRED
    assert transport.transfers == ["+34910000000"]
    assert h.recorder.ended[0]["transferred_to"] == "+34910000000"
    # The announcement was heard before the transfer.
    kinds = [kind for kind, _ in transport.log]
    assert kinds.index("transfer") > max(i for i, k in enumerate(kinds) if k == "audio")
    assert "front desk" in h.recorder.by_role("assistant")[0].text
    assert h.llm.offered[0] == ["end_call", "transfer_call"]


async def test_a_destination_not_on_the_allow_list_is_refused(make_harness):
    transport = TransferringTransport()
    h = make_harness(
        transport=transport,
        llm=llm('[[transfer_call {"destination": "+15550000000"}]]',
                "Sorry, I can only transfer you to the front desk."),  # fmt: skip
        overrides={"transfer_targets": (("Front desk", "+34910000000"),)},
    )
    h.start()
    h.say("Transfer me to plus one five five five.")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    assert transport.transfers == []
    assert h.recorder.by_role("tool")[0].tool.status == "refused"
    assert "Front desk" in tool_messages(h.llm.requests[1])[0]["content"]
    assert await h.finish() is EndReason.CALLER_HANGUP


async def test_a_failed_transfer_is_told_to_the_caller_and_the_call_goes_on(make_harness):
    transport = TransferringTransport(fail=True)
    h = make_harness(
        transport=transport,
        llm=llm('[[transfer_call {"destination": "Front desk"}]]'),
        overrides={
            "transfer_targets": (("Front desk", "+34910000000"),),
            "transfer_message": "Transferring you now.",
            "transfer_failed_message": "Sorry, I could not transfer your call.",
        },
    )
    h.start()
    h.say("A person, please.")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2)
    texts = [t.text for t in h.recorder.by_role("assistant")]
    assert texts == ["Transferring you now.", "Sorry, I could not transfer your call."]
    assert await h.finish() is EndReason.CALLER_HANGUP


async def test_the_caller_speaking_over_the_goodbye_keeps_the_call(make_harness):
    h = make_harness(
        llm=llm("Thank you for calling, have a wonderful evening and see you on Friday, "
                "goodbye! [[end_call]]", "Of course, what else?"),  # fmt: skip
        overrides={"barge_in_min_ms": 300},
    )
    h.start()
    h.say("That is all.")
    await h.until(lambda: len(h.transport.frames) > 20)
    h.say("Wait, one more thing, can I bring a dog?")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2, timeout=15)
    assert h.recorder.by_role("assistant")[0].interrupted
    assert await h.finish() is EndReason.CALLER_HANGUP


# --- outbound: answering-machine verdicts ------------------------------------------------


async def test_an_outbound_call_waits_for_a_person_before_greeting(make_harness):
    h = make_harness(overrides={"await_answer": True, "greeting": "Hi, this is Casa Lola."})
    h.start()
    await asyncio.sleep(0.5)
    assert h.transport.frames == []  # silent while the carrier decides
    h.session.answered_by("human")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    assert h.recorder.by_role("assistant")[0].text == "Hi, this is Casa Lola."
    assert await h.finish() is EndReason.CALLER_HANGUP


async def test_a_machine_gets_the_voicemail_message_then_a_hang_up(make_harness):
    h = make_harness(
        overrides={
            "await_answer": True,
            "greeting": "Hi, this is Casa Lola.",
            "voicemail_action": "leave_message",
            "voicemail_message": "Hello, Casa Lola calling about your booking. Call us back.",
        }
    )
    h.start()
    await asyncio.sleep(0.2)
    h.session.answered_by("machine")
    assert await h.result(timeout=15) is EndReason.VOICEMAIL
    (said,) = h.recorder.by_role("assistant")
    assert said.text.startswith("Hello, Casa Lola calling")
    assert len(h.transport.frames) * FRAME_MS > 300  # the whole message was sent


async def test_a_machine_with_hang_up_hears_nothing(make_harness):
    h = make_harness(overrides={"await_answer": True, "greeting": "Hi.", "voicemail_message": "x"})
    h.start()
    h.session.answered_by("machine")
    assert await h.result(timeout=10) is EndReason.VOICEMAIL
    assert h.transport.frames == [] and h.recorder.by_role("assistant") == []


async def test_no_verdict_in_time_greets_as_if_a_person_answered(make_harness):
    h = make_harness(
        overrides={"await_answer": True, "answer_wait_s": 0.5, "greeting": "Hi there."}
    )
    h.start()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    assert await h.finish() is EndReason.CALLER_HANGUP


async def test_a_round_that_only_ends_the_call_still_says_goodbye(make_harness, tool_server):
    tool = ToolSpec(name="book_table", description="Book.", parameters=BOOKING,
                    url=tool_server.url("/echo"), secret=SECRET)  # fmt: skip
    h = make_harness(
        llm=llm('Let me book that. [[book_table {"party_size": 2, "day": "Monday"}]]',
                "[[end_call]]"),  # fmt: skip
        overrides={"tools": (tool,)},
    )
    h.start()
    h.say("A table for two on Monday, then I have to go.")
    assert await h.result(timeout=15) is EndReason.AGENT_HANGUP
    # The last round said nothing: the profile's goodbye is heard before the hang-up.
    assert h.recorder.by_role("assistant")[-1].text == "Let me book that. Goodbye."


async def test_a_botched_tool_call_gets_the_round_again_without_tools(make_harness):
    from orchestrator.engines import EngineError

    class BotchingLLM(ScriptedLLM):
        async def stream(self, messages, *, temperature, max_tokens, tools=None):
            if tools:
                self.offered.append([t["function"]["name"] for t in tools])
                raise EngineError("Failed to call a function", vendor="groq", status=400,
                                  code="tool_use_failed")  # fmt: skip
            async for item in super().stream(messages, temperature=temperature,
                                             max_tokens=max_tokens):  # fmt: skip
                yield item

    h = make_harness(llm=BotchingLLM(ttft_ms=30, tokens_per_s=200, reply="Sure, for when?"))
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    assert h.recorder.by_role("assistant")[0].text == "Sure, for when?"
    assert await h.finish() is EndReason.CALLER_HANGUP  # not an engine failure


async def test_a_failed_transfer_is_recorded_as_failed_for_the_llm(make_harness):
    transport = TransferringTransport(fail=True)
    h = make_harness(
        transport=transport,
        llm=llm('[[transfer_call {"destination": "Front desk"}]]', "How else can I help?"),
        overrides={"transfer_targets": (("Front desk", "+34910000000"),)},
    )
    h.start()
    h.say("A person, please.")
    await h.until(lambda: len(h.recorder.by_role("tool")) == 2)
    asked, failed = h.recorder.by_role("tool")
    assert asked.tool.status == "ok" and failed.tool.status == "error"
    assert "failed at the carrier" in failed.tool.result
    results = [m["content"] for m in h.session.history if m["role"] == "tool"]
    assert "failed at the carrier" in results[-1]
    await h.finish()


async def test_a_shutdown_during_the_transfer_request_still_ends_as_transferred(make_harness):
    class SlowTransport(TransferringTransport):
        async def transfer(self, destination: str) -> None:
            await asyncio.sleep(0.5)
            await super().transfer(destination)

    transport = SlowTransport()
    h = make_harness(
        transport=transport,
        llm=llm('Transferring you. [[transfer_call {"destination": "Front desk"}]]'),
        overrides={"transfer_targets": (("Front desk", "+34910000000"),)},
    )
    h.start()
    h.say("A person, please.")
    await h.until(lambda: transport.transfers == [] and len(h.recorder.by_role("assistant")) == 1)
    h.session.stop(EndReason.SERVER_SHUTDOWN, say="We are closing. Goodbye.")
    assert await h.result(timeout=15) is EndReason.TRANSFERRED
    assert transport.transfers == ["+34910000000"]
    # Nothing is said on a line that now belongs to a person.
    assert [t.text for t in h.recorder.by_role("assistant")] == ["Transferring you."]
    assert h.recorder.ended[0]["transferred_to"] == "+34910000000"


def test_a_farewell_inside_a_sentence_or_a_question_does_not_hang_up():
    from orchestrator.turn_words import says_goodbye

    assert says_goodbye("Thank you for calling. Goodbye!", "en-US")
    assert says_goodbye("See you on Friday, bye!", "en-US")
    assert says_goodbye("Perfecto, que tenga un buen día.", "es-ES")
    assert not says_goodbye("Sure. We will take care of that for you.", "en-US")
    assert not says_goodbye("Anything else before we say goodbye?", "en-US")
    assert not says_goodbye("¿Quiere que le diga adiós a su reserva?", "es-ES")


async def test_the_caller_interrupting_a_slow_tool_cancels_it_and_it_is_remembered(
    make_harness, tool_server
):
    tool = ToolSpec(name="check", description="Check.", url=tool_server.url("/slow"),
                    secret=SECRET, timeout_s=8.0)  # fmt: skip
    h = make_harness(
        llm=llm("Let me check. [[check {}]]", "Of course, what would you like instead?"),
        overrides={"tools": (tool,), "barge_in_min_ms": 300},
    )
    h.start()
    h.say()
    await h.until(lambda: bool(tool_server.requests))
    await h.until(lambda: len(h.transport.frames) > 5)  # "Let me check." is playing
    h.say("No wait, forget it, I want to change the day instead please.")
    await h.until(lambda: len(h.recorder.by_role("tool")) == 1, timeout=15)
    assert h.recorder.by_role("tool")[0].tool.status == "cancelled"
    # The LLM will know the request may have gone through.
    (result,) = [m for m in h.session.history if m["role"] == "tool"]
    assert "may or may not have been carried out" in result["content"]
    assert h.recorder.by_role("assistant")[0].interrupted
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2, timeout=15)
    assert await h.finish() is EndReason.CALLER_HANGUP
