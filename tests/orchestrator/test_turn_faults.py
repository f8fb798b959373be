"""Turn-taking under faults: failing engines, a hang-up mid-decision, a slow turn model.

Scripted engines and a stub end-of-turn model (the decision, not the model, is tested);
caller audio is real speech through the real VAD.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.scripted_engines import ScriptedLLM, ScriptedSTT, ScriptedTTS
from orchestrator.session import CriticalCallError, EndReason
from tests.orchestrator.conftest import Harness

SMART = {"turn_detection": "smart", "vad_stop_ms": 250, "max_turn_silence_ms": 2500}
GREETING = (
    "Hello, this is Casa Lola, the little restaurant by the harbour. "
    "We are open every day from noon to midnight."
)


def model(score: float, delay_s: float = 0.01):
    async def score_turn(audio: bytes) -> float:
        await asyncio.sleep(delay_s)
        return score

    return score_turn


async def test_a_reply_that_fails_before_speaking_still_stores_the_callers_turn(
    make_harness,
) -> None:
    h: Harness = make_harness(llm=ScriptedLLM(ttft_ms=10, fail=True))
    h.start()
    h.say()
    with pytest.raises(CriticalCallError):
        await h.result()
    (user,) = h.recorder.by_role("user")
    assert h.recorder.unanswered and h.recorder.unanswered[0][0] == user.sequence


async def test_a_hang_up_while_holding_for_more_words_stores_what_was_said(make_harness) -> None:
    h: Harness = make_harness(
        stt=ScriptedSTT(delay_ms=20, text="I'd like to book a table for"),
        turn_model=model(0.9),
        overrides=SMART,
    )
    h.start()
    h.say()
    await h.until(lambda: any(e.get("role") == "user" for e in h.transport.of_type("transcript")))
    await asyncio.sleep(0.2)  # held: "…for" sounds unfinished
    await h.finish(EndReason.CALLER_HANGUP)
    assert [t.text for t in h.recorder.by_role("user")] == ["I'd like to book a table for"]


async def test_words_said_while_the_reply_is_held_join_the_turn(make_harness) -> None:
    h: Harness = make_harness(
        stt=ScriptedSTT(delay_ms=20, texts=["I'd like to book a table for", "To."]),
        turn_model=model(0.9),
        overrides=SMART,
    )
    h.start()
    h.say()
    await h.until(lambda: any(e.get("role") == "user" for e in h.transport.of_type("transcript")))
    h.say("Two.")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1, timeout=15)
    await h.finish()
    # the continuation was not taken for a backchannel: one turn, all its words answered
    assert len(h.recorder.by_role("user")) == 1
    assert h.transport.of_type("overlap") == []


async def test_a_slow_turn_model_never_outlives_the_call(make_harness) -> None:
    h: Harness = make_harness(
        turn_model=model(0.9, delay_s=5), overrides={**SMART, "max_turn_silence_ms": 600}
    )
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1, timeout=15)
    await h.finish()
    pending = [t.get_name() for t in asyncio.all_tasks() if not t.done()]
    assert "end-of-turn" not in pending


class BrokenSTT(ScriptedSTT):
    async def transcribe(self, pcm16, *, sample_rate, language, prompt=""):  # noqa: ANN001
        self.calls.append(len(pcm16))
        raise RuntimeError("decoder blew up")  # not an EngineError


async def test_an_unexpected_stt_error_on_speech_over_the_agent_does_not_end_the_call(
    make_harness,
) -> None:
    h: Harness = make_harness(
        stt=BrokenSTT(),
        tts=ScriptedTTS(ttfb_ms=20, ms_per_char=60, chunk_ms=100, realtime=4),
        overrides={"greeting": GREETING},
    )
    h.start()
    await h.until(lambda: len(h.transport.frames) > 10)
    h.say("Yeah.")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1, timeout=20)
    assert not h.task.done()
    await h.finish()
    assert not h.recorder.by_role("assistant")[0].interrupted
