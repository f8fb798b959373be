"""One phone/browser call: VAD turn-taking and the streaming STT -> LLM -> TTS loop.

Shape of a session (all tasks are owned by ``run()`` and cancelled + awaited in its
``finally``):

    push_audio ─► input task (Silero VAD + TurnDetector) ─┐
    push_dtmf / stop / reply done ───────────────────────►├─► control loop (run): the only
                                                          │   place that changes call state
    reply task (one per agent utterance):                 │
        STT ─► LLM deltas ─► SentenceSplitter ─► TTS ─► PacedPlayout ─► Transport
    recorder task: CallRecorder writes, in order, off the audio path
    heartbeat task

Keeping every state change in the control loop means barge-in, idle timers, DTMF and
engine failures can never race each other into a "stuck speaking" state.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from orchestrator.audio import FRAME_MS, FrameSplitter, frame_bytes, pcm16_duration_ms
from orchestrator.config import CallConfig
from orchestrator.engines import EngineError, Engines
from orchestrator.playout import PacedPlayout, TransportFailed
from orchestrator.recorder_queue import RecorderQueue
from orchestrator.sentences import SentenceSplitter
from orchestrator.vad import SileroVad, TurnDetector, TurnEvent, TurnEventKind, vad_pool

logger = logging.getLogger(__name__)

INPUT_SAMPLE_RATE = 16000  # what consumers feed push_audio()
UNTRANSCRIBED = "(speech not transcribed)"  # user turn text when STT failed

T = TypeVar("T")


class EndReason(StrEnum):
    CALLER_HANGUP = "caller_hangup"
    AGENT_HANGUP = "agent_hangup"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    ERROR = "error"
    GLOBAL_STOP = "global_stop"
    SERVER_SHUTDOWN = "server_shutdown"
    ORPHANED = "orphaned"
    BUSY = "busy"  # we could not serve the call (overload), told the caller so


class CriticalCallError(Exception):
    """An engine failure ended the call; raised by ``run()`` after the call was closed.

    ``reason`` is the failure as text ("llm: groq 401: invalid key", "tts timed out
    after 10.0s"), ``role`` the engine role that failed; the caller applies its global
    stop policy from these.
    """

    def __init__(self, reason: str, call_id: str, *, role: str = "") -> None:
        super().__init__(f"call {call_id}: {reason}")
        self.reason = reason
        self.call_id = call_id
        self.role = role


@dataclass(slots=True, kw_only=True)
class TurnMetrics:
    stt_ms: float | None = None
    llm_ttft_ms: float | None = None
    tts_ttfb_ms: float | None = None
    voice_to_voice_ms: float | None = None  # end of user speech -> first agent frame sent
    # end of user speech -> end of turn detected (silence_timeout + VAD/frame alignment)
    endpointing_ms: float | None = None
    engines: dict[str, str] = field(default_factory=dict)  # role -> engine that served
    # Fallback switches made for this turn, e.g. "groq -> local: groq 500: ..."
    fallbacks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stt_ms": self.stt_ms,
            "llm_ttft_ms": self.llm_ttft_ms,
            "tts_ttfb_ms": self.tts_ttfb_ms,
            "voice_to_voice_ms": self.voice_to_voice_ms,
            "endpointing_ms": self.endpointing_ms,
            "engines": dict(self.engines),
            "fallbacks": list(self.fallbacks),
        }


@dataclass(slots=True, kw_only=True)
class TurnRecord:
    role: str  # "user" | "assistant"
    text: str
    started_at: datetime
    ended_at: datetime
    sequence: int = 0  # 1, 2, ... in the order spoken; assigned by the session, never reused
    interrupted: bool = False
    metrics: TurnMetrics | None = None


class Transport(Protocol):
    sample_rate: int  # PCM16 rate the session must send (16000 browser, 8000 phone)

    async def send_audio(self, frame: bytes) -> None:
        """Exactly one 20 ms PCM16 mono frame at ``sample_rate``."""
        ...

    async def clear_audio(self) -> None:
        """Barge-in: flush audio queued at the carrier/browser."""
        ...

    async def send_event(self, event: dict[str, Any]) -> None: ...

    async def close(self, reason: str) -> None: ...


class CallRecorder(Protocol):
    async def call_started(self, config: CallConfig) -> None: ...

    async def turn_recorded(self, turn: TurnRecord) -> None: ...

    async def turn_unanswered(self, *, sequence: int, reason: str) -> None:
        """The user turn ``sequence`` got no reply (engine failure, stall, the call ended
        while the agent was thinking)."""
        ...

    async def heartbeat(self) -> None: ...

    async def call_ended(
        self, *, reason: EndReason, error: str, metrics: dict[str, Any]
    ) -> None: ...


class _EngineFailed(Exception):
    def __init__(self, role: str, message: str, *, overloaded: bool = False) -> None:
        super().__init__(message)
        self.role = role
        self.overloaded = overloaded


# --- control-loop inputs -------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Vad:
    event: TurnEvent


@dataclass(slots=True, kw_only=True)
class _Dtmf:
    digit: str


@dataclass(slots=True, kw_only=True)
class _ReplyDone:
    task: asyncio.Task[None]


@dataclass(slots=True, kw_only=True)
class _Wake:
    pass


_Control = _Vad | _Dtmf | _ReplyDone | _Wake


@dataclass(slots=True, kw_only=True)
class _UserTurn:
    audio: bytes  # 16 kHz PCM16; empty for a DTMF-only turn
    started_at: float  # session clock
    speech_end_at: float | None
    detected_at: float | None = None  # when the end of turn was detected


@dataclass(slots=True, kw_only=True)
class _Segment:
    """One sentence of an agent utterance: its text and audio as TTS produces it."""

    text: str
    chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    synth_ms: float = 0.0  # audio synthesized so far
    pause_ms: float = 0.0  # voice_pacing silence sent before it
    sent_ms: float = 0.0  # its audio sent to the transport


@dataclass(slots=True, kw_only=True)
class _Utterance:
    n: int
    kind: str  # reply | greeting | reprompt | goodbye | apology
    interruptible: bool
    turn: _UserTurn | None = None
    metrics: TurnMetrics = field(default_factory=TurnMetrics)
    phase: str = "llm"  # stt | llm | speaking
    superseded: bool = False  # barge-in during STT: record the user turn, do not answer
    segments: list[_Segment] = field(default_factory=list)  # those that started playing
    sent_ms: float = 0.0
    first_frame_at: float | None = None
    user_sequence: int | None = None  # the user turn this reply answers, once recorded
    # The watchdog's reference: when the utterance started, then each frame sent.
    progress_at: float = 0.0

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


def _cut_at_word(text: str, fraction: float) -> str:
    n = int(len(text) * fraction)
    if n >= len(text):
        return text
    cut = text[:n]
    if not text[n].isspace():
        cut = cut.rsplit(None, 1)[0] if " " in cut.strip() else ""
    return cut.strip()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))  # nearest rank
    return round(ordered[k], 1)


def _engine_name(engine: object) -> str:
    return str(getattr(engine, "name", "") or type(engine).__name__)


def _note_engine(metrics: TurnMetrics, role: str, engine: object) -> None:
    """Record which engine served ``role`` and any fallback switch a chain made for it."""
    metrics.engines[role] = _engine_name(engine)
    metrics.fallbacks.extend(
        f"{role}: {switch}" for switch in getattr(engine, "last_fallbacks", ())
    )


class CallSession:
    HEARTBEAT_S = 10.0
    # After the call: how long the session waits for its recorder writes before leaving
    # them to flush in the background (a database outage must not hold the socket open).
    RECORDER_FLUSH_WAIT_S = 3.0
    CLOSE_TIMEOUT_S = 5.0
    # Engines own the timeout of their requests (engine_timeout_s each). The session's
    # step timeout is only a backstop, sized to a whole fallback chain plus this grace,
    # so it never fires before a fallback engine had its turn.
    BACKSTOP_GRACE_S = 1.0
    # Reply watchdog: an utterance with no first frame within a whole step budget plus
    # this margin of its start (the end of the user's turn), or whose frames stop for as
    # long, is stuck: the caller hears the busy message (local engines: our CPU is
    # saturated) or the apology, never silence.
    WATCHDOG_MARGIN_S = 2.0
    CANCEL_WAIT_S = 2.0  # a cancelled reply that does not finish by then is abandoned
    # Goodbye/apology: synthesis gets one step budget; playing takes ~80 ms a character.
    FINAL_WORDS_PLAY_S_PER_CHAR = 0.08
    FINAL_WORDS_GRACE_S = 5.0
    DTMF_TURN_DELAY_S = 1.5  # digits with no speech become a turn after this pause
    MAX_INPUT_BACKLOG_S = 30.0  # push_audio backlog bound (only reached if the loop stalls)

    def __init__(
        self,
        config: CallConfig,
        *,
        engines: Engines,
        transport: Transport,
        recorder: CallRecorder,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._engines = engines
        self._transport = transport
        self._recorder = recorder
        self._clock = clock
        self._call_id = config.call_id
        self._log_extra = {"call_id": config.call_id}
        self._out_rate = int(transport.sample_rate)
        self._frame_bytes = frame_bytes(self._out_rate)
        self._playout = PacedPlayout(
            transport.send_audio, lead_ms=config.playout_lead_ms, frame_ms=FRAME_MS, clock=clock
        )

        self._events: asyncio.Queue[_Control] = asyncio.Queue()
        self._audio: asyncio.Queue[bytes] = asyncio.Queue()
        self._audio_backlog = 0
        self._audio_dropped = False
        self._recorder_q = RecorderQueue(config.call_id, retry_for_s=config.recorder_retry_s)

        # sub-tasks, all owned by run()
        self._input_task: asyncio.Task[None] | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        # Cancelled replies that did not finish within CANCEL_WAIT_S (a native call that
        # cannot be interrupted): kept referenced, awaited (bounded) at shutdown.
        self._abandoned: set[asyncio.Task[None]] = set()

        self._vad: SileroVad | None = None
        self._detector: TurnDetector | None = None
        self._utt: _Utterance | None = None
        self._utt_seq = 0
        self._history: list[dict[str, str]] = []
        self._pending: list[_UserTurn] = []
        self._dtmf_digits: list[str] = []
        self._dtmf_deadline: float | None = None
        self._state = ""

        # user-turn bookkeeping (set on SPEECH_STARTED)
        self._user_speaking = False
        self._turn_start_at = 0.0
        self._turn_overlapped = False
        self._turn_barged = False

        self._t0 = 0.0
        self._wall0 = datetime.now(UTC)
        self._last_activity = 0.0
        self._reprompted = False

        self._started = False
        self._closed = False
        self._end_reason: EndReason | None = None
        self._end_say: str | None = None
        self._end_error = ""
        self._critical: CriticalCallError | None = None
        self._tts_failed = False
        self._transport_dead = False

        # call-level stats
        self._turn_metrics: list[TurnMetrics] = []
        self._user_turns = 0
        self._assistant_turns = 0
        self._interruptions = 0
        self._false_starts = 0
        self._turn_seq = 0  # sequence numbers of recorded turns
        self._unanswered = 0

    # --- API used by consumers (sync, non-blocking) -----------------------------------

    def push_audio(self, pcm16_16k_mono: bytes) -> None:
        """Enqueue caller audio (16 kHz mono PCM16, any length)."""
        if self._closed or self._end_reason is not None or not pcm16_16k_mono:
            return
        limit = int(self.MAX_INPUT_BACKLOG_S * INPUT_SAMPLE_RATE * 2)
        if self._audio_backlog + len(pcm16_16k_mono) > limit:
            if not self._audio_dropped:
                logger.warning(
                    "call %s: input backlog full, dropping audio",
                    self._call_id,
                    extra=self._log_extra,
                )
                self._audio_dropped = True
            return
        self._audio_backlog += len(pcm16_16k_mono)
        self._audio.put_nowait(pcm16_16k_mono)

    def push_dtmf(self, digit: str) -> None:
        """A keypad digit: sent as an event and given to the LLM as a user note."""
        if self._closed or self._end_reason is not None:
            return
        self._events.put_nowait(_Dtmf(digit=digit))

    def stop(self, reason: EndReason, *, say: str | None = None) -> None:
        """Ask the call to end; ``say`` is spoken first (not for a caller who hung up)."""
        self._end(reason, say=say)

    @property
    def history(self) -> list[dict[str, str]]:
        """The conversation as sent to the LLM (system prompt excluded); a copy."""
        return [dict(m) for m in self._history]

    # --- run ---------------------------------------------------------------------------

    async def run(self) -> EndReason:
        if self._started:
            raise RuntimeError("CallSession.run() may only be called once")
        self._started = True
        self._t0 = self._last_activity = self._clock()
        self._wall0 = datetime.now(UTC)
        self._recorder_q.start()
        self._record("call_started", lambda: self._recorder.call_started(self._config))
        cancelled = False
        try:
            self._vad = await vad_pool.acquire()
            cfg = self._config
            self._detector = TurnDetector(
                self._vad,
                min_speech_ms=cfg.min_speech_ms,
                silence_timeout_ms=cfg.silence_timeout_ms,
                preroll_ms=cfg.preroll_ms,
                # With barge-in off the detector still needs a value: it is then unused.
                barge_in_ms=max(cfg.barge_in_min_ms, cfg.min_speech_ms),
                clock=self._clock,
            )
            self._input_task = asyncio.create_task(
                self._input_loop(), name=f"input-{self._call_id}"
            )
            self._heartbeat_task = asyncio.create_task(
                self._heartbeat_loop(), name=f"heartbeat-{self._call_id}"
            )
            logger.info("call %s: session started", self._call_id, extra=self._log_extra)
            await self._set_state("listening")
            if cfg.greeting and self._end_reason is None:
                self._start_utterance("greeting", text=cfg.greeting)
            await self._control_loop()
        except asyncio.CancelledError:
            # The owner cancelled us instead of calling stop(): it is gone.
            cancelled = True
            self._end(EndReason.ORPHANED)
        except Exception as exc:
            logger.exception("call %s: session crashed", self._call_id, extra=self._log_extra)
            self._end(EndReason.ERROR, say=self._config.apology_message, error=f"internal: {exc!r}")
        finally:
            await self._shutdown(speak=not cancelled)
        if cancelled:
            raise asyncio.CancelledError
        if self._critical is not None:
            raise self._critical
        assert self._end_reason is not None
        return self._end_reason

    async def _control_loop(self) -> None:
        while self._end_reason is None:
            timeout = max(0.0, self._next_deadline() - self._clock())
            try:
                event: _Control | None = await asyncio.wait_for(self._events.get(), timeout)
            except TimeoutError:
                event = None
            if event is not None:
                await self._handle(event)
            if self._end_reason is None:
                await self._check_timers()

    def _end(self, reason: EndReason, *, say: str | None = None, error: str = "") -> bool:
        """First end request wins; later ones (e.g. a hang-up after an error) are ignored."""
        if self._end_reason is not None:
            return False
        self._end_reason = reason
        self._end_say = say or None
        self._end_error = error
        self._events.put_nowait(_Wake())
        logger.info("call %s: ending (%s) %s", self._call_id, reason, error, extra=self._log_extra)
        return True

    # --- control loop ------------------------------------------------------------------

    async def _handle(self, event: _Control) -> None:
        if isinstance(event, _Vad):
            await self._on_vad(event.event)
        elif isinstance(event, _Dtmf):
            self._dtmf_digits.append(event.digit)
            self._dtmf_deadline = self._clock() + self.DTMF_TURN_DELAY_S
            self._last_activity = self._clock()
            self._reprompted = False
            await self._emit({"type": "dtmf", "digit": event.digit})
        elif isinstance(event, _ReplyDone):
            if event.task is self._reply_task:
                await self._finish_reply(interrupt=False)

    async def _on_vad(self, event: TurnEvent) -> None:
        now = self._clock()
        self._last_activity = now
        if event.kind is TurnEventKind.SPEECH_STARTED:
            self._user_speaking = True
            self._turn_start_at = event.at - event.voiced_ms / 1000.0
            # Only speech over audible agent audio can be a backchannel; speech while the
            # agent is still thinking is the user going on, and is answered later.
            self._turn_overlapped = self._utt is not None and self._utt.sent_ms > 0
            self._turn_barged = False
        elif event.kind is TurnEventKind.BARGE_IN:
            utt = self._utt
            if self._config.barge_in_enabled and utt is not None and utt.interruptible:
                self._turn_barged = True
                if utt.sent_ms > 0:
                    self._interruptions += 1
                logger.info(
                    "call %s: barge-in (utterance %d, %s)",
                    self._call_id,
                    utt.n,
                    utt.phase,
                    extra=self._log_extra,
                )
                await self._finish_reply(interrupt=True)
        elif event.kind is TurnEventKind.TURN_ENDED:
            self._user_speaking = False
            turn = _UserTurn(
                audio=event.audio,
                started_at=self._turn_start_at,
                speech_end_at=event.speech_end_at,
                detected_at=event.at,
            )
            if (
                self._turn_overlapped
                and not self._turn_barged
                and self._reply_task is not None
                and self._config.barge_in_enabled
            ):
                # Said over the agent and too short to interrupt it ("mm-hm", a cough):
                # a backchannel, not a turn to answer.
                self._false_starts += 1
                logger.info(
                    "call %s: ignoring %.0f ms of speech over the agent",
                    self._call_id,
                    event.voiced_ms,
                    extra=self._log_extra,
                )
                return
            self._reprompted = False
            self._pending.append(turn)
            self._start_pending()

    def _start_pending(self) -> None:
        if self._reply_task is not None or not self._pending or self._end_reason is not None:
            return
        turns, self._pending = self._pending, []
        turn = _UserTurn(
            audio=b"".join(t.audio for t in turns),
            started_at=turns[0].started_at,
            speech_end_at=turns[-1].speech_end_at,
            detected_at=turns[-1].detected_at,
        )
        self._start_utterance("reply", turn=turn)

    def _next_deadline(self) -> float:
        now = self._clock()
        deadlines = [self._t0 + self._config.max_call_seconds, now + 1.0]
        if self._idle_counting():
            deadlines.append(self._last_activity + self._config.idle_timeout_s)
        if self._dtmf_deadline is not None:
            deadlines.append(self._dtmf_deadline)
        if self._utt is not None and self._reply_task is not None:
            deadlines.append(self._utt.progress_at + self._watchdog_s())
        return min(deadlines)

    def _idle_counting(self) -> bool:
        return (
            self._reply_task is None
            and not self._user_speaking
            and not self._pending
            and not self._dtmf_digits
        )

    async def _check_timers(self) -> None:
        now = self._clock()
        cfg = self._config
        if now >= self._t0 + cfg.max_call_seconds:
            self._end(EndReason.MAX_DURATION, say=cfg.goodbye_message)
            return
        utt = self._utt
        if utt is not None and self._reply_task is not None:
            if now >= utt.progress_at + self._watchdog_s():
                await self._reply_stalled(utt)
                return
        if (
            self._dtmf_deadline is not None
            and now >= self._dtmf_deadline
            and self._reply_task is None
            and not self._user_speaking
        ):
            self._dtmf_deadline = None
            self._start_utterance(
                "reply", turn=_UserTurn(audio=b"", started_at=now, speech_end_at=None)
            )
            return
        if self._idle_counting() and now >= self._last_activity + cfg.idle_timeout_s:
            if not self._reprompted and cfg.idle_reprompt:
                self._reprompted = True
                logger.info("call %s: idle, reprompting", self._call_id, extra=self._log_extra)
                self._start_utterance("reprompt", text=cfg.idle_reprompt)
            else:
                self._end(EndReason.IDLE_TIMEOUT, say=cfg.goodbye_message)

    def _step_budget_s(self, role: str) -> float:
        """Backstop for one engine step: every engine of the role's chain may use its own
        timeout before the session gives up on the step."""
        engine = getattr(self._engines, role)
        tries = len(getattr(engine, "engines", ())) or 1
        return self._config.engine_timeout_s * tries + self.BACKSTOP_GRACE_S

    def _watchdog_s(self) -> float:
        return (
            max(self._step_budget_s(role) for role in ("stt", "llm", "tts"))
            + self.WATCHDOG_MARGIN_S
        )

    async def _reply_stalled(self, utt: _Utterance) -> None:
        stalled_s = self._clock() - utt.progress_at
        where = "before its first audio" if utt.first_frame_at is None else "mid-utterance"
        error = f"reply stalled in {utt.phase} {where} for {stalled_s:.1f}s"
        if self._runs_locally(utt.phase):
            logger.warning("call %s: overloaded: %s", self._call_id, error, extra=self._log_extra)
            self._end(EndReason.BUSY, say=self._config.busy_message, error=f"overloaded: {error}")
        else:
            logger.error("call %s: %s", self._call_id, error, extra=self._log_extra)
            self._end(EndReason.ERROR, say=self._config.apology_message, error=error)
        await self._finish_reply(interrupt=True, why=error)

    def _runs_locally(self, phase: str) -> bool:
        role = {"stt": "stt", "llm": "llm"}.get(phase, "tts")
        return bool(getattr(getattr(self._engines, role), "runs_locally", False))

    # --- agent utterances ----------------------------------------------------------------

    def _start_utterance(self, kind: str, *, turn: _UserTurn | None = None, text: str = "") -> None:
        self._utt_seq += 1
        utt = _Utterance(
            n=self._utt_seq, kind=kind, interruptible=True, turn=turn, progress_at=self._clock()
        )
        coro = (
            self._respond(utt, turn) if turn is not None else self._speak(utt, _sentences_of(text))
        )
        self._utt = utt
        self._reply_task = asyncio.create_task(coro, name=f"{kind}-{self._call_id}-{utt.n}")
        # The control loop learns of the end through its queue (and keeps the task).
        self._reply_task.add_done_callback(lambda t: self._events.put_nowait(_ReplyDone(task=t)))

    async def _finish_reply(self, *, interrupt: bool, why: str = "") -> None:
        """Wrap up the current utterance: completed, interrupted (barge-in, end of call,
        stall) or failed. The only place that records assistant turns for the control
        loop, and the one that marks a user turn that got no reply."""
        task, utt = self._reply_task, self._utt
        if task is None or utt is None:
            return
        if interrupt and not task.done() and utt.phase == "stt" and self._end_reason is None:
            # The user went on talking while we transcribed: keep what they said (it
            # becomes part of the conversation) but do not answer it.
            utt.superseded = True
            return
        # Audio that had left the far end's speaker when we stopped sending.
        played_ms = max(0.0, utt.sent_ms - self._playout.queued_s() * 1000.0)
        self._reply_task = self._utt = None
        if not task.done():
            task.cancel()
        done, _ = await asyncio.wait([task], timeout=self.CANCEL_WAIT_S)
        if not done:
            # Stuck in something that ignores cancellation: never let it hold the call.
            logger.error(
                "call %s: utterance %d did not stop within %.1fs; abandoned",
                self._call_id,
                utt.n,
                self.CANCEL_WAIT_S,
                extra=self._log_extra,
            )
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
        failed = None if not done or task.cancelled() else task.exception()
        cut = not done or task.cancelled() or failed is not None
        if cut and utt.sent_ms > 0 and not self._transport_dead:
            await self._clear_audio()
        if failed is not None:
            self._on_reply_error(failed)
        if utt.segments:
            await self._record_assistant(utt, interrupted=cut, played_ms=played_ms)
        elif utt.kind == "reply" and not cut and not utt.superseded and utt.phase == "llm":
            logger.warning(
                "call %s: empty LLM reply, listening again", self._call_id, extra=self._log_extra
            )
        if utt.user_sequence is not None and not utt.segments and not utt.superseded:
            # A recorded user turn that heard nothing back. A barge-in before any audio is
            # not one: the caller went on, and the next reply answers both.
            barge_in = interrupt and self._end_reason is None and not why
            if not barge_in:
                reason = why or (
                    f"engine failure: {failed}" if failed is not None
                    else f"call ended ({self._end_reason}) before the reply" if cut
                    else "empty reply"
                )  # fmt: skip
                self._mark_unanswered(utt.user_sequence, reason)
        if self._end_reason is None:
            self._last_activity = self._clock()
            await self._set_state("listening")
            self._start_pending()

    def _mark_unanswered(self, sequence: int, reason: str) -> None:
        self._unanswered += 1
        logger.warning(
            "call %s: user turn %d got no reply: %s",
            self._call_id,
            sequence,
            reason,
            extra=self._log_extra,
        )
        self._record(
            "turn_unanswered",
            lambda: self._recorder.turn_unanswered(sequence=sequence, reason=reason),
        )

    def _on_reply_error(self, exc: BaseException) -> None:
        if isinstance(exc, _EngineFailed) and exc.overloaded:
            # Our own overload (a local model's queue), not a provider failure: tell the
            # caller the lines are busy, never count it toward the global stop.
            logger.warning("call %s: overloaded: %s", self._call_id, exc, extra=self._log_extra)
            say = None if exc.role == "tts" else self._config.busy_message
            self._end(EndReason.BUSY, say=say, error=f"overloaded: {exc}")
        elif isinstance(exc, _EngineFailed):
            logger.error("call %s: engine failure: %s", self._call_id, exc, extra=self._log_extra)
            self._tts_failed = self._tts_failed or exc.role == "tts"
            # If TTS itself failed, an apology cannot be spoken: just close.
            say = None if exc.role == "tts" else self._config.apology_message
            if self._end(EndReason.ERROR, say=say, error=str(exc)):
                self._critical = CriticalCallError(str(exc), self._call_id, role=exc.role)
        elif isinstance(exc, TransportFailed):
            logger.warning("call %s: %s", self._call_id, exc, extra=self._log_extra)
            self._transport_dead = True
            self._end(EndReason.ERROR, error=f"transport: {exc}")
        else:
            logger.error(
                "call %s: reply crashed", self._call_id, exc_info=exc, extra=self._log_extra
            )
            self._end(EndReason.ERROR, say=self._config.apology_message, error=f"internal: {exc!r}")

    async def _respond(self, utt: _Utterance, turn: _UserTurn) -> None:
        """Answer one user turn: transcribe, record it, stream the reply."""
        await self._set_state("thinking")
        if turn.speech_end_at is not None and turn.detected_at is not None:
            utt.metrics.endpointing_ms = round((turn.detected_at - turn.speech_end_at) * 1000.0, 1)
        text = ""
        if turn.audio:
            utt.phase = "stt"
            stt = self._engines.stt
            t = self._clock()
            try:
                text = await self._engine_call(
                    "stt",
                    stt.transcribe(
                        turn.audio, sample_rate=INPUT_SAMPLE_RATE, language=self._config.language
                    ),
                    utt,
                )
            except _EngineFailed:
                # The caller spoke and we could not even transcribe it: keep a visible
                # placeholder turn, marked unanswered, instead of no trace at all.
                self._user_turns += 1
                utt.user_sequence = self._record_turn(
                    TurnRecord(
                        role="user",
                        text=UNTRANSCRIBED,
                        started_at=self._wall(turn.started_at),
                        ended_at=self._wall(turn.speech_end_at or self._clock()),
                    )
                )
                raise
            utt.metrics.stt_ms = round((self._clock() - t) * 1000.0, 1)
            _note_engine(utt.metrics, "stt", stt)
            text = (text or "").strip()
        if self._dtmf_digits:
            note = f"[DTMF: {' '.join(self._dtmf_digits)}]"
            self._dtmf_digits.clear()
            self._dtmf_deadline = None
            text = f"{note} {text}".strip()
        if not text:
            logger.info("call %s: empty transcript, no turn", self._call_id, extra=self._log_extra)
            return
        end = turn.speech_end_at if turn.speech_end_at is not None else self._clock()
        self._user_turns += 1
        utt.user_sequence = self._record_turn(
            TurnRecord(
                role="user",
                text=text,
                started_at=self._wall(turn.started_at),
                ended_at=self._wall(end),
            )
        )
        await self._emit({"type": "transcript", "role": "user", "text": text, "final": True})
        if self._history and self._history[-1]["role"] == "user":
            # A turn the agent did not answer (superseded): keep messages alternating.
            self._history[-1]["content"] += " " + text
        else:
            self._history.append({"role": "user", "content": text})
        if utt.superseded:
            return
        utt.phase = "llm"
        messages = [{"role": "system", "content": self._config.system_prompt}, *self._history]
        await self._speak(utt, self._llm_sentences(utt, messages))

    async def _llm_sentences(
        self, utt: _Utterance, messages: list[dict[str, str]]
    ) -> AsyncIterator[str]:
        llm = self._engines.llm
        stream = llm.stream(
            messages, temperature=self._config.temperature, max_tokens=self._config.max_tokens
        )
        splitter = SentenceSplitter()
        t = self._clock()
        try:
            iterator = aiter(stream)
            while True:
                try:
                    # The timeout covers the first token and any later stall.
                    delta = await self._engine_call("llm", anext(iterator), utt)
                except StopAsyncIteration:
                    break
                if delta and utt.metrics.llm_ttft_ms is None:
                    utt.metrics.llm_ttft_ms = round((self._clock() - t) * 1000.0, 1)
                    _note_engine(utt.metrics, "llm", llm)
                for sentence in splitter.push(delta or ""):
                    yield sentence
            if (tail := splitter.flush()) is not None:
                yield tail
        finally:
            await _aclose(stream)

    async def _speak(self, utt: _Utterance, sentences: AsyncIterator[str]) -> None:
        """Synthesize sentences as they come and play them, N+1 synthesizing while N plays."""
        # Bounded look-ahead: TTS work wasted by a barge-in stays small.
        segments: asyncio.Queue[_Segment | None] = asyncio.Queue(maxsize=2)

        async def synthesize_all() -> None:
            try:
                async for text in sentences:
                    seg = _Segment(text=text)
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

    async def _synthesize(self, utt: _Utterance, seg: _Segment) -> None:
        tts = self._engines.tts
        stream = tts.synthesize(
            seg.text, sample_rate=self._out_rate, language=self._config.language
        )
        t = self._clock()
        try:
            iterator = aiter(stream)
            while True:
                try:
                    chunk = await self._engine_call("tts", anext(iterator), utt)
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

    async def _play(self, utt: _Utterance, segments: asyncio.Queue[_Segment | None]) -> None:
        framer = FrameSplitter(self._frame_bytes)
        silence = b"\x00" * self._frame_bytes
        pause_frames = self._config.voice_pacing_ms // FRAME_MS
        while (seg := await segments.get()) is not None:
            started = False
            while (chunk := await seg.chunks.get()) is not None:
                for frame in framer.push(chunk):
                    if not started:
                        started = True
                        if utt.segments:
                            for _ in range(pause_frames):
                                await self._send_frame(utt, None, silence)
                                seg.pause_ms += FRAME_MS
                        await self._send_frame(utt, seg, frame)
                        await self._on_segment_started(utt, seg)
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

    async def _send_frame(self, utt: _Utterance, seg: _Segment | None, frame: bytes) -> None:
        sent_at = await self._playout.send(frame)
        utt.progress_at = self._clock()
        utt.sent_ms += FRAME_MS
        if seg is not None:
            seg.sent_ms += FRAME_MS
        if utt.first_frame_at is None:
            utt.first_frame_at = sent_at
            utt.phase = "speaking"
            turn = utt.turn
            if turn is not None and turn.speech_end_at is not None:
                utt.metrics.voice_to_voice_ms = round((sent_at - turn.speech_end_at) * 1000.0, 1)

    async def _on_segment_started(self, utt: _Utterance, seg: _Segment) -> None:
        utt.segments.append(seg)
        if len(utt.segments) == 1:
            await self._set_state("speaking")
        await self._emit(
            {"type": "transcript", "role": "assistant", "text": utt.full_text(), "final": False}
        )

    async def _record_assistant(
        self, utt: _Utterance, *, interrupted: bool, played_ms: float
    ) -> None:
        text = utt.spoken_text(played_ms) if interrupted else utt.full_text()
        now = self._clock()
        self._assistant_turns += 1
        metrics = utt.metrics
        if utt.kind == "reply":
            self._turn_metrics.append(metrics)
        self._record_turn(
            TurnRecord(
                role="assistant",
                text=text,
                started_at=self._wall(utt.first_frame_at or now),
                ended_at=self._wall(now),
                interrupted=interrupted,
                metrics=metrics,
            )
        )
        event: dict[str, Any] = {
            "type": "transcript",
            "role": "assistant",
            "text": text,
            "final": True,
        }
        if interrupted:
            event["interrupted"] = True
        await self._emit(event)
        if utt.kind == "reply":
            await self._emit({"type": "metrics", **metrics.as_dict()})
        if text:
            # Interrupted turns keep only what the caller heard.
            self._history.append({"role": "assistant", "content": text})

    async def _engine_call(self, role: str, awaitable: Awaitable[T], utt: _Utterance) -> T:
        """One engine step (STT result, next LLM delta, next TTS chunk). Engines time out
        their own requests; the backstop here only catches one that never does."""
        budget = self._step_budget_s(role)
        try:
            async with asyncio.timeout(budget):
                result = await awaitable
        except TimeoutError as exc:
            # A local model that times out means our CPU is saturated, not a vendor outage.
            raise _EngineFailed(
                role, f"{role} timed out after {budget:g}s", overloaded=self._runs_locally(role)
            ) from exc
        except EngineError as exc:
            raise _EngineFailed(role, f"{role}: {exc}", overloaded=exc.overloaded) from exc
        return result

    # --- input, recorder, heartbeat --------------------------------------------------------

    async def _input_loop(self) -> None:
        assert self._detector is not None
        while True:
            pcm = await self._audio.get()
            self._audio_backlog -= len(pcm)
            for event in self._detector.feed(pcm):
                self._events.put_nowait(_Vad(event=event))

    def _record(self, what: str, call: Callable[[], Awaitable[None]], **options: Any) -> None:
        self._recorder_q.put(what, call, **options)

    def _record_turn(self, turn: TurnRecord) -> int:
        """Queue a turn with the next sequence number (kept even if a write is retried,
        so a gap in the stored sequence means a lost turn); returns the number."""
        self._turn_seq += 1
        turn.sequence = self._turn_seq
        self._record(
            "turn_recorded",
            lambda: self._recorder.turn_recorded(turn),
            describe=f"turn {turn.sequence} {turn.role}: {turn.text!r}",
        )
        return turn.sequence

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.HEARTBEAT_S)
            self._record("heartbeat", self._recorder.heartbeat, retry=False)

    # --- shutdown ----------------------------------------------------------------------------

    async def _shutdown(self, *, speak: bool) -> None:
        reason = self._end_reason or EndReason.ERROR
        self._closed = True
        await _cancel(self._input_task, self._heartbeat_task)
        if self._reply_task is not None:
            await self._finish_reply(interrupt=True)
        say = self._end_say
        if speak and say and not self._transport_dead and not self._tts_failed:
            await self._final_words(say, kind="apology" if reason is EndReason.ERROR else "goodbye")
        try:
            async with asyncio.timeout(self.CLOSE_TIMEOUT_S):
                await self._transport.close(str(reason))
        except Exception:
            logger.warning(
                "call %s: transport.close failed",
                self._call_id,
                exc_info=True,
                extra=self._log_extra,
            )
        if self._abandoned:
            # Replies stuck past their cancellation get one last bounded chance to exit.
            await asyncio.wait(list(self._abandoned), timeout=self.CANCEL_WAIT_S)
        metrics = self._call_metrics()
        error = self._end_error
        self._record(
            "call_ended",
            lambda: self._recorder.call_ended(reason=reason, error=error, metrics=metrics),
            describe=f"end reason {reason}",
        )
        # call_ended is the last write; a database outage keeps it retrying in the
        # background rather than holding up the socket (recorder_queue.py).
        await self._recorder_q.close(wait_s=self.RECORDER_FLUSH_WAIT_S)
        if self._vad is not None:
            vad_pool.release(self._vad)
            self._vad = None
        self._detector = None
        logger.info(
            "call %s: session ended (%s) %s", self._call_id, reason, metrics, extra=self._log_extra
        )

    async def _final_words(self, text: str, *, kind: str) -> None:
        """Goodbye or apology: not interruptible, bounded in time, TTS failure = just close."""
        self._utt_seq += 1
        utt = _Utterance(n=self._utt_seq, kind=kind, interruptible=False)
        limit = (
            self._step_budget_s("tts")
            + self.FINAL_WORDS_GRACE_S
            + self.FINAL_WORDS_PLAY_S_PER_CHAR * len(text)
        )
        try:
            async with asyncio.timeout(limit):
                await self._speak(utt, _sentences_of(text))
        except (_EngineFailed, TimeoutError, TransportFailed) as exc:
            logger.warning(
                "call %s: could not say %s: %s", self._call_id, kind, exc, extra=self._log_extra
            )
        if utt.segments:
            await self._record_assistant(utt, interrupted=False, played_ms=utt.sent_ms)

    # --- helpers ---------------------------------------------------------------------------

    async def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            await self._emit({"type": "state", "state": state})

    async def _emit(self, event: dict[str, Any]) -> None:
        if self._transport_dead:
            return
        try:
            await self._transport.send_event(event)
        except Exception:
            # Live events are best-effort UI updates; a dead socket shows up in send_audio.
            logger.warning(
                "call %s: send_event(%s) failed",
                self._call_id,
                event.get("type"),
                exc_info=True,
                extra=self._log_extra,
            )

    async def _clear_audio(self) -> None:
        self._playout.discard()
        try:
            await self._transport.clear_audio()
        except Exception:
            logger.warning(
                "call %s: clear_audio failed", self._call_id, exc_info=True, extra=self._log_extra
            )

    def _wall(self, t: float) -> datetime:
        return self._wall0 + timedelta(seconds=t - self._t0)

    def _call_metrics(self) -> dict[str, Any]:
        def values(name: str) -> list[float]:
            return [v for m in self._turn_metrics if (v := getattr(m, name)) is not None]

        v2v = values("voice_to_voice_ms")
        return {
            "duration_s": round(self._clock() - self._t0, 3),
            "turns": self._user_turns + self._assistant_turns,
            "user_turns": self._user_turns,
            "assistant_turns": self._assistant_turns,
            "interruptions": self._interruptions,
            "false_starts": self._false_starts,
            "unanswered_turns": self._unanswered,
            "voice_to_voice_p50_ms": _percentile(v2v, 50),
            "voice_to_voice_p95_ms": _percentile(v2v, 95),
            "stt_p50_ms": _percentile(values("stt_ms"), 50),
            "llm_ttft_p50_ms": _percentile(values("llm_ttft_ms"), 50),
            "tts_ttfb_p50_ms": _percentile(values("tts_ttfb_ms"), 50),
        }


async def _sentences_of(text: str) -> AsyncIterator[str]:
    splitter = SentenceSplitter()
    for sentence in splitter.push(text):
        yield sentence
    if (tail := splitter.flush()) is not None:
        yield tail


async def _aclose(stream: object) -> None:
    """Close an engine's async generator so its HTTP stream is released at once."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


async def _cancel(*tasks: asyncio.Task[Any] | None) -> None:
    live = [t for t in tasks if t is not None and not t.done()]
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_leaf(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
