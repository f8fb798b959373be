"""Running one round of the tool calls an LLM made, while the reply goes on speaking.

The calls run concurrently. While they run, the caller is never left in silence: the
profile's filler line(s) are spoken (reply.py plays what this yields). Each call becomes a
``tool`` turn (and a ``tool`` event), in the order the LLM made them, also when the caller
cuts the round short (then ``cancelled``: it may or may not have been carried out), and the
round is remembered in the conversation for later replies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from orchestrator.config import CallConfig
from orchestrator.playout import PacedPlayout
from orchestrator.sentences import sentences_of
from orchestrator.tools import ToolCall, ToolResult, ToolStatus, tool_exchange
from orchestrator.tools.toolbox import ToolBox

if TYPE_CHECKING:
    from orchestrator.reply import Utterance
    from orchestrator.transcript import Transcript

logger = logging.getLogger(__name__)


class ToolRunner:
    # Slow tools: a filler line when the line has been quiet this long (the first one
    # after tool_filler_after_ms), at most MAX_FILLERS per tool round.
    FILLER_GAP_S = 0.8
    FILLER_POLL_S = 0.1
    MAX_FILLERS = 3

    def __init__(
        self,
        config: CallConfig,
        *,
        tools: ToolBox,
        playout: PacedPlayout,
        transcript: Transcript,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
        commit_user: Callable[[Utterance], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._tools = tools
        self._playout = playout
        self._transcript = transcript
        self._emit = emit
        self._commit_user = commit_user
        self._clock = clock

    async def run(
        self, utt: Utterance, calls: list[ToolCall], results: list[ToolResult]
    ) -> AsyncIterator[str]:
        """Run ``calls`` concurrently, filling ``results`` in order; yields the filler
        line when they take longer than ``tool_filler_after_ms`` (never dead air)."""
        # Acting on the caller's words: their turn is now fixed, whatever they say next.
        await self._commit_user(utt)
        utt.phase = "tool"
        started = self._clock()
        tasks = [asyncio.create_task(self._tools.run(call), name=f"tool-{call.name}")
                 for call in calls]  # fmt: skip
        try:
            async with aclosing(self._fillers(utt, tasks)) as fillers:
                async for line in fillers:
                    yield line
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for call, task in zip(calls, tasks, strict=True):
                if task.cancelled():
                    result, after = ToolResult(
                        status=ToolStatus.CANCELLED,
                        content="Cancelled before it answered (the caller spoke or the call "
                        "ended): it may or may not have been carried out.",
                    ), None
                elif (exc := task.exception()) is not None:
                    logger.error("call %s: tool %s crashed: %r", self._config.call_id, call.name,
                                 exc, extra={"call_id": self._config.call_id})  # fmt: skip
                    result, after = ToolResult(
                        status=ToolStatus.ERROR, content=f"The tool failed: {exc}"
                    ), None
                else:
                    result, after = task.result()
                if result.status is ToolStatus.CANCELLED:
                    result.latency_ms = _ms(self._clock() - started)
                results.append(result)
                if after is not None and utt.after is None:
                    utt.after = after
                await self._record_tool(call, result, started_at=started)
            # Remembered even when cut short: a request that may have gone through (a
            # booking) must not be made again blindly. The history keeps the calls
            # without the round's words: the reply's text is recorded once it has played.
            self._transcript.remember(tool_exchange("", calls, results))
            utt.progress_at = self._clock()
            utt.phase = "llm"

    async def _fillers(self, utt: Utterance, tasks: list[asyncio.Task[Any]]) -> AsyncIterator[str]:
        """While ``tasks`` run: the first filler line after ``tool_filler_after_ms``, then
        the next whenever the line has been quiet for ``FILLER_GAP_S`` (lines are the
        profile's ``|``-separated filler; the last repeats, at most ``MAX_FILLERS``)."""
        lines = [line.strip() for line in self._config.tool_filler.split("|") if line.strip()]
        said = 0
        next_at = self._clock() + self._config.tool_filler_after_ms / 1000.0
        while True:
            _, pending = await asyncio.wait(tasks, timeout=self.FILLER_POLL_S)
            if not pending:
                return
            now = self._clock()
            if not lines or said >= self.MAX_FILLERS or now < next_at:
                continue
            if self._playout.plays_until > now:  # a line is still playing: wait for quiet
                next_at = self._playout.plays_until + self.FILLER_GAP_S
                continue
            utt.filler_said = True
            async for sentence in sentences_of(lines[min(said, len(lines) - 1)]):
                yield sentence
            said += 1
            # Its audio is being sent now; the next line waits for it to end (above).
            next_at = max(self._clock(), self._playout.plays_until) + self.FILLER_GAP_S
            utt.progress_at = self._clock()

    async def _record_tool(self, call: ToolCall, result: ToolResult, *, started_at: float) -> None:
        turn = self._transcript.tool(call, result, started_at=started_at, ended_at=self._clock())
        await self._emit({"type": "tool", **turn.as_dict()})


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)
