"""The reply pipeline of one agent utterance: STT -> LLM -> sentences -> TTS -> playout.

    user turn ─► STT ─► transcript ─► LLM deltas ─► SentenceSplitter ─┐
                              ▲           │ tool calls                │
                              └─ results ◄┴► ToolRunner (fillers) ────┤
    fixed text (greeting, reprompt, goodbye) ─────────────────────────┴► TTS ─► PacedPlayout

Tools: the LLM may speak and call tools in the same round; the calls run concurrently
(while its words play), each becomes a ``tool`` turn, and the LLM is asked again with
the results, at most ``MAX_TOOL_ROUNDS`` times. A tool slower than
``tool_filler_after_ms`` gets the profile's filler line spoken meanwhile. Built-in
end_call/transfer_call end the rounds: the session acts once the reply has played.

One sentence is synthesized while the previous one plays. Each engine step is bounded
by a backstop sized to the role's whole fallback chain: engines own the timeout of their
own requests, so a hanging primary fails by itself and its fallback gets the turn. The
session owns the lifecycle (start, barge-in, cancel, errors); this module only does the
work of one utterance and keeps what the caller heard on the :class:`Utterance`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orchestrator.audio import FRAME_MS, FrameSplitter, frame_bytes, pcm16_duration_ms
from orchestrator.config import CallConfig
from orchestrator.contracts import INPUT_SAMPLE_RATE, TurnMetrics
from orchestrator.engines import EngineError, Engines, supports_tools
from orchestrator.flows.toolbox import FlowToolBox, follows_flows
from orchestrator.playout import PacedPlayout, TransportFailed
from orchestrator.sentences import SentenceSplitter
from orchestrator.tools import ToolCall, ToolResult, tool_exchange
from orchestrator.tools.builtin import AfterReply, HangUp
from orchestrator.tools.runner import ToolRunner
from orchestrator.tools.toolbox import ToolBox
from orchestrator.transcript import Transcript
from orchestrator.turn_taking import UserTurn
from orchestrator.turn_words import ends_incomplete

logger = logging.getLogger(__name__)

T = TypeVar("T")

Emit = Callable[[dict[str, Any]], Awaitable[None]]


class EngineFailed(Exception):
    """An engine step failed (its own error, or the backstop timeout)."""

    def __init__(self, role: str, message: str, *, vendor: str, overloaded: bool) -> None:
        super().__init__(message)
        self.role = role
        self.vendor = vendor
        self.overloaded = overloaded  # our own overload (local model queue), not a vendor


@dataclass(slots=True, kw_only=True)
class Segment:
    """One sentence of an agent utterance: its text and audio as TTS produces it."""

    text: str
    chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    synth_ms: float = 0.0  # audio synthesized so far
    pause_ms: float = 0.0  # voice_pacing silence sent before it
    sent_ms: float = 0.0  # its audio sent to the transport


@dataclass(slots=True, kw_only=True)
class Utterance:
    n: int
    kind: str  # reply | greeting | reprompt | goodbye | apology
    interruptible: bool
    turn: UserTurn | None = None
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    # stt | held (words say the caller is not done: waiting for more) | llm | tool
    # (tools running; bounded by their own timeouts) | speaking
    phase: str = "llm"
    segments: list[Segment] = field(default_factory=list)  # those that started playing
    sent_ms: float = 0.0
    first_frame_at: float | None = None
    # The caller's words this reply answers: recorded when the caller starts hearing the
    # reply (or when it ends without audio), so a caller who goes on before that is
    # still one turn (the session joins the audio and transcribes it again).
    user_text: str = ""
    user_sequence: int | None = None  # the user turn this reply answers, once recorded
    # The watchdog's reference: when the utterance started, then each frame sent.
    progress_at: float = 0.0
    # What the session does once this reply has played (end_call, transfer_call).
    after: AfterReply | None = None
    # A flow's lines this reply took (of the nodes it left and entered): if the caller
    # goes on before hearing any of it, the next reply says them (the flow has moved).
    flow_lines: list[str] = field(default_factory=list)
    filler_said: bool = False

    def full_text(self) -> str:
        return " ".join(s.text for s in self.segments)

    def spoken_text(self, played_ms: float) -> str:
        """Text heard in the first ``played_ms`` of audio: whole sentences, then the
        played fraction of the current one, cut back to a word boundary."""
        parts: list[str] = []
        remaining = played_ms
        for seg in self.segments:
            remaining -= seg.pause_ms
            total = max(seg.synth_ms, 1.0)
            if remaining <= 0:
                break
            if remaining >= total:
                parts.append(seg.text)
                remaining -= total
                continue
            parts.append(_cut_at_word(seg.text, remaining / total))
            break
        return " ".join(p for p in parts if p)


class ReplyPipeline:
    BACKSTOP_GRACE_S = 1.0  # above a whole chain of engine timeouts
    MAX_TOOL_ROUNDS = 3  # LLM requests answered with tool calls, per reply
    # With a flow a transition is a round too (move, then answer in the new node): a reply
    # may take one, use the node's tool and take the next.
    FLOW_TOOL_ROUNDS = 5
    # Goodbye/apology: synthesis gets one step budget; playing takes ~80 ms a character.
    FINAL_WORDS_PLAY_S_PER_CHAR = 0.08
    FINAL_WORDS_GRACE_S = 5.0

    def __init__(
        self,
        config: CallConfig,
        *,
        engines: Engines,
        playout: PacedPlayout,
        out_rate: int,
        transcript: Transcript,
        emit: Emit,
        set_state: Callable[[str], Awaitable[None]],
        take_dtmf_note: Callable[[], str],
        clock: Callable[[], float],
        tools: ToolBox | None = None,
    ) -> None:
        self._config = config
        self._tools = tools if tools is not None else ToolBox(config)
        # A flow (orchestrator/flows/): the node decides the prompt, tools and history.
        self._flow = self._tools if isinstance(self._tools, FlowToolBox) else None
        self._tool_runner = ToolRunner(
            config,
            tools=self._tools,
            playout=playout,
            transcript=transcript,
            emit=emit,
            commit_user=self.commit_user,
            clock=clock,
        )
        self._engines = engines
        self._playout = playout
        self._out_rate = out_rate
        self._frame_bytes = frame_bytes(out_rate)
        self._transcript = transcript
        self._emit = emit
        self._set_state = set_state
        self._take_dtmf_note = take_dtmf_note
        self._clock = clock
        self._guided_calls = 0  # ids of the calls the flow guide makes (``guide-<n>``)
        self._last_reply: Utterance | None = None  # the flow reply answered before this one

    # --- budgets -------------------------------------------------------------------------

    def step_budget_s(self, role: str) -> float:
        """Backstop for one engine step: every engine of the role's chain may use its own
        timeout before the step is given up."""
        engine = getattr(self._engines, role)
        tries = len(getattr(engine, "engines", ())) or 1
        return self._config.engine_timeout_s * tries + self.BACKSTOP_GRACE_S

    def runs_locally(self, role: str) -> bool:
        """A local model serves ``role``: its timeouts mean our CPU is saturated."""
        return bool(getattr(getattr(self._engines, role), "runs_locally", False))

    # --- one utterance ---------------------------------------------------------------------

    async def respond(self, utt: Utterance, turn: UserTurn) -> None:
        """Answer one user turn: transcribe, record it, stream the reply."""
        await self._set_state("thinking")
        m = utt.metrics
        if turn.speech_end_at is not None and turn.detected_at is not None:
            m.endpointing_ms = m.eot_wait_ms = _ms(turn.detected_at - turn.speech_end_at)
        if turn.eot is not None:
            m.eot_reason = turn.eot.reason
            m.eot_score = None if turn.eot.score is None else round(turn.eot.score, 3)
        end = turn.speech_end_at if turn.speech_end_at is not None else self._clock()
        text = ""
        if turn.audio:
            utt.phase = "stt"
            try:
                text = await self._transcribe(utt, turn)
            except EngineFailed:
                # The caller spoke and we could not even transcribe it: keep a visible
                # placeholder turn (marked unanswered by the session), not no trace at all.
                utt.user_sequence = self._transcript.untranscribed(
                    started_at=turn.started_at, ended_at=end
                )
                raise
        if note := self._take_dtmf_note():
            text = f"{note} {text}".strip()
        if not text:
            logger.info("call %s: empty transcript, no turn", self._config.call_id,
                        extra={"call_id": self._config.call_id})  # fmt: skip
            return
        await self._emit({"type": "transcript", "role": "user", "text": text, "final": False})
        utt.user_text = text  # (stored if the call ends while we hold for more words)
        await self._hold_if_unfinished(utt, turn, text)
        utt.phase = "llm"
        if self._flow is None:
            messages = self._transcript.messages(self._config.system_prompt, pending_user=text)
        else:
            # Over the node's turn limit: its fallback is taken before the LLM is asked.
            unheard = self._unheard_flow_reply(utt)
            utt.after = await self._flow.begin_turn(
                lambda: self.commit_user(utt), unsaid=unheard.flow_lines if unheard else []
            )
            if unheard is not None and utt.after is None:
                utt.after = unheard.after  # (the node it entered hangs up or transfers)
            pending = "" if utt.user_sequence is not None else text  # (else: recorded)
            messages = self._flow.messages(pending_user=pending)
        await self.speak(utt, self._llm_sentences(utt, messages))

    def _unheard_flow_reply(self, utt: Utterance) -> Utterance | None:
        """The previous reply, if it moved the flow with lines and the caller went on
        before hearing any of it (nothing sent): its lines are still to be said."""
        previous, self._last_reply = self._last_reply, utt
        if previous is None or previous.sent_ms > 0 or not previous.flow_lines:
            return None
        return previous

    async def commit_user(self, utt: Utterance) -> None:
        """Record the caller's turn this reply answers (once)."""
        if not utt.user_text or utt.user_sequence is not None or utt.turn is None:
            return
        turn = utt.turn
        end = turn.speech_end_at if turn.speech_end_at is not None else turn.started_at
        utt.user_sequence = self._transcript.user(
            utt.user_text, started_at=turn.started_at, ended_at=end
        )
        await self._emit({"type": "transcript", "role": "user", "text": utt.user_text,
                          "final": True})  # fmt: skip

    async def _hold_if_unfinished(self, utt: Utterance, turn: UserTurn, text: str) -> None:
        """"…a table for": the words say the caller is not done, whatever the audio model
        said. Wait for the rest, up to the silence cap; if they go on, the session drops
        this reply and their words join the next turn."""
        decided_by_audio = turn.eot is not None and turn.eot.reason in ("model", "no_model")
        if not decided_by_audio or turn.speech_end_at is None:
            return
        if not ends_incomplete(text, self._config.language):
            return
        wait = turn.speech_end_at + self._config.max_turn_silence_ms / 1000.0 - self._clock()
        logger.info("call %s: %r sounds unfinished, waiting %.1fs for more", self._config.call_id,
                    text[-40:], max(wait, 0.0), extra={"call_id": self._config.call_id})  # fmt: skip
        utt.phase = "held"
        if wait > 0:
            await asyncio.sleep(wait)
        utt.metrics.eot_reason = "words"
        utt.metrics.eot_wait_ms = _ms(self._clock() - turn.speech_end_at)
        utt.progress_at = self._clock()

    async def say(self, utt: Utterance, text: str) -> None:
        """Speak fixed text (greeting, reprompt, goodbye, apology)."""
        await self.speak(utt, sentences_of(text))

    async def say_final(self, utt: Utterance, text: str) -> None:
        """Goodbye or apology: bounded in time; a TTS or transport failure just ends it."""
        limit = (
            self.step_budget_s("tts")
            + self.FINAL_WORDS_GRACE_S
            + self.FINAL_WORDS_PLAY_S_PER_CHAR * len(text)
        )
        try:
            async with asyncio.timeout(limit):
                await self.say(utt, text)
        except (EngineFailed, TimeoutError, TransportFailed) as exc:
            logger.warning("call %s: could not say %s: %s", self._config.call_id, utt.kind, exc,
                           extra={"call_id": self._config.call_id})  # fmt: skip
        if utt.segments:
            await self.record(utt, interrupted=False, played_ms=utt.sent_ms)

    async def speak(self, utt: Utterance, sentences: AsyncIterator[str]) -> None:
        """Synthesize sentences as they come and play them, N+1 synthesizing while N plays."""
        # Bounded look-ahead: TTS work wasted by a barge-in stays small.
        segments: asyncio.Queue[Segment | None] = asyncio.Queue(maxsize=2)

        async def synthesize_all() -> None:
            try:
                async for text in sentences:
                    seg = Segment(text=text)
                    await segments.put(seg)
                    await self._synthesize(utt, seg)
            finally:
                await _aclose(sentences)
            await segments.put(None)

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(synthesize_all())
                group.create_task(self._play(utt, segments))
        except BaseExceptionGroup as group_error:
            # Surface the first real failure (an engine or the transport), not the group.
            raise _first_leaf(group_error) from None

    async def record(self, utt: Utterance, *, interrupted: bool, played_ms: float) -> None:
        """Store and show what the agent said; an interrupted turn keeps what was heard."""
        text = utt.spoken_text(played_ms) if interrupted else utt.full_text()
        now = self._clock()
        self._transcript.agent(
            text,
            started_at=utt.first_frame_at or now,
            ended_at=now,
            interrupted=interrupted,
            metrics=utt.metrics,
            reply=utt.kind == "reply",
        )
        event: dict[str, Any] = {"type": "transcript", "role": "assistant", "text": text,
                                 "final": True}  # fmt: skip
        if interrupted:
            event["interrupted"] = True
        await self._emit(event)
        if utt.kind == "reply":
            await self._emit({"type": "metrics", **utt.metrics.as_dict()})

    # --- engines -----------------------------------------------------------------------------

    async def _transcribe(self, utt: Utterance, turn: UserTurn) -> str:
        """The turn's transcript: the one started at the caller's pause if there is one
        (transcriber.py); STT time is then counted from the decision, what the caller waits."""
        stt = self._engines.stt
        t = self._clock()
        work = turn.transcript or stt.transcribe(
            turn.audio, sample_rate=INPUT_SAMPLE_RATE, language=self._config.language
        )
        text = await self._step("stt", work)
        utt.metrics.stt_ms = round((self._clock() - t) * 1000.0, 1)
        _note_engine(utt.metrics, "stt", stt)
        return (text or "").strip()

    async def _llm_sentences(
        self, utt: Utterance, messages: list[dict[str, Any]]
    ) -> AsyncIterator[str]:
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
                    item = await self._step("llm", anext(iterator))
                except StopAsyncIteration:
                    break
                if utt.metrics.llm_ttft_ms is None and item:
                    utt.metrics.llm_ttft_ms = round((self._clock() - t) * 1000.0, 1)
                    _note_engine(utt.metrics, "llm", llm)
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
            await _aclose(stream)

    def _note_first_sentence(self, utt: Utterance, request_at: float) -> None:
        """The review page's latency waterfall: how long TTS waited for words to say."""
        if utt.metrics.llm_first_sentence_ms is None:
            utt.metrics.llm_first_sentence_ms = round((self._clock() - request_at) * 1000.0, 1)

    async def _synthesize(self, utt: Utterance, seg: Segment) -> None:
        tts = self._engines.tts
        stream = tts.synthesize(
            seg.text, sample_rate=self._out_rate, language=self._config.language
        )
        t = self._clock()
        try:
            iterator = aiter(stream)
            while True:
                try:
                    chunk = await self._step("tts", anext(iterator))
                except StopAsyncIteration:
                    break
                if not chunk:
                    continue
                if utt.metrics.tts_ttfb_ms is None:
                    utt.metrics.tts_ttfb_ms = round((self._clock() - t) * 1000.0, 1)
                    _note_engine(utt.metrics, "tts", tts)
                seg.synth_ms += pcm16_duration_ms(chunk, self._out_rate)
                seg.chunks.put_nowait(chunk)
        finally:
            await _aclose(stream)
        seg.chunks.put_nowait(None)

    async def _step(self, role: str, awaitable: Awaitable[T]) -> T:
        """One engine step (STT result, next LLM delta, next TTS chunk)."""
        budget = self.step_budget_s(role)
        engine = getattr(self._engines, role)
        try:
            async with asyncio.timeout(budget):
                return await awaitable
        except TimeoutError as exc:
            raise EngineFailed(
                role,
                f"{role} timed out after {budget:g}s",
                vendor=_engine_name(engine),
                overloaded=self.runs_locally(role),
            ) from exc
        except EngineError as exc:
            raise EngineFailed(
                role, f"{role}: {exc}", vendor=exc.vendor, overloaded=exc.overloaded
            ) from exc

    # --- playout -------------------------------------------------------------------------------

    async def _play(self, utt: Utterance, segments: asyncio.Queue[Segment | None]) -> None:
        framer = FrameSplitter(self._frame_bytes)
        silence = b"\x00" * self._frame_bytes
        pause_frames = self._config.voice_pacing_ms // FRAME_MS
        while (seg := await segments.get()) is not None:
            started = False
            while (chunk := await seg.chunks.get()) is not None:
                for frame in framer.push(chunk):
                    if not started:
                        started = True
                        self._playout.new_stretch()  # the wait for this sentence is a pause
                        if utt.segments:
                            for _ in range(pause_frames):
                                await self._send_frame(utt, None, silence)
                                seg.pause_ms += FRAME_MS
                        await self._send_frame(utt, seg, frame)
                        await self._segment_started(utt, seg)
                    else:
                        await self._send_frame(utt, seg, frame)
            # Each sentence is its own TTS stream: pad its tail instead of gluing it
            # to the next sentence's first samples.
            if (tail := framer.flush()) is not None and started:
                await self._send_frame(utt, seg, tail)
        if utt.segments:
            await self._emit({"type": "mark", "name": f"utt-{utt.n}"})
            # Stay "speaking" until the carrier has played it all out (and stay
            # interruptible meanwhile): the idle timer starts from real silence.
            await self._playout.drain()

    async def _send_frame(self, utt: Utterance, seg: Segment | None, frame: bytes) -> None:
        sent_at = await self._playout.send(frame)
        utt.progress_at = self._clock()
        utt.sent_ms += FRAME_MS
        if seg is not None:
            seg.sent_ms += FRAME_MS
        if utt.first_frame_at is None:
            utt.first_frame_at = sent_at
            utt.phase = "speaking"
            await self.commit_user(utt)
            turn = utt.turn
            if turn is not None and turn.speech_end_at is not None:
                utt.metrics.voice_to_voice_ms = round((sent_at - turn.speech_end_at) * 1000.0, 1)

    async def _segment_started(self, utt: Utterance, seg: Segment) -> None:
        utt.segments.append(seg)
        if len(utt.segments) == 1:
            await self._set_state("speaking")
        await self._emit(
            {"type": "transcript", "role": "assistant", "text": utt.full_text(), "final": False}
        )


async def sentences_of(text: str) -> AsyncIterator[str]:
    splitter = SentenceSplitter()
    for sentence in splitter.push(text):
        yield sentence
    if (tail := splitter.flush()) is not None:
        yield tail


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def _cut_at_word(text: str, fraction: float) -> str:
    n = int(len(text) * fraction)
    if n >= len(text):
        return text
    cut = text[:n]
    if not text[n].isspace():
        cut = cut.rsplit(None, 1)[0] if " " in cut.strip() else ""
    return cut.strip()


def _engine_name(engine: object) -> str:
    return str(getattr(engine, "name", "") or type(engine).__name__)


def _note_engine(metrics: TurnMetrics, role: str, engine: object) -> None:
    """Record which engine served ``role`` and any fallback switch a chain made for it."""
    metrics.engines[role] = _engine_name(engine)
    metrics.fallbacks.extend(
        f"{role}: {switch}" for switch in getattr(engine, "last_fallbacks", ())
    )


async def _aclose(stream: object) -> None:
    """Close an engine's async generator so its HTTP stream is released at once."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_leaf(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
