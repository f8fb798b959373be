"""CallSession behaviour: real speech through the real VAD, scripted engines, a recording transport."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from bench.scripted_engines import ScriptedLLM, ScriptedSTT, ScriptedTTS
from orchestrator.dtmf import DtmfDigits
from orchestrator.session import CriticalCallError, EndReason
from tests.orchestrator.conftest import Harness
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16

pytestmark = pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox needed")

LONG_REPLY = (
    "Certainly, I can help you with that booking tonight. "
    "We have tables available at seven and at nine in the main room. "
    "Please tell me which one you prefer and how many guests will come."
)


def noise_pcm16(ms: int, *, rate: int = 16000) -> bytes:
    rng = np.random.default_rng(1)
    return rng.normal(0, 6000, rate * ms // 1000).astype("<i2").tobytes()


async def test_it_answers_one_full_turn(make_harness) -> None:
    h: Harness = make_harness()
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    assert await h.finish() is EndReason.CALLER_HANGUP

    user, agent = h.recorder.turns
    assert (user.role, user.text) == ("user", "I would like a table")
    assert (agent.role, agent.text, agent.interrupted) == (
        "assistant",
        "Sure. For how many?",
        False,
    )
    assert user.ended_at <= agent.started_at <= agent.ended_at
    m = agent.metrics
    assert m is not None
    assert None not in (m.stt_ms, m.llm_ttft_ms, m.tts_ttfb_ms, m.voice_to_voice_ms)
    # The review page's waterfall: the first whole sentence comes after the first token.
    assert m.llm_first_sentence_ms is not None and m.llm_first_sentence_ms >= m.llm_ttft_ms
    assert m.engines == {"stt": "scripted-stt", "llm": "scripted-llm", "tts": "scripted-tts"}

    assert h.transport.states() == ["listening", "thinking", "speaking", "listening"]
    kinds = [e["type"] for e in h.transport.events]
    assert kinds.index("mark") < kinds.index("metrics")
    assert h.transport.of_type("mark") == [{"type": "mark", "name": "utt-1"}]
    finals = [e for e in h.transport.of_type("transcript") if e["final"]]
    assert [(e["role"], e["text"]) for e in finals] == [
        ("user", "I would like a table"),
        ("assistant", "Sure. For how many?"),
    ]
    # ~19 chars * 8 ms of TTS audio went out as whole 20 ms frames.
    assert len(h.transport.frames) >= 19 * 8 // 20
    assert h.transport.closed == "caller_hangup"
    assert len(h.recorder.started) == 1
    assert [e["reason"] for e in h.recorder.ended] == [EndReason.CALLER_HANGUP]
    assert h.recorder.ended[0]["metrics"]["turns"] == 2
    # the utterance handed to STT includes the speech and its pre-roll
    assert h.stt.calls[0] >= len(speech_pcm16("I would like to book a table for two people.")) // 2


async def test_two_turns_keep_history(make_harness) -> None:
    h: Harness = make_harness(
        stt=ScriptedSTT(delay_ms=10, texts=["first question", "second question"]),
        llm=ScriptedLLM(ttft_ms=20, tokens_per_s=200, replies=["Reply one.", "Reply two."]),
    )
    h.start()
    h.say("What time do you open?")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    h.say("And when do you close?")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2)
    await h.finish()

    assert h.llm.requests[1] == [
        {"role": "system", "content": "You are a test agent."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "Reply one."},
        {"role": "user", "content": "second question"},
    ]
    assert h.transport.of_type("mark") == [
        {"type": "mark", "name": "utt-1"},
        {"type": "mark", "name": "utt-2"},
    ]


async def test_first_audio_leaves_before_the_llm_reply_is_complete(make_harness) -> None:
    h: Harness = make_harness(llm=ScriptedLLM(ttft_ms=20, tokens_per_s=15, reply=LONG_REPLY))
    finished_at_first_frame: list[int] = []
    h.transport.on_audio = lambda i: (
        finished_at_first_frame.append(h.llm.finished) if i == 0 else None
    )
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1, timeout=20)
    await h.finish()
    assert finished_at_first_frame == [0]
    assert h.llm.finished == 1
    # each sentence was synthesized on its own, in order
    assert len(h.tts.texts) == 3
    assert h.recorder.by_role("assistant")[0].text == LONG_REPLY


async def test_barge_in_clears_audio_and_marks_the_turn_interrupted(make_harness) -> None:
    h: Harness = make_harness(
        stt=ScriptedSTT(delay_ms=10, texts=["book a table", "no wait, stop"]),
        llm=ScriptedLLM(ttft_ms=20, tokens_per_s=200, replies=[LONG_REPLY, "Okay."]),
        tts=ScriptedTTS(ttfb_ms=20, ms_per_char=40, chunk_ms=100, realtime=4),
    )
    h.start()
    h.say()
    await h.until(lambda: len(h.transport.frames) >= 40)  # ~0.8 s of the answer played
    h.say("No wait, stop, I want to change it.")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2, timeout=20)
    await h.finish()

    assert h.transport.clears == 1
    first = h.recorder.by_role("assistant")[0]
    assert first.interrupted
    assert first.text and len(first.text) < len(LONG_REPLY)
    assert LONG_REPLY.startswith(first.text)
    assert any(e.get("interrupted") for e in h.transport.of_type("transcript"))
    # no frame of the interrupted answer after the clear: the next audio is the new reply
    log = h.transport.log
    clear_at = log.index(("clear", None))
    next_audio = next(i for i, (kind, _) in enumerate(log) if kind == "audio" and i > clear_at)
    assert ("event", {"type": "state", "state": "thinking"}) in log[clear_at:next_audio]
    # the interruption became the next user turn, answered with the spoken-only history
    assert [t.text for t in h.recorder.by_role("user")] == ["book a table", "no wait, stop"]
    assert h.llm.requests[1][-2] == {"role": "assistant", "content": first.text}
    assert h.recorder.ended[0]["metrics"]["interruptions"] == 1


async def test_noise_and_backchannels_make_no_turn_and_do_not_cut_the_agent(make_harness) -> None:
    h: Harness = make_harness(
        overrides={"greeting": LONG_REPLY},
        stt=ScriptedSTT(delay_ms=20, text="Mm-hm."),
        tts=ScriptedTTS(ttfb_ms=20, ms_per_char=15, chunk_ms=100, realtime=0),
    )
    h.start()
    await h.until(lambda: h.transport.states()[-1:] == ["speaking"])
    # a 100 ms noise burst and a ~190 ms speech fragment (a "mm-hm") over the agent
    fragment = speech_pcm16("Hello there")[: 16000 * 2 * 190 // 1000]
    h.session.push_audio(silence_pcm16(300) + noise_pcm16(100) + silence_pcm16(600))
    h.session.push_audio(fragment + silence_pcm16(600))
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1, timeout=20)
    # and a noise burst while listening
    h.session.push_audio(silence_pcm16(300) + noise_pcm16(100) + silence_pcm16(800))
    await asyncio.sleep(0.3)
    await h.finish()

    assert h.transport.clears == 0
    greeting = h.recorder.by_role("assistant")[0]
    assert not greeting.interrupted and greeting.text == LONG_REPLY
    assert h.recorder.by_role("user") == []
    # the fragment was heard (transcribed once) and let the agent go on
    assert len(h.stt.calls) == 1
    assert "thinking" not in h.transport.states()
    metrics = h.recorder.ended[0]["metrics"]
    assert metrics["backchannels"] == 1 and metrics["interruptions"] == 0
    assert [e["outcome"] for e in h.transport.of_type("overlap")] == ["backchannel"]


async def test_idle_reprompts_once_then_hangs_up(make_harness) -> None:
    h: Harness = make_harness(overrides={"idle_timeout_s": 0.3, "greeting": "Hello."})
    h.start()
    assert await h.result() is EndReason.IDLE_TIMEOUT
    assert h.tts.texts == ["Hello.", "Are you still there?", "Goodbye."]
    assert [t.text for t in h.recorder.by_role("assistant")] == h.tts.texts
    assert h.transport.closed == "idle_timeout"
    assert h.transport.log[-1] == ("close", "idle_timeout")
    assert [e["reason"] for e in h.recorder.ended] == [EndReason.IDLE_TIMEOUT]


async def test_user_speech_resets_the_idle_reprompt(make_harness) -> None:
    h: Harness = make_harness(overrides={"idle_timeout_s": 0.4})
    h.start()
    await h.until(lambda: "Are you still there?" in h.tts.texts)
    h.say()
    await h.until(lambda: len(h.recorder.by_role("user")) == 1)
    assert await h.result() is EndReason.IDLE_TIMEOUT
    # answered, then reprompted again (a fresh idle period), then goodbye
    assert h.tts.texts == [
        "Are you still there?",
        "Sure. For how many?",
        "Are you still there?",
        "Goodbye.",
    ]


async def test_engine_failure_plays_apology_then_closes_and_raises(make_harness) -> None:
    h: Harness = make_harness(llm=ScriptedLLM(ttft_ms=10, fail=True))
    h.start()
    h.say()
    with pytest.raises(CriticalCallError) as caught:
        await h.result()
    assert caught.value.call_id == "test-call"
    assert caught.value.role == "llm"
    assert "invalid key" in caught.value.reason
    assert h.tts.texts == ["Sorry, something went wrong."]
    assert h.transport.frames, "the apology was played"
    assert h.transport.log[-1] == ("close", "error")
    assert len(h.recorder.ended) == 1
    assert h.recorder.ended[0]["reason"] is EndReason.ERROR
    assert "invalid key" in h.recorder.ended[0]["error"]


async def test_tts_failure_just_closes(make_harness) -> None:
    h: Harness = make_harness(tts=ScriptedTTS(ttfb_ms=10, fail=True))
    h.start()
    h.say()
    with pytest.raises(CriticalCallError) as caught:
        await h.result()
    assert caught.value.role == "tts"
    assert len(h.tts.texts) == 1  # no apology attempted with a broken TTS
    assert h.transport.frames == []
    assert h.transport.closed == "error"
    assert [e["reason"] for e in h.recorder.ended] == [EndReason.ERROR]


async def test_engine_timeout_ends_the_call(make_harness) -> None:
    h: Harness = make_harness(
        stt=ScriptedSTT(delay_ms=0, hang=True), overrides={"engine_timeout_s": 0.2}
    )
    h.start()
    h.say()
    with pytest.raises(CriticalCallError) as caught:
        await h.result()
    assert "stt timed out" in caught.value.reason
    assert h.tts.texts == ["Sorry, something went wrong."]
    assert h.recorder.ended[0]["reason"] is EndReason.ERROR


async def test_cancellation_mid_reply_leaves_no_pending_tasks(make_harness) -> None:
    h: Harness = make_harness(
        llm=ScriptedLLM(ttft_ms=20, tokens_per_s=30, reply=LONG_REPLY),
        tts=ScriptedTTS(ttfb_ms=20, ms_per_char=40, chunk_ms=100, realtime=1),
    )
    h.start()
    h.say()
    await h.until(lambda: len(h.transport.frames) >= 10)
    assert h.task is not None
    h.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await h.result()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert [e["reason"] for e in h.recorder.ended] == [EndReason.ORPHANED]
    assert h.recorder.by_role("assistant")[0].interrupted
    assert h.transport.closed == "orphaned"


async def test_hangup_mid_reply_ends_promptly_without_goodbye(make_harness) -> None:
    h: Harness = make_harness(
        llm=ScriptedLLM(ttft_ms=20, tokens_per_s=30, reply=LONG_REPLY),
        tts=ScriptedTTS(ttfb_ms=20, ms_per_char=40, chunk_ms=100, realtime=1),
    )
    h.start()
    h.say()
    await h.until(lambda: len(h.transport.frames) >= 10)
    assert await h.finish(timeout=2.0) is EndReason.CALLER_HANGUP
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert h.recorder.by_role("assistant")[0].interrupted
    assert "Goodbye." not in h.tts.texts


async def test_shutdown_says_the_given_text_before_closing(make_harness) -> None:
    h: Harness = make_harness()
    h.start()
    await h.until(lambda: h.transport.states() == ["listening"])
    h.session.stop(EndReason.SERVER_SHUTDOWN, say="We are restarting, bye.")
    assert await h.result() is EndReason.SERVER_SHUTDOWN
    assert h.tts.texts == ["We are restarting, bye."]
    assert h.transport.frames
    assert h.transport.log[-1] == ("close", "server_shutdown")


async def test_max_duration_says_goodbye(make_harness) -> None:
    h: Harness = make_harness(overrides={"max_call_seconds": 1})
    h.start()
    assert await h.result() is EndReason.MAX_DURATION
    assert h.tts.texts == ["Goodbye."]


async def test_empty_transcript_makes_no_turn(make_harness) -> None:
    h: Harness = make_harness(stt=ScriptedSTT(delay_ms=10, text=""))
    h.start()
    h.say()
    await h.until(lambda: len(h.stt.calls) == 1 and h.transport.states()[-1] == "listening")
    await h.finish()
    assert h.recorder.turns == []
    assert h.llm.requests == []


async def test_empty_llm_reply_keeps_listening(make_harness) -> None:
    h: Harness = make_harness(llm=ScriptedLLM(ttft_ms=10, replies=["", "Now I answer."]))
    h.start()
    h.say()
    await h.until(lambda: len(h.llm.requests) == 1 and h.transport.states()[-1] == "listening")
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    await h.finish()
    assert h.recorder.by_role("assistant")[0].text == "Now I answer."
    # the unanswered user turn and the next one are merged: roles keep alternating
    assert [m["role"] for m in h.llm.requests[1]] == ["system", "user"]


async def test_dtmf_is_an_event_and_a_user_note(make_harness, monkeypatch) -> None:
    monkeypatch.setattr(DtmfDigits, "TURN_DELAY_S", 0.05)
    h: Harness = make_harness()
    h.start()
    h.session.push_dtmf("5")
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    await h.finish()
    assert h.transport.of_type("dtmf") == [{"type": "dtmf", "digit": "5"}]
    assert h.llm.requests[0][-1] == {"role": "user", "content": "[DTMF: 5]"}


async def test_greeting_is_spoken_first_and_kept_in_history(make_harness) -> None:
    h: Harness = make_harness(overrides={"greeting": "Welcome to the restaurant."})
    h.start()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 2)
    await h.finish()
    assert h.llm.requests[0][1] == {"role": "assistant", "content": "Welcome to the restaurant."}


async def test_a_failing_recorder_does_not_end_the_call(make_harness) -> None:
    h: Harness = make_harness()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database is down")

    h.recorder.call_started = broken  # type: ignore[method-assign]
    h.recorder.turn_recorded = broken  # type: ignore[method-assign]
    h.start()
    h.say()
    await h.until(lambda: h.transport.of_type("mark"))
    assert await h.finish() is EndReason.CALLER_HANGUP
    assert [e["reason"] for e in h.recorder.ended] == [EndReason.CALLER_HANGUP]


async def test_phone_transport_gets_8khz_frames(make_harness) -> None:
    h: Harness = make_harness(sample_rate=8000)
    h.start()
    h.say()
    await h.until(lambda: h.transport.of_type("mark"))
    await h.finish()
    assert h.transport.frames and all(len(f) == 320 for f in h.transport.frames)


async def test_a_fallback_switch_is_stored_on_the_turn_metrics(make_harness) -> None:
    from bench.scripted_engines import ScriptedSTT
    from orchestrator.engines.fallback import FallbackSTT

    chain = FallbackSTT(
        "stt",
        [
            ScriptedSTT(fail=True, name="groq"),
            ScriptedSTT(delay_ms=20, text="I would like a table", name="local"),
        ],
    )
    h: Harness = make_harness(stt=chain)
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1)
    await h.finish()
    metrics = h.recorder.by_role("assistant")[0].metrics
    assert metrics is not None and metrics.engines["stt"] == "local"
    assert len(metrics.fallbacks) == 1 and metrics.fallbacks[0].startswith("stt: groq -> local")
    assert metrics.as_dict()["fallbacks"] == metrics.fallbacks


async def test_a_hung_stt_never_leaves_the_agent_paused_over_a_backchannel(make_harness) -> None:
    """The agent waits, paused, for the words said over it; a hung STT must not keep it
    quiet: after the engine timeout the speech counts as unheard and the agent goes on."""
    h: Harness = make_harness(
        overrides={"greeting": LONG_REPLY, "engine_timeout_s": 0.3},
        stt=ScriptedSTT(delay_ms=0, hang=True),
        tts=ScriptedTTS(ttfb_ms=20, ms_per_char=15, chunk_ms=100, realtime=0),
    )
    h.start()
    await h.until(lambda: h.transport.states()[-1:] == ["speaking"])
    fragment = speech_pcm16("Hello there")[: 16000 * 2 * 400 // 1000]
    h.session.push_audio(fragment + silence_pcm16(600))
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1, timeout=20)
    await h.finish()
    greeting = h.recorder.by_role("assistant")[0]
    assert not greeting.interrupted and greeting.text == LONG_REPLY
    assert h.recorder.by_role("user") == [] and h.transport.clears == 0
