"""What a reply says: the LLM's sentences as they stream, the tool rounds it asks for and,
with a flow, the fixed lines of the nodes it moves through.

    messages ─► LLM round ─► SentenceSplitter ─► sentences (to TTS, reply.py)
                   │ tool calls
                   └─► ToolRunner (fillers said meanwhile) ─► results ─► the next round

The LLM may speak and call tools in the same round; the calls run concurrently (while its
words play), each becomes a ``tool`` turn, and the LLM is asked again with the results, at
most ``MAX_TOOL_ROUNDS`` times (``FLOW_TOOL_ROUNDS`` with a flow, where a transition is a
round too); the last round offers no tools, so the caller always hears words. Built-in
end_call/transfer_call end the rounds: the session acts once the reply has played. The
local model in a flow is guided (flows/guide.py) by :meth:`ReplyWords._offer`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from orchestrator.config import CallConfig
from orchestrator.engine_steps import EngineFailed, EngineSteps, aclose_stream, note_engine
from orchestrator.engines import EngineError, Engines, supports_tools
from orchestrator.flows.toolbox import FlowToolBox, follows_flows
from orchestrator.sentences import SentenceSplitter, sentences_of
from orchestrator.tools import ToolCall, ToolResult, tool_exchange
from orchestrator.tools.builtin import AfterReply, HangUp
from orchestrator.tools.runner import ToolRunner
from orchestrator.tools.toolbox import ToolBox

if TYPE_CHECKING:
    from orchestrator.reply import Utterance

logger = logging.getLogger(__name__)


class ReplyWords:
    MAX_TOOL_ROUNDS = 3  # LLM requests answered with tool calls, per reply
    # With a flow a transition is a round too (move, then answer in the new node): a reply
    # may take one, use the node's tool and take the next.
    FLOW_TOOL_ROUNDS = 5

    def __init__(
        self,
        config: CallConfig,
        *,
        engines: Engines,
        tools: ToolBox,
        flow: FlowToolBox | None,
        tool_runner: ToolRunner,
        steps: EngineSteps,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._engines = engines
        self._tools = tools
        self._flow = flow  # the same box when it runs a flow (orchestrator/flows/)
        self._tool_runner = tool_runner
        self._steps = steps
        self._clock = clock
        self._guided_calls = 0  # ids of the calls the flow guide makes (``guide-<n>``)

    async def sentences(self, utt: Utterance, messages: list[dict[str, Any]]) -> AsyncIterator[str]:
        """The reply's sentences as the LLM streams them, running the tools it calls."""
        llm = self._engines.llm
        # The local model calls tools by grammar only in a flow (follows_flows).
        can_call = bool(self._tools) and (
            follows_flows(llm) if self._flow is not None else supports_tools(llm)
        )
        rounds = self.MAX_TOOL_ROUNDS if self._flow is None else self.FLOW_TOOL_ROUNDS
        if self._flow is not None:
            # A turn-limit fallback (respond): the lines of the nodes it left and entered,
            # and the end of the reply when it entered a hang-up or transfer node.
            lines = self._flow.take_lines()
            utt.flow_lines += lines
            async with aclosing(self._lines_or_closing(utt, lines)) as said:
                async for sentence in said:
                    yield sentence
            waits = bool(lines) and not self._flow.state.current.respond_immediately
            if utt.after is not None or waits:  # (waits: its lines are the whole reply)
                return
        for round_ in range(rounds + 1):
            calls: list[ToolCall] = []
            text: list[str] = []
            spoke = False
            # The last round offers no tools: the LLM must answer in words. (Asked each
            # round: with a flow, the node and so its tools may have changed.)
            asked, offered, choice = (
                self._offer(messages) if can_call and round_ < rounds else (messages, [], "")
            )
            moves = self._flow.state.moves if self._flow is not None else 0
            if isinstance(choice, ToolCall):
                calls.append(choice)  # the flow guide's due call: no model round for it
            else:
                # aclosing: a barge-in closes the inner generators (the LLM stream, the
                # tools) at once, not whenever the garbage collector gets to them.
                round_items = self._round(utt, asked, offered, calls, text, tool_choice=choice)
                async with aclosing(round_items) as items:
                    async for item in items:
                        spoke = True
                        yield item
            if not calls:
                return
            results: list[ToolResult] = []
            async with aclosing(self._tool_runner.run(utt, calls, results)) as fillers:
                async for filler in fillers:
                    yield filler
            messages = [*messages, *tool_exchange("".join(text), calls, results)]
            if self._flow is not None:
                lines = self._flow.take_lines()
                utt.flow_lines += lines
                spoke = spoke or bool(lines)
                for line in lines:
                    async for sentence in sentences_of(line):
                        yield sentence
                if self._flow.state.moves != moves:  # a transition: ask in the new node
                    if lines and not self._flow.state.current.respond_immediately:
                        return  # its entering lines are the reply; the caller answers them
                    messages = self._flow.messages(round_text="".join(text))
            if utt.after is not None:
                if not spoke:  # the round only called it: say the profile's line
                    async for sentence in sentences_of(self._closing_line(utt.after)):
                        yield sentence
                return

    def _offer(
        self, messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | ToolCall]:
        """The round's messages, tools and ``tool_choice`` ("" = the engine's default), or
        instead of a choice the call to make without asking the model. The local model in
        a flow is guided (flows/guide.py): fewer functions, values pinned, calls made for
        it when they are due, and a note of what is still to ask on its system prompt;
        every other engine gets the box's tools and the messages as they are."""
        llm = self._engines.llm
        if self._flow is None or supports_tools(llm) or not follows_flows(llm):
            return messages, self._tools.schemas(), ""
        guided = self._flow.guided(messages)
        if (due := guided.due) is not None:
            name, arguments = due
            self._guided_calls += 1
            call = ToolCall(id=f"guide-{self._guided_calls}", name=name,
                            arguments=json.dumps(arguments, ensure_ascii=False))  # fmt: skip
            return messages, guided.schemas, call
        if guided.note and messages and messages[0].get("role") == "system":
            system = {**messages[0], "content": f"{messages[0]['content']}\n\n{guided.note}"}
            messages = [system, *messages[1:]]
        return messages, guided.schemas, "required" if guided.required and guided.schemas else ""

    def _closing_line(self, after: AfterReply) -> str:
        """The profile's line for a hang-up or transfer the LLM asked for without words."""
        if isinstance(after, HangUp):
            return self._config.goodbye_message
        return self._config.transfer_message

    async def _lines_or_closing(self, utt: Utterance, lines: list[str]) -> AsyncIterator[str]:
        """Fixed lines; none before a hang-up or transfer: the profile's closing line."""
        if not lines and utt.after is not None:
            lines = [self._closing_line(utt.after)]
        for line in lines:
            async for sentence in sentences_of(line):
                yield sentence

    async def _round(
        self,
        utt: Utterance,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        calls: list[ToolCall],
        text: list[str],
        *,
        tool_choice: str = "",
    ) -> AsyncIterator[str]:
        """One LLM request. A model that botches its tool call (Groq answers 400
        ``tool_use_failed``) gets the round again without tools: the caller hears an
        answer, and a generation fault never counts as a provider failure."""
        yielded = False
        first = self._llm_round(utt, messages, tools, calls, text, tool_choice=tool_choice)
        try:
            async with aclosing(first) as items:
                async for item in items:
                    yielded = True
                    yield item
            return
        except EngineFailed as exc:
            cause = exc.__cause__
            botched = isinstance(cause, EngineError) and cause.code == "tool_use_failed"
            if not tools or yielded or not botched:
                raise
            logger.warning("call %s: the LLM's tool call failed (%s); asking again without tools",
                           self._config.call_id, cause,
                           extra={"call_id": self._config.call_id})  # fmt: skip
        calls.clear()
        text.clear()
        async with aclosing(self._llm_round(utt, messages, [], calls, text)) as items:
            async for item in items:
                yield item

    async def _llm_round(
        self,
        utt: Utterance,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        calls: list[ToolCall],
        text: list[str],
        *,
        tool_choice: str = "",
    ) -> AsyncIterator[str]:
        """One LLM request: yields sentences, collects tool calls and the raw text."""
        llm = self._engines.llm
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        if tools and tool_choice:
            extra["tool_choice"] = tool_choice  # (only a guided grammar engine is given one)
        stream = llm.stream(
            messages,
            temperature=self._config.temperature,
            max_tokens=self._config.max_tokens,
            **extra,
        )
        splitter = SentenceSplitter()
        t = self._clock()
        utt.phase = "llm"
        try:
            iterator = aiter(stream)
            while True:
                try:
                    # The backstop covers the first token and any later stall.
                    item = await self._steps.run("llm", anext(iterator))
                except StopAsyncIteration:
                    break
                if utt.metrics.llm_ttft_ms is None and item:
                    utt.metrics.llm_ttft_ms = round((self._clock() - t) * 1000.0, 1)
                    note_engine(utt.metrics, "llm", llm)
                if isinstance(item, ToolCall):
                    calls.append(item)
                    continue
                text.append(item or "")
                for sentence in splitter.push(item or ""):
                    self._note_first_sentence(utt, t)
                    yield sentence
            if (tail := splitter.flush()) is not None:
                self._note_first_sentence(utt, t)
                yield tail
        finally:
            await aclose_stream(stream)

    def _note_first_sentence(self, utt: Utterance, request_at: float) -> None:
        """The review page's latency waterfall: how long TTS waited for words to say."""
        if utt.metrics.llm_first_sentence_ms is None:
            utt.metrics.llm_first_sentence_ms = round((self._clock() - request_at) * 1000.0, 1)
