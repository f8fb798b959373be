"""The session's collaborators on their own: turn-taking decisions, the transcript, stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.contracts import TurnMetrics
from orchestrator.recorder_queue import RecorderQueue
from orchestrator.stats import CallStats, percentile
from orchestrator.transcript import Transcript
from orchestrator.turn_taking import Outcome, TurnTaking
from orchestrator.vad import TurnEvent, TurnEventKind
from tests.orchestrator.conftest import RecordingRecorder


def event(kind: TurnEventKind, at: float, voiced_ms: float = 300, audio: bytes = b"") -> TurnEvent:
    return TurnEvent(kind=kind, at=at, voiced_ms=voiced_ms, audio=audio, speech_end_at=at - 0.7)


def _turns(**kw) -> TurnTaking:
    return TurnTaking(barge_in_enabled=True, barge_in_min_ms=900, language="en-US", **kw)


def _segment(turns: TurnTaking, at: float, audio: bytes = b"ab", voiced_ms: float = 300.0):
    turns.speech_started(event(TurnEventKind.SPEECH_STARTED, at))
    return turns.segment_ended(event(TurnEventKind.TURN_ENDED, at + 1, audio=audio))


def test_short_speech_saying_only_mm_hmm_over_the_agent_is_a_backchannel() -> None:
    turns = _turns()
    turns.overlap_started(onset=1.0, audible=True)
    assert turns.overlap_segment(_segment(turns, 1.0), voiced_ms=400) is Outcome.UNDECIDED
    assert turns.overlap_heard("Mm-hmm.") is Outcome.BACKCHANNEL
    turns.end_overlap(Outcome.BACKCHANNEL)
    assert not turns.has_pending and turns.overlap is None


def test_words_beyond_the_backchannel_list_interrupt_and_start_the_next_turn() -> None:
    turns = _turns()
    turns.overlap_started(onset=1.0, audible=True)
    turns.overlap_segment(_segment(turns, 1.0, b"no"), voiced_ms=400)
    assert turns.overlap_heard("No, stop.") is Outcome.INTERRUPTION
    turns.end_overlap(Outcome.INTERRUPTION)
    assert turns.take_pending().audio == b"no"


def test_long_speech_over_the_agent_interrupts_whatever_it_says() -> None:
    turns = _turns()
    turns.overlap_started(onset=1.0, audible=True)
    assert turns.overlap_segment(_segment(turns, 1.0), voiced_ms=500) is Outcome.UNDECIDED
    assert turns.overlap_segment(_segment(turns, 3.0), voiced_ms=500) is Outcome.INTERRUPTION


def test_a_profile_can_add_its_own_backchannels() -> None:
    turns = _turns(backchannel_words=("vale vale",))
    turns.overlap_started(onset=1.0, audible=True)
    assert turns.overlap_heard("vale vale") is Outcome.BACKCHANNEL


def test_segments_join_into_one_turn_and_a_dropped_reply_is_put_back_first() -> None:
    turns = _turns()
    for at, audio in ((1.0, b"aa"), (3.0, b"bb")):
        turns.add(_segment(turns, at, audio))
    first = turns.take_pending()
    assert first is not None and first.audio == b"aabb" and first.started_at == 0.7
    turns.add(_segment(turns, 5.0, b"cc"))
    turns.put_back(first)
    assert turns.take_pending().audio == b"aabbcc"


async def test_the_transcript_numbers_turns_and_keeps_the_llm_history_alternating() -> None:
    recorder, stats = RecordingRecorder(), CallStats()
    queue = RecorderQueue("c1")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    transcript = Transcript(
        recorder=recorder, queue=queue, stats=stats, wall=lambda t: start + timedelta(seconds=t)
    )
    queue.start()
    assert transcript.user("hello", started_at=0.0, ended_at=1.0) == 1
    assert transcript.user("are you there", started_at=2.0, ended_at=3.0) == 2
    transcript.agent("Yes.", started_at=4.0, ended_at=5.0, interrupted=False,
                     metrics=TurnMetrics(), reply=True)  # fmt: skip
    assert transcript.untranscribed(started_at=6.0, ended_at=7.0) == 4
    transcript.unanswered(4, "stt failed")
    await queue.close(wait_s=5)

    assert transcript.messages("sys") == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hello are you there"},
        {"role": "assistant", "content": "Yes."},
    ]
    assert [(t.sequence, t.role) for t in recorder.turns] == [
        (1, "user"), (2, "user"), (3, "assistant"), (4, "user"),
    ]  # fmt: skip
    assert recorder.turns[0].started_at == start
    assert recorder.unanswered == [(4, "stt failed")]
    assert (stats.user_turns, stats.assistant_turns, stats.unanswered) == (3, 1, 1)


def test_call_stats_summary_uses_nearest_rank_percentiles() -> None:
    stats = CallStats(user_turns=2, assistant_turns=2)
    stats.reply_metrics = [TurnMetrics(voice_to_voice_ms=v) for v in (100.0, 300.0)]
    summary = stats.summary(12.3456)
    assert summary["duration_s"] == 12.346 and summary["turns"] == 4
    assert summary["voice_to_voice_p50_ms"] == 100.0
    assert summary["voice_to_voice_p95_ms"] == 300.0
    assert percentile([], 50) is None


def test_overload_ends_busy_and_is_never_a_provider_failure() -> None:
    from orchestrator.config import CallConfig
    from orchestrator.contracts import EndReason
    from orchestrator.engine_steps import EngineFailed
    from orchestrator.failures import ending_for_error, ending_for_stall

    config = CallConfig(busy_message="Busy.", apology_message="Sorry.")
    busy = ending_for_error(EngineFailed("llm", "queue", vendor="local", overloaded=True), config)
    assert (busy.reason, busy.say, busy.failed_role) == (EndReason.BUSY, "Busy.", "")
    tts = ending_for_error(
        EngineFailed("tts", "tts: 503", vendor="azure", overloaded=False), config
    )
    assert (tts.reason, tts.say, tts.failed_role, tts.tts_failed) == (
        EndReason.ERROR, None, "tts", True,
    )  # fmt: skip
    stall = ending_for_stall("stalled", local=False, config=config)
    assert (stall.reason, stall.say, stall.failed_role) == (EndReason.ERROR, "Sorry.", "")


async def test_end_of_turn_waits_by_score_and_words_never_past_the_cap() -> None:
    """The decision rule on its own (the model is a stub: no audio here)."""
    import asyncio

    from orchestrator.config import CallConfig
    from orchestrator.end_of_turn import EndOfTurn

    now = [100.0]
    config = CallConfig(
        language="en-US", vad_stop_ms=250, max_turn_silence_ms=2500, turn_threshold=0.5
    )

    async def run(score: float | None, words: str = "") -> tuple[str, float]:
        """(reason, silence waited in s)"""
        async def model(_: bytes) -> float | None:
            return score

        eot = EndOfTurn(config, score=model, clock=lambda: now[0], wake=lambda: None)
        speech_end = now[0] - 0.25  # the VAD reports the pause 250 ms after the speech
        assert eot.paused(b"x", speech_end_at=speech_end) is None
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if words:
            eot.heard(words)
        deadline = eot.deadline()
        assert deadline is not None
        now[0] = max(now[0], deadline)
        decision = eot.poll()
        assert decision is not None and not eot.waiting
        return decision.reason, round(now[0] - speech_end, 3)

    assert await run(0.9) == ("model", 0.25)  # complete: at the pause
    assert await run(0.05) == ("max_silence", 2.5)  # clearly unfinished: the cap
    reason, waited = await run(0.4)  # unsure: the lowering bar meets it in between
    assert reason == "model" and 0.25 < waited < 2.5
    # unsure model, words look done: 1 s; words unfinished: the cap
    assert await run(0.2, "two people at eight.") == ("transcript", 1.0)
    assert await run(0.2, "a table for") == ("max_silence", 2.5)
    # sure it is mid-sentence: the words cannot shorten it (STT hears "and" as "end")
    assert await run(0.05, "on Friday end.") == ("max_silence", 2.5)
    assert await run(None) == ("no_model", 0.7)  # model busy: the fallback silence


def test_a_fast_short_phrase_is_a_misheard_murmur_but_a_longer_one_interrupts() -> None:
    turns = _turns()
    turns.overlap_started(onset=1.0, audible=True)
    turns.overlap_segment(_segment(turns, 1.0), voiced_ms=400)
    assert turns.overlap_heard("In a month.") is Outcome.BACKCHANNEL  # 7.5 words/s
    turns.end_overlap(Outcome.BACKCHANNEL)
    turns.overlap_started(onset=5.0, audible=True)
    turns.overlap_segment(_segment(turns, 5.0), voiced_ms=700)
    assert turns.overlap_heard("Actually, make that six people.") is Outcome.INTERRUPTION
    turns.end_overlap(Outcome.INTERRUPTION)
    turns.overlap_started(onset=9.0, audible=True)
    turns.overlap_segment(_segment(turns, 9.0), voiced_ms=160)
    assert turns.overlap_heard("Wait.") is Outcome.INTERRUPTION  # one quick word is a word
