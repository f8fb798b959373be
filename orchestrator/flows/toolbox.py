"""A call's tools when its profile has a flow: the current node's tools plus its transitions.

    LLM request in node N:  system = role prompt + N's task (+ collected values)
                            tools  = N's tools ∩ the profile's + N's transitions + globals
    transition call ─► arguments checked against its schema ─┬─ invalid: an error result,
                                                              │   the LLM asks and retries
                                                              └─ ok: values stored, leave /
                       enter actions (lines to say, hang-up, transfer), node changed; the
                       reply's next tool round asks the LLM again in the new node (reply.py)

It is a :class:`ToolBox`, so the tool runner, fillers, tool turns and cancellation work as
for any tool; the reply pipeline additionally asks it for the node's messages, the lines
to say and the turn-limit fallback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from orchestrator.config import CallConfig
from orchestrator.engines import Engines, supports_tools
from orchestrator.flows import demo_booking, guide
from orchestrator.flows.spec import Action, ActionKind, Flow, Node, Transition, fill_line
from orchestrator.flows.state import FlowState
from orchestrator.tools import ToolCall, ToolResult, ToolSpec, ToolStatus, schema_problems
from orchestrator.tools.builtin import AfterReply, HangUp, Transfer
from orchestrator.tools.toolbox import ToolBox
from orchestrator.transcript import Transcript

logger = logging.getLogger(__name__)

FALLBACK = "fallback"  # the tool turn's name when a node's turn limit moves the call on


def toolbox_for(
    config: CallConfig,
    engines: Engines,
    *,
    transcript: Transcript,
    emit: Callable[[dict[str, Any]], Awaitable[None]],
    clock: Callable[[], float],
    wall: Callable[[float], datetime],
) -> ToolBox:
    """The call's tools: the profile's, or with a flow those of the current node and its
    transitions (only for an LLM that calls tools: transitions are function calls)."""
    if config.flow is None:
        return ToolBox(config)
    if not follows_flows(engines.llm):
        logger.warning("call %s: the LLM cannot call tools; the flow is not followed",
                       config.call_id, extra={"call_id": config.call_id})  # fmt: skip
        return ToolBox(config)
    return FlowToolBox(config, config.flow, transcript=transcript, emit=emit, clock=clock,
                       wall=wall)  # fmt: skip


def follows_flows(llm: object) -> bool:
    """Whether ``llm`` can take a flow's transitions: it calls tools, or it is the local
    model answering by a JSON grammar (engines/local_tools.py), which it does *only* for a
    flow (reply.py), so a plain profile keeps its free-text path."""
    return supports_tools(llm) or bool(getattr(llm, "calls_tools_by_grammar", False))


def goodbye_hangs_up(config: CallConfig, tools: ToolBox, llm: object) -> bool:
    """Whether a goodbye in the agent's own words ends the call: only when hanging up is on
    and the LLM has no ``end_call`` to call (no tools; in a flow, the local model calls
    them by grammar and the flow ends the call)."""
    if not config.end_call_enabled or not tools:
        return config.end_call_enabled
    if isinstance(tools, FlowToolBox):
        return not follows_flows(llm)
    return not supports_tools(llm)


class FlowToolBox(ToolBox):
    def __init__(
        self,
        config: CallConfig,
        flow: Flow,
        *,
        transcript: Transcript,
        emit: Callable[[dict[str, Any]], Awaitable[None]],
        clock: Callable[[], float],
        wall: Callable[[float], datetime],
    ) -> None:
        super().__init__(config)
        self._transcript = transcript
        self._emit = emit
        self._clock = clock
        self._wall = wall
        # (The session's clock starts with the call; the toolbox is built just before.)
        self.state = FlowState.begin(flow, at=datetime.now(UTC))
        self._lines: list[str] = []  # enter/leave "say" actions not spoken yet

    # --- what the LLM is offered ---------------------------------------------------------

    def _offered(self) -> tuple[list[ToolSpec], tuple[Transition, ...]]:
        node = self.state.current
        tools = [spec for name in node.tools if (spec := self._node_tool(name)) is not None]
        return tools, self.state.flow.transitions_of(node.name)

    def _node_tool(self, name: str) -> ToolSpec | None:
        """The profile's tool, else the demo booking store for ``demo_booking``."""
        spec = self.spec(name)
        if spec is None and name == demo_booking.DEMO_BOOKING.name:
            return demo_booking.DEMO_BOOKING
        return spec

    def __bool__(self) -> bool:
        # What the node offers, not the profile's own tools: a flow on a profile with no
        # built-in or HTTP tool still has transitions, and the reply only lets the LLM call
        # tools when its box is truthy (reply.py).
        return bool(self.names)

    @property
    def names(self) -> list[str]:
        tools, transitions = self._offered()
        return [spec.name for spec in tools] + [t.name for t in transitions]

    def schemas(self) -> list[dict[str, Any]]:
        tools, transitions = self._offered()
        return [spec.schema() for spec in tools] + [
            ToolSpec(name=t.name, description=t.description, parameters=t.schema,
                     kind="transition").schema()
            for t in transitions
        ]  # fmt: skip

    def guided(self, messages: list[dict[str, Any]]) -> guide.Offer:
        """The node's functions for a model that answers by grammar, narrowed to what the
        caller's words support (flows/guide.py): the local model's way through a flow."""
        tools, transitions = self._offered()
        return guide.offer(
            tools,
            transitions,
            global_names={t.name for t in self.state.flow.global_transitions},
            collected=self.state.values,
            caller_spoke_in_node=self.state.turns_in_node > 0,
            messages=messages,
            language=self._config.language,
        )

    def messages(self, *, pending_user: str = "", round_text: str = "") -> list[dict[str, Any]]:
        """What the LLM is sent in the current node: its prompt, and the conversation from
        where the node's context strategy starts it. ``round_text``: the words of the tool
        round that just ran, put back on its tool-call message (the transcript keeps them
        only once they have played)."""
        prompt = self.state.prompt(self._config.system_prompt)
        system, *history = self._transcript.messages(prompt, pending_user=pending_user)
        history = history[self.state.context_from :]
        if round_text.strip():
            for message in reversed(history):
                if message["role"] == "assistant" and message.get("tool_calls"):
                    message["content"] = round_text
                    break
        return [system, *history]

    def take_lines(self) -> list[str]:
        """The "say" actions of the nodes just left and entered, once."""
        lines, self._lines = self._lines, []
        return lines

    def summary(self) -> dict[str, Any]:
        return self.state.summary()

    # --- running a call --------------------------------------------------------------------

    async def run(self, call: ToolCall) -> tuple[ToolResult, AfterReply | None]:
        transitions = {t.name: t for t in self.state.flow.transitions_of(self.state.node)}
        if (transition := transitions.get(call.name)) is not None:
            return self._transition(call, transition)
        if call.name not in self.state.current.tools:
            # Also a transition of another node: one round may call two, the first moved.
            result = ToolResult(
                status=ToolStatus.REFUSED,
                content=f"{call.name} is not available in the current step "
                f"({self.state.node}). Available: {', '.join(self.names) or 'none'}.",
            )
            return result, None
        if self.spec(call.name) is None and call.name == demo_booking.DEMO_BOOKING.name:
            try:
                arguments = call.parsed_arguments()
            except ValueError as exc:
                invalid = ToolResult(status=ToolStatus.ERROR, content=f"Invalid arguments: {exc}")
                return invalid, None
            return demo_booking.book(self._config.call_id, arguments), None
        return await super().run(call)

    def _transition(
        self, call: ToolCall, transition: Transition
    ) -> tuple[ToolResult, AfterReply | None]:
        try:
            values = call.parsed_arguments()
        except ValueError as exc:
            values, problems = {}, [str(exc)]
        else:
            problems = schema_problems(transition.schema, values)
        if problems:
            result = ToolResult(
                status=ToolStatus.ERROR,
                content=f"Invalid values for {transition.name}: {'; '.join(problems)}. "
                "Ask the caller for what is missing or fix the values, then call it again.",
            )
            return result, None
        after = self._enter(transition.target, via=transition.name, values=values)
        node = self.state.current
        content = {"moved_to": node.name, "collected": self.state.values}
        if not node.terminal:
            content["next"] = "Continue with the current step's instructions."
        result = ToolResult(status=ToolStatus.OK, content=json.dumps(content, ensure_ascii=False))
        return result, after

    async def begin_turn(
        self, commit_user: Callable[[], Awaitable[None]], *, unsaid: list[str] | None = None
    ) -> AfterReply | None:
        """A caller turn is being answered: over the node's turn limit, take its fallback
        before the LLM is asked (recorded as a ``fallback`` tool turn). ``unsaid``: the
        lines of a move whose reply the caller never heard (they went on speaking before
        its first word): said now, since the flow did move."""
        # Lines of a move whose reply the caller interrupted are not said a turn late.
        self._lines = list(unsaid or [])
        node = self.state.current
        if not self.state.count_turn():
            return None
        await commit_user()  # the caller's turn comes before the move in the transcript
        started = self._clock()
        after = self._enter(node.fallback, via=FALLBACK, values={})
        logger.info("call %s: node %s over %s turns, fallback to %s", self._config.call_id,
                    node.name, node.max_turns, node.fallback,
                    extra={"call_id": self._config.call_id})  # fmt: skip
        call = ToolCall(
            id=f"fallback-{self.state.moves}",
            name=FALLBACK,
            arguments=json.dumps({"from": node.name, "to": node.fallback,
                                  "max_turns": node.max_turns}),  # fmt: skip
        )
        result = ToolResult(status=ToolStatus.OK, content=f"Moved to {node.fallback}.")
        # A turn for the record only: the LLM is not told of a tool it was never offered;
        # the new node's prompt is what it goes on from.
        turn = self._transcript.tool(call, result, started_at=started, ended_at=self._clock())
        await self._emit({"type": "tool", **turn.as_dict()})
        return after

    def _enter(self, target: str, *, via: str, values: dict[str, Any]) -> AfterReply | None:
        left = self.state.current
        node: Node = self.state.move(
            target, via=via, values=values, at=self._wall(self._clock()),
            history=self._transcript.history,
        )  # fmt: skip
        logger.info("call %s: flow %s -> %s via %s", self._config.call_id, left.name, node.name,
                    via, extra={"call_id": self._config.call_id})  # fmt: skip
        after: AfterReply | None = None
        for action in (*left.on_leave, *node.on_enter):
            after = self._act(action) or after
        return after

    def _act(self, action: Action) -> AfterReply | None:
        if action.kind is ActionKind.SAY:
            self._lines.append(fill_line(action.text, self.state.values))
            return None
        if action.kind is ActionKind.END_CALL:
            return HangUp()
        for label, destination in self._config.transfer_targets:
            if action.text.casefold() == label.casefold():
                return Transfer(destination=destination, label=label)
        # Checked when the profile was saved; its destinations changed since.
        logger.warning("call %s: flow transfer to %r: not a transfer destination",
                       self._config.call_id, action.text,
                       extra={"call_id": self._config.call_id})  # fmt: skip
        return None
