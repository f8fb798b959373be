"""The reply pipeline of one agent utterance: STT -> LLM -> sentences -> TTS -> playout.

    user turn ─► STT ─► transcript ─► ReplyWords (LLM rounds, tools, flow lines) ─┐
    fixed text (greeting, reprompt, goodbye) ─────────────────────────────────────┴► TTS
                                                                       ─► PacedPlayout

What the reply says, the LLM's sentences and the tool rounds behind them, comes from
``ReplyWords`` (reply_words.py); this module transcribes the caller's turn, holds a turn
whose words sound unfinished, and turns sentences into audio: one sentence is synthesized
while the previous one plays. Each engine step is bounded by a backstop sized to the
role's whole fallback chain (engine_steps.py). The session owns the lifecycle (start,
barge-in, cancel, errors); this module only does the work of one utterance and keeps what
the caller heard on the :class:`Utterance`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.audio import FRAME_MS, FrameSplitter, frame_bytes, pcm16_duration_ms
from orchestrator.config import CallConfig
from orchestrator.contracts import INPUT_SAMPLE_RATE, TurnMetrics
from orchestrator.engine_steps import (
    EngineFailed,
    EngineSteps,
    aclose_stream,
    note_engine,
)
from orchestrator.engines import Engines
from orchestrator.flows.toolbox import FlowToolBox
from orchestrator.playout import PacedPlayout, TransportFailed
from orchestrator.reply_words import ReplyWords
from orchestrator.sentences import sentences_of
from orchestrator.tools.builtin import AfterReply
from orchestrator.tools.runner import ToolRunner
from orchestrator.tools.toolbox import ToolBox
from orchestrator.transcript import Transcript
from orchestrator.turn_taking import UserTurn
from orchestrator.turn_words import ends_incomplete

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]


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
        self._steps = EngineSteps(config, engines)
        tool_runner = ToolRunner(
            config,
            tools=self._tools,
            playout=playout,
            transcript=transcript,
            emit=emit,
            commit_user=self.commit_user,
            clock=clock,
        )
        self._words = ReplyWords(
            config,
            engines=engines,
            tools=self._tools,
            flow=self._flow,
            tool_runner=tool_runner,
            steps=self._steps,
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
        self._last_reply: Utterance | None = None  # the flow reply answered before this one

    # --- budgets -------------------------------------------------------------------------

    def step_budget_s(self, role: str) -> float:
        """Backstop for one engine step of ``role`` (engine_steps.py)."""
        return self._steps.budget_s(role)

    def runs_locally(self, role: str) -> bool:
        """A local model serves ``role``: its timeouts mean our CPU is saturated."""
        return self._steps.runs_locally(role)

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
        await self.speak(utt, self._words.sentences(utt, messages))

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
                await aclose_stream(sentences)
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
        text = await self._steps.run("stt", work)
        utt.metrics.stt_ms = round((self._clock() - t) * 1000.0, 1)
        note_engine(utt.metrics, "stt", stt)
        return (text or "").strip()

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
                    chunk = await self._steps.run("tts", anext(iterator))
                except StopAsyncIteration:
                    break
                if not chunk:
                    continue
                if utt.metrics.tts_ttfb_ms is None:
                    utt.metrics.tts_ttfb_ms = round((self._clock() - t) * 1000.0, 1)
                    note_engine(utt.metrics, "tts", tts)
                seg.synth_ms += pcm16_duration_ms(chunk, self._out_rate)
                seg.chunks.put_nowait(chunk)
        finally:
            await aclose_stream(stream)
        seg.chunks.put_nowait(None)

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


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_leaf(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
