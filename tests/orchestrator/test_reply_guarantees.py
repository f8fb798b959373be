"""Every user turn gets a reply or the apology: watchdog, unanswered turns, overload,
turn sequence numbers and a recorder that survives a database blip."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from bench.scripted_engines import ScriptedLLM, ScriptedSTT
from orchestrator.recorder_queue import PENDING, RecorderUnavailable, flush_pending
from orchestrator.session import EndReason, TurnRecord
from tests.orchestrator.conftest import Harness, RecordingRecorder
from tests.speech import have_speech_tools

pytestmark = pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox needed")


class StuckLLM:
    """Never answers, and once cancelled keeps waiting in its cleanup: what a local model
    stream did when its worker thread was busy with another call's generation."""

    name = "stuck-llm"

    def __init__(self) -> None:
        self.cleanup_started = asyncio.Event()

    async def stream(
        self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int
    ) -> AsyncIterator[str]:
        try:
            await asyncio.Event().wait()
            yield ""
        finally:
            self.cleanup_started.set()
            await asyncio.Event().wait()  # ignores the first cancellation


async def test_a_reply_stuck_past_its_cancellation_gets_the_apology_within_the_budget(
    make_harness,
) -> None:
    h: Harness = make_harness(llm=StuckLLM(), overrides={"engine_timeout_s": 0.3})
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("user")) == 1)
    heard_at = time.monotonic()
    reason = await h.result(timeout=15)
    waited = time.monotonic() - heard_at

    assert reason is EndReason.ERROR
    # Step budget (0.3 s + 1 s grace) + watchdog margin (2 s), far below "forever".
    assert waited < 8.0
    assert h.tts.texts == ["Sorry, something went wrong."]
    assert "stalled" in h.recorder.ended[0]["error"]
    assert h.recorder.unanswered and h.recorder.unanswered[0][0] == 1
    assert h.recorder.ended[0]["metrics"]["unanswered_turns"] == 1
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_hang_up_while_the_agent_thinks_marks_the_turn_unanswered(make_harness) -> None:
    h: Harness = make_harness(llm=ScriptedLLM(ttft_ms=3000, reply="Too late."))
    h.start()
    h.say()
    await h.until(lambda: len(h.llm.requests) == 1)  # transcribed, the LLM is thinking
    assert await h.finish() is EndReason.CALLER_HANGUP

    ((sequence, why),) = h.recorder.unanswered
    assert sequence == h.recorder.by_role("user")[0].sequence == 1
    assert "caller_hangup" in why
    assert h.recorder.ended[0]["metrics"]["unanswered_turns"] == 1


async def test_an_answered_turn_is_not_marked_and_turns_are_numbered_in_order(
    make_harness,
) -> None:
    h: Harness = make_harness(
        stt=ScriptedSTT(delay_ms=10, texts=["one", "two"]),
        llm=ScriptedLLM(ttft_ms=20, tokens_per_s=200, replies=["First.", "Second."]),
    )
    h.start()
    h.say("What time do you open?")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    h.say("And when do you close?")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2)
    await h.finish()

    assert [t.sequence for t in h.recorder.turns] == [1, 2, 3, 4]
    assert [t.role for t in h.recorder.turns] == ["user", "assistant"] * 2
    assert h.recorder.unanswered == []


async def test_overload_says_the_busy_message_and_ends_busy_not_as_a_critical_error(
    make_harness,
) -> None:
    h: Harness = make_harness(stt=ScriptedSTT(delay_ms=0, overloaded=True))
    h.start()
    h.say()
    # No CriticalCallError: overload never counts toward the global stop.
    assert await h.result() is EndReason.BUSY
    assert " ".join(h.tts.texts) == h.config.busy_message
    assert h.recorder.ended[0]["reason"] is EndReason.BUSY
    assert "overloaded" in h.recorder.ended[0]["error"]
    # What the caller said is not lost without a trace: a placeholder turn, unanswered.
    (user,) = h.recorder.by_role("user")
    assert user.text == "(speech not transcribed)"
    assert [seq for seq, _ in h.recorder.unanswered] == [user.sequence]


class FlakyRecorder(RecordingRecorder):
    """A database that is away for the first ``outage_s`` seconds of the call."""

    def __init__(self, outage_s: float) -> None:
        super().__init__()
        self.back_at = time.monotonic() + outage_s
        self.refused = 0

    def _check(self) -> None:
        if time.monotonic() < self.back_at:
            self.refused += 1
            raise RecorderUnavailable("connection refused")

    async def turn_recorded(self, turn: TurnRecord) -> None:
        self._check()
        await super().turn_recorded(turn)

    async def call_ended(self, **kwargs) -> None:
        self._check()
        await super().call_ended(**kwargs)


async def test_turns_written_during_a_database_outage_land_in_order_once_it_is_back(
    make_harness,
) -> None:
    h: Harness = make_harness(
        stt=ScriptedSTT(delay_ms=10, texts=["one", "two"]),
        llm=ScriptedLLM(ttft_ms=20, tokens_per_s=200, replies=["First.", "Second."]),
        recorder=FlakyRecorder(outage_s=2.5),
    )

    def agent_turns_heard() -> int:
        finals = h.transport.of_type("transcript")
        return sum(1 for e in finals if e["role"] == "assistant" and e["final"])

    h.start()
    h.say("What time do you open?")
    await h.until(lambda: agent_turns_heard() == 1)
    h.say("And when do you close?")
    await h.until(lambda: agent_turns_heard() == 2)
    await h.finish()  # returns before the outage is over: the writes go on behind it
    async with asyncio.timeout(10):
        while not h.recorder.ended:
            await asyncio.sleep(0.05)

    assert h.recorder.refused > 0
    assert [(t.sequence, t.text) for t in h.recorder.turns] == [
        (1, "one"),
        (2, "First."),
        (3, "two"),
        (4, "Second."),
    ]
    assert h.recorder.ended[0]["reason"] is EndReason.CALLER_HANGUP
    assert await flush_pending(5) == 0
    assert not PENDING
