"""When is the caller done? End of turn from the audio, not a silence timer alone.

"smart" mode (the default): the VAD reports a short pause (``vad_stop_ms``, ~250 ms) and
Smart Turn (orchestrator/smart_turn.py) scores the turn's audio. A complete turn is
answered at once; an incomplete one ("I'd like to book a table for…") keeps the agent
listening. The bar lowers as the silence grows, from ``turn_threshold`` at the pause to
half of it at ``max_turn_silence_ms``, so a turn the model is unsure of waits a little and
one it calls unfinished waits for the cap, never longer. Speech resuming cancels the
decision: the pause was inside the turn.

The words count both ways. When the model is unsure, a transcript of the pause that
ends like a finished sentence gets its answer after ``WORDS_COMPLETE_SILENCE_S`` instead
of the cap (reason "transcript"). And a transcript ending in "and", "for", "the", "um"
(``turn_words.ends_incomplete``) holds the reply until the cap even when the model said
complete (reply.py), since the model is weaker on phone audio and on synthetic voices.

"silence" mode: the VAD's own silence timer (``silence_timeout_ms``) ends the turn.
Without the model (not installed, or the process is too busy to run it) the turn ends
at the VAD pause plus a fixed wait, so a call never hangs on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from orchestrator.config import CallConfig
from orchestrator.task_reaper import DroppedTasks
from orchestrator.turn_words import ends_incomplete

logger = logging.getLogger(__name__)

ScoreFn = Callable[[bytes], Awaitable[float | None]]


@dataclass(slots=True, kw_only=True, frozen=True)
class EotDecision:
    """Why a turn was taken as complete (stored with the reply's metrics)."""

    reason: str  # model | transcript | max_silence | silence_timer | no_model | dtmf
    score: float | None = None


class EndOfTurn:
    # Model unavailable or too busy to answer: wait this much silence in all (the old
    # fixed timer's default), not the whole cap.
    FALLBACK_SILENCE_S = 0.7
    # The model is unsure (a quarter of the threshold or more) but the transcript of the
    # pause ends like a finished sentence (not "…and", "…for", "um"): answer after this
    # much silence, not the cap.
    WORDS_COMPLETE_SILENCE_S = 1.0

    def __init__(
        self,
        config: CallConfig,
        *,
        score: ScoreFn | None,
        clock: Callable[[], float],
        wake: Callable[[], None],
    ) -> None:
        self.smart = config.turn_detection == "smart" and score is not None
        self._score_fn = score
        self._clock = clock
        self._wake = wake
        self._threshold = config.turn_threshold
        self._vad_stop_s = config.vad_stop_ms / 1000.0
        self._max_s = max(config.max_turn_silence_ms / 1000.0, self._vad_stop_s)
        self._task: asyncio.Task[None] | None = None
        self._dropped = DroppedTasks()
        self._speech_end_at: float | None = None  # None: nothing waiting for a decision
        self._scored = False
        self._score: float | None = None
        self._words_complete = False
        self._language = config.language
        self.inferences = 0

    @property
    def waiting(self) -> bool:
        """A paused turn is waiting for its decision."""
        return self._speech_end_at is not None

    def paused(self, audio: bytes, *, speech_end_at: float) -> EotDecision | None:
        """The caller paused after ``audio`` (the whole turn so far). A decision now, or
        None: ask ``poll`` when woken or at ``deadline``."""
        if not self.smart:
            return EotDecision(reason="silence_timer")
        self.resumed()
        self._speech_end_at = speech_end_at
        self._task = asyncio.create_task(self._run(audio), name="end-of-turn")
        return None

    def resumed(self) -> None:
        """Speech again (or the turn was taken otherwise): drop any pending decision."""
        self._speech_end_at = None
        self._scored = False
        self._score = None
        self._words_complete = False
        self._drop_task()

    def _drop_task(self) -> None:
        # (The model job itself finishes in its thread, unseen.)
        task, self._task = self._task, None
        self._dropped.drop(task)

    def heard(self, text: str) -> None:
        """The transcript of the paused turn: finished-looking words shorten the wait."""
        if self._speech_end_at is not None and text.strip():
            self._words_complete = not ends_incomplete(text, self._language)

    def deadline(self) -> float | None:
        """When ``poll`` must be called next (the lowering bar, or the cap)."""
        if self._speech_end_at is None:
            return None
        if not self._scored:
            wait = self._max_s
        elif self._score is None:
            wait = self.FALLBACK_SILENCE_S
        else:
            # The time at which the lowering bar meets the score.
            wait = self._silence_for(self._score)
        if self._words_shorten():
            wait = min(wait, self.WORDS_COMPLETE_SILENCE_S)
        return self._speech_end_at + wait

    def poll(self) -> EotDecision | None:
        """The decision, once there is one (then the turn is no longer waiting)."""
        if self._speech_end_at is None:
            return None
        silence = self._clock() - self._speech_end_at
        decision: EotDecision | None = None
        if silence >= self._max_s:
            decision = EotDecision(reason="max_silence", score=self._score)
        elif self._scored and self._score is None:
            if silence >= self.FALLBACK_SILENCE_S:
                decision = EotDecision(reason="no_model")
        elif self._scored and self._score is not None:
            if silence >= self._silence_for(self._score) - 1e-3:
                decision = EotDecision(reason="model", score=self._score)
            elif self._words_shorten() and silence >= self.WORDS_COMPLETE_SILENCE_S - 1e-3:
                decision = EotDecision(reason="transcript", score=self._score)
        if decision is not None:
            self._speech_end_at = None
            self._drop_task()
        return decision

    def _words_shorten(self) -> bool:
        """Finished-looking words count when the model is unsure, not when it is sure
        the caller is mid-sentence (< a quarter of the threshold): STT often mishears a
        trailing "and" as "end" or "in"."""
        return (
            self._words_complete
            and self._score is not None
            and self._score >= self._threshold / 4
        )

    def _silence_for(self, score: float) -> float:
        """Silence after which ``score`` clears the bar (the pause itself if it already does).

        The bar lowers linearly from the threshold at the pause to half of it at the cap:
        a turn the model is unsure of (0.3-0.5) waits a little longer, one it calls
        clearly unfinished (< threshold / 2) waits for the cap."""
        if score >= self._threshold:
            return 0.0
        floor = self._threshold / 2
        if score < floor:
            return self._max_s
        span = self._max_s - self._vad_stop_s
        return self._vad_stop_s + span * (self._threshold - score) / (self._threshold - floor)

    async def _run(self, audio: bytes) -> None:
        assert self._score_fn is not None
        try:
            score = await self._score_fn(audio)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("end-of-turn model failed; using the silence fallback")
            score = None
        if self._task is not asyncio.current_task():
            return  # a pause already decided or abandoned: its score is stale
        if score is not None:
            self.inferences += 1
        self._scored, self._score = True, score
        self._wake()

    async def close(self) -> None:
        self._drop_task()
        await self._dropped.close()
