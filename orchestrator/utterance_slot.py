"""The agent's one utterance in progress: started as a task, stopped within a bound.

The session's control loop decides when an utterance starts and what its end means (a
recorded turn, a hang-up, an engine failure); this slot owns the task itself: it numbers
utterances, starts the reply pipeline's work, tells the loop when the task finishes, and
stops it so that nothing can hold the call: a task stuck in something that ignores
cancellation is abandoned after ``CANCEL_WAIT_S`` (task_reaper.py) and given one last
bounded wait by ``drain`` at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.reply import ReplyPipeline, Utterance
from orchestrator.task_reaper import TaskReaper
from orchestrator.turn_taking import UserTurn

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class Stopped:
    """How the utterance that was in progress ended."""

    utt: Utterance
    failed: BaseException | None  # the engine failure that ended it
    cut: bool  # cancelled, failed or abandoned: it did not finish on its own


class UtteranceSlot:
    CANCEL_WAIT_S = 2.0  # a cancelled utterance that does not finish by then is abandoned

    def __init__(
        self,
        call_id: str,
        pipeline: ReplyPipeline,
        *,
        finished: Callable[[asyncio.Task[None]], None],
        clock: Callable[[], float],
    ) -> None:
        """``finished`` is told of every task that ends (the control loop's queue); it
        is the loop's cue to ``stop`` the utterance if that task is still the current."""
        self._call_id = call_id
        self._pipeline = pipeline
        self._finished = finished
        self._clock = clock
        self._reaper = TaskReaper()
        self._task: asyncio.Task[None] | None = None
        self._utt: Utterance | None = None
        self._seq = 0

    @property
    def current(self) -> Utterance | None:
        return self._utt

    def owns(self, task: asyncio.Task[None]) -> bool:
        return task is self._task

    def start(self, kind: str, *, turn: UserTurn | None = None, text: str = "") -> None:
        """A reply to ``turn``, or ``text`` said as it is (greeting, reprompt, notice)."""
        self._seq += 1
        utt = Utterance(n=self._seq, kind=kind, interruptible=True, turn=turn,
                        progress_at=self._clock())  # fmt: skip
        pipeline = self._pipeline
        work = pipeline.respond(utt, turn) if turn is not None else pipeline.say(utt, text)
        task = asyncio.create_task(work, name=f"{kind}-{self._call_id}-{utt.n}")
        task.add_done_callback(self._finished)
        self._utt, self._task = utt, task  # the slot keeps the task

    async def stop(self) -> Stopped | None:
        """Cancel the utterance if it still runs and wait for it, bounded."""
        task, utt = self._task, self._utt
        if task is None or utt is None:
            return None
        self._task = self._utt = None
        if not await self._reaper.stop(task, wait_s=self.CANCEL_WAIT_S):
            # Stuck in something that ignores cancellation: never let it hold the call.
            logger.error(
                "call %s: utterance %d did not stop within %.1fs; abandoned",
                self._call_id, utt.n, self.CANCEL_WAIT_S, extra={"call_id": self._call_id},
            )  # fmt: skip
            return Stopped(utt=utt, failed=None, cut=True)
        failed = None if task.cancelled() else task.exception()
        return Stopped(utt=utt, failed=failed, cut=task.cancelled() or failed is not None)

    async def say_final(self, kind: str, text: str) -> None:
        """The goodbye or apology as the call closes: not interruptible, bounded in time
        by the pipeline."""
        self._seq += 1
        await self._pipeline.say_final(Utterance(n=self._seq, kind=kind, interruptible=False), text)

    async def drain(self) -> None:
        """Abandoned utterances get one last bounded chance to exit."""
        await self._reaper.drain(wait_s=self.CANCEL_WAIT_S)
