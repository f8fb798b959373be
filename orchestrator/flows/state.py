"""Where one call stands in its flow: the current node, the path so far, the values.

Plain data with no I/O, so the rules (turn limits, what entering a node keeps of the
conversation) are tested without a call. :mod:`orchestrator.flows.toolbox` drives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.flows.spec import ContextStrategy, Flow, Node

SUMMARY_TURNS = 8  # "summary" context: the last this many caller/agent lines
SUMMARY_LINE_CHARS = 200


@dataclass(slots=True, kw_only=True)
class Step:
    """One node on the call's path: when it was entered, how, and what was collected."""

    node: str
    entered_at: datetime
    via: str = ""  # the transition (or "fallback") that led here; "" for the start node
    values: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "entered_at": self.entered_at.isoformat(), "via": self.via,
                "values": self.values}  # fmt: skip


@dataclass(slots=True, kw_only=True)
class FlowState:
    flow: Flow
    node: str
    path: list[Step]
    values: dict[str, Any] = field(default_factory=dict)
    turns_in_node: int = 0
    # Where the LLM's view of the conversation starts (an index into the transcript's
    # history) and the note that stands for what came before: set on entering a node
    # whose context is "summary" or "values"; "keep" leaves both as they were.
    context_from: int = 0
    context_note: str = ""
    moves: int = 0  # node changes so far: the reply loop asks "did this round move?"

    @classmethod
    def begin(cls, flow: Flow, *, at: datetime) -> FlowState:
        return cls(flow=flow, node=flow.start, path=[Step(node=flow.start, entered_at=at)])

    @property
    def current(self) -> Node:
        return self.flow.nodes[self.node]

    def count_turn(self) -> bool:
        """A caller turn is being answered in this node; True when that is one more than
        its ``max_turns`` (the fallback must be taken instead of asking the LLM)."""
        self.turns_in_node += 1
        limit = self.current.max_turns
        return limit is not None and self.turns_in_node > limit

    def move(
        self,
        target: str,
        *,
        via: str,
        values: dict[str, Any],
        at: datetime,
        history: list[dict[str, Any]],
    ) -> Node:
        """Enter ``target`` with the ``values`` the transition collected; ``history`` is the
        conversation so far (what a "summary" context digests)."""
        self.values.update(values)
        self.node = target
        self.turns_in_node = 0
        self.moves += 1
        self.path.append(Step(node=target, entered_at=at, via=via, values=dict(values)))
        node = self.current
        if node.context is ContextStrategy.VALUES:
            self.context_from, self.context_note = len(history), ""
        elif node.context is ContextStrategy.SUMMARY:
            self.context_from = len(history)
            self.context_note = digest(history)
        return node

    def prompt(self, role_prompt: str) -> str:
        """The system prompt in this node: the profile's role, the node's task, what the
        call has collected, and the digest of earlier turns when the context was reset."""
        parts = [role_prompt.strip()]
        if task := self.current.task.strip():
            parts.append(f"Current step ({self.node}): {task}")
        if self.values:
            parts.append(
                "Collected so far: " + json.dumps(self.values, ensure_ascii=False, sort_keys=True)
            )
        if self.context_note:
            parts.append("Earlier in this call:\n" + self.context_note)
        return "\n\n".join(p for p in parts if p)

    def summary(self) -> dict[str, Any]:
        """What the call record keeps (``metrics["flow"]``)."""
        return {"node": self.node, "path": [s.as_dict() for s in self.path],
                "values": dict(self.values)}  # fmt: skip


def digest(history: list[dict[str, Any]]) -> str:
    """A short plain-text account of the caller's and agent's last lines. Built without a
    second LLM request (no added latency inside a reply); tool messages are left out, their
    outcome is in the collected values."""
    lines = []
    for message in history:
        content = message.get("content")
        if message.get("role") in ("user", "assistant") and isinstance(content, str) and content:
            who = "Caller" if message["role"] == "user" else "Agent"
            lines.append(f"{who}: {content[:SUMMARY_LINE_CHARS]}")
    return "\n".join(lines[-SUMMARY_TURNS:])
