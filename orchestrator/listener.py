"""The caller's side of the call, for the session's control loop: VAD events in, turns out.

    VAD events ─► Listener ─► "a turn to answer" (take_turn) / "interrupt the agent" (True)
                   ├─ TurnTaking   segments → turns, overlaps → backchannel | interruption
                   ├─ EndOfTurn    is the paused caller done? (Smart Turn, timer)
                   └─ Transcriber  early and partial transcripts

Speech over the agent pauses its audio here (``CallOutput.pause``) at the first voiced
window; a backchannel resumes it; an interruption is returned to the session, which
owns the utterance and cancels it. Only the control loop calls this (no locking).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from orchestrator.call_output import CallOutput
from orchestrator.config import CallConfig
from orchestrator.end_of_turn import EndOfTurn, EotDecision, ScoreFn
from orchestrator.engines import EngineError
from orchestrator.playout import PacedPlayout
from orchestrator.reply import Utterance
from orchestrator.stats import CallStats
from orchestrator.task_reaper import DroppedTasks
from orchestrator.transcriber import Transcriber
from orchestrator.turn_taking import Outcome, TurnTaking, UserTurn
from orchestrator.turn_words import backchannel_prompt
from orchestrator.vad import TurnEvent, TurnEventKind

logger = logging.getLogger(__name__)


class Listener:
    def __init__(
        self,
        config: CallConfig,
        *,
        stt: Any,
        stt_runs_locally: bool,
        turn_model: ScoreFn | None,
        out: CallOutput,
        playout: PacedPlayout,
        stats: CallStats,
        clock: Callable[[], float],
        wake: Callable[[], None],
        heard: Callable[[asyncio.Task[str]], None],
    ) -> None:
        self._config = config
        self._call_id = config.call_id
        self._log_extra = {"call_id": config.call_id}
        self._out = out
        self._playout = playout
        self._stats = stats
        self._clock = clock
        self._on_heard = heard
        self.turns = TurnTaking(
            barge_in_enabled=config.barge_in_enabled,
            barge_in_min_ms=config.barge_in_min_ms,
            language=config.language,
            backchannel_words=config.backchannel_words,
        )
        self.eot = EndOfTurn(config, score=turn_model, clock=clock, wake=wake)
        self._wake = wake
        self.stt = Transcriber(
            stt,
            language=config.language,
            partials=config.stt_partial_interval_ms > 0 and stt_runs_locally,
            emit=out.emit,
            call_id=config.call_id,
        )
        self._decision: EotDecision | None = None  # for the pending turn, once decided
        self._decided_at = 0.0
        self._heard_task: asyncio.Task[str] | None = None
        self._dropped = DroppedTasks()
        self._onset_pause = False  # agent paused at a voice onset not yet known as speech

    # --- what the session asks ----------------------------------------------------------------

    @property
    def detector_silence_ms(self) -> int:
        """Smart mode: the VAD reports short pauses and end_of_turn.py decides."""
        cfg = self._config
        return cfg.vad_stop_ms if self.eot.smart else cfg.silence_timeout_ms

    @property
    def progress_ms(self) -> int:
        return self._config.stt_partial_interval_ms if self.stt.partials else 0

    @property
    def busy(self) -> bool:
        """The caller is speaking, or said something not answered yet (no idle timer)."""
        return self.turns.user_speaking or self.turns.has_pending or self.eot.waiting

    def deadline(self) -> float | None:
        return self.eot.deadline()

    def poll(self) -> bool:
        """Timers: True if the end of turn was decided now."""
        if (decision := self.eot.poll()) is not None:
            self._decided(decision)
            return True
        return False

    def take_turn(self) -> UserTurn | None:
        """A turn the caller finished, to answer now (the agent must be free)."""
        if self._decision is None or self.turns.user_speaking:
            return None
        turn = self.turns.take_pending(self._decision, detected_at=self._decided_at)
        self._decision = None
        if turn is not None:
            turn.transcript = self.stt.take(turn.audio)
            eot = turn.eot
            logger.info("call %s: end of turn (%s%s, %.0f ms after speech)", self._call_id,
                        eot.reason if eot else "?",
                        f" {eot.score:.2f}" if eot and eot.score is not None else "",
                        (self._decided_at - (turn.speech_end_at or self._decided_at)) * 1000,
                        extra=self._log_extra)  # fmt: skip
        return turn

    def utterance_ended(self, *, dropped_turn: UserTurn | None) -> None:
        """The agent's utterance is over; ``dropped_turn``: the turn it was answering,
        cut before the caller heard anything (the caller went on): it joins what follows."""
        if dropped_turn is not None:
            self.turns.put_back(dropped_turn)
            self._decision = None
        if self.turns.overlap is not None:
            # It ended on its own (an empty reply) while the caller spoke over it: their
            # speech is simply their turn.
            self.turns.end_overlap(Outcome.INTERRUPTION)
        self._drop_heard()
        self._out.resume()
        if self._decision is None and not self.turns.user_speaking and not self.eot.waiting:
            self._paused()  # an interruption's words, or a joined turn: is it complete?

    # --- VAD events ------------------------------------------------------------------------------

    async def on_vad(self, event: TurnEvent, utt: Utterance | None) -> bool:
        """Handle one VAD event; True: the agent's utterance must be interrupted."""
        held = self.turns.barge_in_enabled and utt is not None and utt.interruptible
        kind = event.kind
        if kind is TurnEventKind.VOICE_ONSET:
            # Maybe speech: stop sending agent audio now, decide once we know more.
            if self.turns.overlap is None and held:
                self._out.pause()
                self._onset_pause = True
        elif kind is TurnEventKind.FALSE_START:
            if self._onset_pause and self.turns.overlap is None:
                self._stats.false_starts += 1
                self._out.resume()
            self._onset_pause = False
        elif kind is TurnEventKind.SPEECH_STARTED:
            self._onset_pause = False
            self.turns.speech_started(event)
            self.eot.resumed()  # the pause was inside the turn
            self.stt.drop()
            if self.turns.overlap is None and held:
                assert utt is not None
                self._overlap_started(event, utt)
        elif kind is TurnEventKind.PROGRESS:
            if self.turns.overlap is None:
                self.stt.partial(self.turns.pending_audio() + event.audio)
        elif kind is TurnEventKind.BARGE_IN:
            if self.turns.overlap is not None:  # long speech over the agent: no doubt
                return await self._overlap_decided(Outcome.INTERRUPTION, utt)
        elif kind is TurnEventKind.TURN_ENDED:
            segment = self.turns.segment_ended(event)
            if self.turns.overlap is None:
                self.turns.add(segment)
                self._paused()
            elif self.turns.overlap_segment(segment, voiced_ms=event.voiced_ms) is Outcome.INTERRUPTION:
                return await self._overlap_decided(Outcome.INTERRUPTION, utt)
            else:  # short: its words decide (all of the overlap's speech so far)
                self._drop_heard()
                self._heard_task = asyncio.create_task(self._hear(self.turns.overlap.audio))
                self._heard_task.add_done_callback(self._on_heard)
        return False

    async def on_heard(self, task: asyncio.Task[str], utt: Utterance | None) -> bool:
        """The words said over the agent; True: they interrupt it."""
        if task is not self._heard_task:
            return False
        self._heard_task = None
        if self.turns.overlap is None or self.turns.user_speaking:
            return False  # more speech came: its pause decides
        try:
            text = (task.result() or "").strip()
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001
            # Unheard words never stop the agent (a real interruption goes on talking
            # and reaches barge_in_min_ms); nothing here may end the call.
            logger.warning("call %s: could not transcribe speech over the agent: %r",
                           self._call_id, exc, exc_info=not isinstance(exc, EngineError),
                           extra=self._log_extra)  # fmt: skip
            text = ""
        return await self._overlap_decided(self.turns.overlap_heard(text), utt)

    # --- internals -------------------------------------------------------------------------------

    async def _hear(self, audio: bytes) -> str:
        """The words said over the agent; bounded, since the agent waits paused meanwhile."""
        prompt = backchannel_prompt(self._config.language)
        async with asyncio.timeout(self._config.engine_timeout_s):
            return await self.stt.transcribe(audio, prompt=prompt)

    def _paused(self) -> None:
        """The caller paused after the pending turn: is it complete?"""
        self._decision = None
        audio = self.turns.pending_audio()
        if not audio:
            return
        self.stt.early(audio, heard=self._early_heard)
        end = self.turns.pending_speech_end()
        if (decision := self.eot.paused(audio, speech_end_at=end)) is not None:
            self._decided(decision)

    def _drop_heard(self) -> None:
        task, self._heard_task = self._heard_task, None
        self._dropped.drop(task)

    def _early_heard(self, text: str) -> None:
        if self.eot.waiting:
            self.eot.heard(text)
            self._wake()

    def _decided(self, decision: EotDecision) -> None:
        self._decision, self._decided_at = decision, self._clock()

    def _overlap_started(self, event: TurnEvent, utt: Utterance) -> None:
        """Go quiet at once (usually already done at the voice onset)."""
        onset = event.at - event.voiced_ms / 1000.0
        overlap = self.turns.overlap_started(onset=onset, audible=utt.sent_ms > 0)
        self._out.pause()
        utt.progress_at = self._clock()
        if overlap.audible:
            self._stats.overlaps += 1
            # When the far end ran out of what it held (the playout lead at most).
            overlap.quiet_ms = round((self._playout.quiet_at - onset) * 1000.0, 1)
        logger.info("call %s: caller speaks over utterance %d (%s), agent paused", self._call_id,
                    utt.n, utt.phase, extra=self._log_extra)  # fmt: skip

    async def _overlap_decided(self, outcome: Outcome, utt: Utterance | None) -> bool:
        overlap = self.turns.end_overlap(outcome)
        if overlap is None or utt is None:
            return False
        event = {"type": "overlap", "outcome": outcome.value, "text": overlap.heard,
                 "quiet_ms": overlap.quiet_ms}  # fmt: skip
        if outcome is Outcome.BACKCHANNEL:
            self._out.resume()
            utt.progress_at = self._clock()
            if overlap.audible:
                self._stats.backchannels += 1
                await self._out.emit(event)
            logger.info("call %s: backchannel %r (%.0f ms), agent goes on", self._call_id,
                        overlap.heard, overlap.voiced_ms, extra=self._log_extra)  # fmt: skip
            return False
        if overlap.audible:
            # (Speech over a reply not heard yet is the caller going on, not an
            # interruption: that reply is dropped and their words join the turn.)
            self._stats.interruptions += 1
            await self._out.emit(event)
        logger.info("call %s: %s (utterance %d, %s) by %r", self._call_id,
                    "interrupted" if overlap.audible else "caller goes on", utt.n, utt.phase,
                    overlap.heard or "long speech", extra=self._log_extra)  # fmt: skip
        return True

    async def close(self) -> None:
        self._drop_heard()
        await self._dropped.close()
        await self.eot.close()
        await self.stt.close()
