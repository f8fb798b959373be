"""What a reply asked the call to do once it has played: hang up or transfer.

The built-in tools (builtin.py) only *ask*; this carries the request out after the caller
heard the reply, and also turns a goodbye in the words of an LLM that cannot call tools
into a hang-up. The session only applies the outcome to how the call ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.call_output import CallOutput
from orchestrator.config import CallConfig
from orchestrator.tools import ToolCall, ToolResult, ToolStatus, tool_exchange
from orchestrator.tools.builtin import TRANSFER_CALL, AfterReply, HangUp, Transfer
from orchestrator.turn_words import says_goodbye

if TYPE_CHECKING:
    from orchestrator.reply import Utterance
    from orchestrator.transcript import Transcript

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class Outcome:
    hang_up: bool = False
    transferred_to: str = ""  # the carrier took the call there
    notice: str = ""  # what to tell the caller (the transfer failed)


class ReplyActions:
    TRANSFER_TIMEOUT_S = 10.0  # the carrier's REST transfer request

    def __init__(
        self,
        config: CallConfig,
        *,
        out: CallOutput,
        transcript: Transcript,
        goodbye_hangs_up: bool,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._out = out
        self._transcript = transcript
        self._goodbye_hangs_up = goodbye_hangs_up
        self._clock = clock
        self._log_extra = {"call_id": config.call_id}

    async def carry_out(self, utt: Utterance) -> Outcome:
        """The action of the reply that just played, if any."""
        after: AfterReply | None = utt.after
        if after is None and utt.kind == "reply" and self._goodbye_hangs_up:
            if says_goodbye(utt.full_text(), self._config.language):
                logger.info("call %s: the agent said goodbye; hanging up", self._config.call_id,
                            extra=self._log_extra)  # fmt: skip
                after = HangUp()
        if isinstance(after, HangUp):
            return Outcome(hang_up=True)
        if isinstance(after, Transfer):
            return await self._transfer(after, n=utt.n)
        return Outcome()

    async def _transfer(self, after: Transfer, *, n: int) -> Outcome:
        started = self._clock()
        try:
            async with asyncio.timeout(self.TRANSFER_TIMEOUT_S):
                await self._out.transfer(after.destination)
        except Exception as exc:  # noqa: BLE001 - any failure: tell the caller, go on
            logger.warning("call %s: transfer to %s failed: %r", self._config.call_id,
                           after.destination, exc, extra=self._log_extra)  # fmt: skip
            await self._record_failure(after, exc, started=started, n=n)
            return Outcome(notice=self._config.transfer_failed_message)
        return Outcome(transferred_to=after.destination)

    async def _record_failure(
        self, after: Transfer, exc: BaseException, *, started: float, n: int
    ) -> None:
        """The transfer_call turn said "ok" (the LLM only asked): record what happened,
        for the transcript and for the LLM's next reply."""
        call = ToolCall(
            id=f"transfer-{n}",
            name=TRANSFER_CALL,
            arguments=json.dumps({"destination": after.label}),
        )
        result = ToolResult(
            status=ToolStatus.ERROR,
            content=f"The transfer to {after.label} failed at the carrier ({exc}); the caller "
            "is still on the line and was told so.",
            latency_ms=round((self._clock() - started) * 1000.0, 1),
        )
        turn = self._transcript.tool(call, result, started_at=started, ended_at=self._clock())
        self._transcript.remember(tool_exchange("", [call], [result]))
        await self._out.emit({"type": "tool", **turn.as_dict()})
