"""The conversation of one call: what the LLM sees and what the recorder stores.

Every turn gets the next sequence number here, in the order spoken, and is queued to
the recorder at once (orchestrator/recorder_queue.py writes it, retrying through a
database blip). The LLM history keeps only what the caller actually heard.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from orchestrator.contracts import (
    UNTRANSCRIBED,
    CallRecorder,
    ToolTurn,
    TurnMetrics,
    TurnRecord,
)
from orchestrator.recorder_queue import RecorderQueue
from orchestrator.stats import CallStats
from orchestrator.tools import ToolCall, ToolResult


class Transcript:
    def __init__(
        self,
        *,
        recorder: CallRecorder,
        queue: RecorderQueue,
        stats: CallStats,
        wall: Callable[[float], datetime],  # session clock -> wall-clock time
    ) -> None:
        self._recorder = recorder
        self._queue = queue
        self._stats = stats
        self._wall = wall
        self._history: list[dict[str, Any]] = []
        self._sequence = 0

    @property
    def history(self) -> list[dict[str, Any]]:
        """The conversation as sent to the LLM (system prompt excluded); a copy."""
        return [dict(m) for m in self._history]

    def messages(self, system_prompt: str, *, pending_user: str = "") -> list[dict[str, Any]]:
        """What the LLM is sent; ``pending_user``: the caller's turn being answered, not
        recorded until the caller hears the reply (reply.py)."""
        history = self.history
        if pending_user:
            if history and history[-1]["role"] == "user":
                history[-1]["content"] += " " + pending_user
            else:
                history.append({"role": "user", "content": pending_user})
        return [{"role": "system", "content": system_prompt}, *history]

    def user(self, text: str, *, started_at: float, ended_at: float) -> int:
        """A transcribed caller turn; returns its sequence number."""
        self._stats.user_turns += 1
        sequence = self._record(
            TurnRecord(
                role="user", text=text, started_at=self._wall(started_at),
                ended_at=self._wall(ended_at),
            )
        )  # fmt: skip
        if self._history and self._history[-1]["role"] == "user":
            # A turn the agent did not answer (it failed, or was cut before speaking):
            # keep messages alternating.
            self._history[-1]["content"] += " " + text
        else:
            self._history.append({"role": "user", "content": text})
        return sequence

    def untranscribed(self, *, started_at: float, ended_at: float) -> int:
        """The caller spoke and STT failed: a visible placeholder, never sent to the LLM."""
        self._stats.user_turns += 1
        return self._record(
            TurnRecord(
                role="user", text=UNTRANSCRIBED, started_at=self._wall(started_at),
                ended_at=self._wall(ended_at),
            )
        )  # fmt: skip

    def agent(
        self,
        text: str,
        *,
        started_at: float,
        ended_at: float,
        interrupted: bool,
        metrics: TurnMetrics,
        reply: bool,
    ) -> None:
        """What the agent said (only the part the caller heard when interrupted)."""
        self._stats.assistant_turns += 1
        if reply:
            self._stats.reply_metrics.append(metrics)
        self._record(
            TurnRecord(
                role="assistant",
                text=text,
                started_at=self._wall(started_at),
                ended_at=self._wall(ended_at),
                interrupted=interrupted,
                metrics=metrics,
            )
        )
        if text:
            self._history.append({"role": "assistant", "content": text})

    def tool(
        self, call: ToolCall, result: ToolResult, *, started_at: float, ended_at: float
    ) -> ToolTurn:
        """A tool the LLM called and its result: a ``tool`` turn."""
        self._stats.tool_calls += 1
        if not result.ok:
            self._stats.tool_failures += 1
        try:
            arguments: dict[str, Any] | str = call.parsed_arguments()
        except ValueError:
            arguments = call.arguments
        tool = ToolTurn(
            name=call.name,
            arguments=arguments,
            result=result.content,
            status=str(result.status),
            latency_ms=result.latency_ms,
        )
        shown = (
            json.dumps(arguments, ensure_ascii=False) if isinstance(arguments, dict) else arguments
        )
        self._record(
            TurnRecord(
                role="tool",
                text=f"{call.name}({shown}) → {result.status}",
                started_at=self._wall(started_at),
                ended_at=self._wall(ended_at),
                tool=tool,
            )
        )
        return tool

    def remember(self, messages: list[dict[str, Any]]) -> None:
        """Tool-call and tool-result messages: later replies know what was done."""
        self._history.extend(dict(m) for m in messages)

    def unanswered(self, sequence: int, reason: str) -> None:
        self._stats.unanswered += 1
        self._queue.put(
            "turn_unanswered",
            lambda: self._recorder.turn_unanswered(sequence=sequence, reason=reason),
        )

    def _record(self, turn: TurnRecord) -> int:
        # Numbered before the write: a retried write keeps its number, a lost one leaves
        # a visible gap.
        self._sequence += 1
        turn.sequence = self._sequence
        self._queue.put(
            "turn_recorded",
            lambda: self._recorder.turn_recorded(turn),
            describe=f"turn {turn.sequence} {turn.role}: {turn.text!r}",
        )
        return turn.sequence
