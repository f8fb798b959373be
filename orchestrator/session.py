"""One phone/browser call: the control loop that owns every state change of the call.

    push_audio ─► input task (noise suppression, Silero VAD + TurnDetector) ─┐
    push_dtmf / stop / utterance done / overlap words / end-of-turn model ──►├─► control loop
                                                                             │   (run): the only
                                                                             │   place that
                                                                             │   changes state
    utterance task (one at a time, UtteranceSlot): ReplyPipeline
        STT ─► LLM deltas ─► sentences ─► TTS ─► PacedPlayout ─► Transport
    RecorderQueue task: turns and call state written in order, off the audio path
    heartbeat task

Collaborators, each testable alone: ``Listener`` (the caller's side: turns, end of turn,
speech over the agent; listener.py), ``ReplyPipeline`` (the work of one utterance; its
tool rounds run in ``tools/runner.py``), ``UtteranceSlot`` (that work's task, started and
stopped within a bound; utterance_slot.py), ``Transcript`` (history + numbered turns),
``CallStats``, ``RecorderQueue`` and, on a recorded call, ``CallRecording``
(recording.py); after a reply, ``ReplyActions`` (tools/actions.py) hangs up or transfers
(built-in tools); ``CallClocks`` (call_timers.py) says which deadline is due. Keeping
every state change here means barge-in, timers, DTMF, engine failures and the reply
watchdog can never race each other into a "stuck speaking" state. All tasks are owned
by ``run()`` and cancelled + awaited in its ``finally``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import audio_health
from orchestrator.answering import ANSWER_VERDICTS, opening_line, voicemail_line
from orchestrator.audio import FRAME_MS
from orchestrator.call_output import CallOutput
from orchestrator.call_timers import CallClocks, IdleTimer, ReplyWatchdog
from orchestrator.caller_audio import CallerAudio
from orchestrator.config import CallConfig
from orchestrator.contracts import (
    INPUT_SAMPLE_RATE,
    CallRecorder,
    CriticalCallError,
    EndReason,
    Transport,
    TurnMetrics,
    TurnRecord,
)
from orchestrator.dtmf import DtmfDigits
from orchestrator.end_of_turn import EotDecision, ScoreFn
from orchestrator.engines import Engines
from orchestrator.failures import CallEnd, Ending, ending_for_error, ending_for_stall
from orchestrator.flows.toolbox import goodbye_hangs_up, toolbox_for
from orchestrator.listener import Listener
from orchestrator.loop_lag import LagWindow
from orchestrator.noise import InboundCleaner
from orchestrator.playout import PacedPlayout
from orchestrator.recorder_queue import RecorderQueue
from orchestrator.recording import CallRecording
from orchestrator.reply import ReplyPipeline, Utterance
from orchestrator.silero import new_vad
from orchestrator.stats import CallStats
from orchestrator.task_reaper import cancel_all
from orchestrator.tools.actions import ReplyActions
from orchestrator.transcript import Transcript
from orchestrator.turn_taking import UserTurn
from orchestrator.utterance_slot import UtteranceSlot
from orchestrator.vad import TurnDetector, TurnEvent, TurnEventKind

# Re-exported: the consumers' and recorders' view of a session.
__all__ = [
    "INPUT_SAMPLE_RATE",
    "CallSession",
    "CriticalCallError",
    "EndReason",
    "Transport",
    "TurnMetrics",
    "TurnRecord",
]

logger = logging.getLogger(__name__)


# --- control-loop inputs -------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Vad:
    event: TurnEvent


@dataclass(slots=True, kw_only=True)
class _Dtmf:
    digit: str


@dataclass(slots=True, kw_only=True)
class _UtteranceDone:
    task: asyncio.Task[None]


@dataclass(slots=True, kw_only=True)
class _Heard:
    task: asyncio.Task[str]  # transcript of speech over the agent


@dataclass(slots=True, kw_only=True)
class _Answered:
    verdict: str  # human | machine | unknown (outbound answering-machine detection)


@dataclass(slots=True, kw_only=True)
class _Wake:
    pass


_Control = _Vad | _Dtmf | _UtteranceDone | _Heard | _Answered | _Wake


class CallSession:
    HEARTBEAT_S = 10.0
    RECORDER_FLUSH_WAIT_S = 3.0  # then the recorder's writes flush in the background

    def __init__(
        self,
        config: CallConfig,
        *,
        engines: Engines,
        transport: Transport,
        recorder: CallRecorder,
        turn_model: ScoreFn | None = None,
        recording: CallRecording | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``turn_model`` scores end of turn (Smart Turn by default); ``recording`` records
        both sides of the call (recording.py)."""
        self._config = config
        self._recording = recording
        if recording is not None:
            transport = recording.tap(transport)  # what the playout sends is recorded
        self._recorder = recorder
        self._clock = clock
        self._call_id = config.call_id
        self._log_extra = {"call_id": config.call_id}
        self._playout = PacedPlayout(
            transport.send_audio, lead_ms=config.playout_lead_ms, frame_ms=FRAME_MS, clock=clock
        )
        self._out = CallOutput(config.call_id, transport, self._playout)
        self._input = CallerAudio(
            config.call_id,
            cleaner=InboundCleaner(call_id=config.call_id) if config.noise_suppression else None,
        )
        self._dtmf = DtmfDigits()
        # Audio health (audio_health.py): caller frame arrival, late frames, gaps, loop lag.
        self._inbound = audio_health.InboundTiming()
        self._loop_lag = LagWindow()
        self._recorder_q = RecorderQueue(config.call_id, retry_for_s=config.recorder_retry_s)
        self._stats = CallStats()
        self._transcript = Transcript(
            recorder=recorder, queue=self._recorder_q, stats=self._stats, wall=self._wall
        )
        self._tools = toolbox_for(config, engines, transcript=self._transcript,
                                  emit=self._out.emit, clock=clock, wall=self._wall)  # fmt: skip
        self._actions = ReplyActions(
            config,
            out=self._out,
            transcript=self._transcript,
            goodbye_hangs_up=goodbye_hangs_up(config, self._tools, engines.llm),
            clock=clock,
        )
        self._pipeline = ReplyPipeline(
            config,
            tools=self._tools,
            engines=engines,
            playout=self._playout,
            out_rate=int(transport.sample_rate),
            transcript=self._transcript,
            emit=self._out.emit,
            set_state=self._out.set_state,
            take_dtmf_note=self._dtmf.take_note,
            clock=clock,
        )
        self._speaking = UtteranceSlot(
            config.call_id,
            self._pipeline,
            finished=lambda task: self._events.put_nowait(_UtteranceDone(task=task)),
            clock=clock,
        )
        self._listener = Listener(
            config,
            stt=engines.stt,
            stt_runs_locally=self._pipeline.runs_locally("stt"),
            turn_model=turn_model
            or (default_turn_model() if config.turn_detection == "smart" else None),
            out=self._out,
            playout=self._playout,
            stats=self._stats,
            clock=clock,
            wake=lambda: self._events.put_nowait(_Wake()),
            heard=lambda task: self._events.put_nowait(_Heard(task=task)),
        )

        self._events: asyncio.Queue[_Control] = asyncio.Queue()
        # sub-tasks, all owned by run()
        self._input_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._wall0 = datetime.now(UTC)
        self._idle = IdleTimer(config.idle_timeout_s, config.idle_reprompt)
        watchdog = ReplyWatchdog(self._pipeline.step_budget_s,
                                 paused=lambda: self._playout.paused)  # fmt: skip
        self._clocks = CallClocks(
            config,
            idle=self._idle,
            dtmf=self._dtmf,
            watchdog=watchdog,
            listener=self._listener,
            current=lambda: self._speaking.current,
        )
        # Outbound with answering-machine detection: silent until a person is confirmed.
        self._answered = not config.await_answer
        self._ending = CallEnd(config.call_id)  # reason, goodbye line, error, transfer

        self._started = False
        self._closed = False

    # --- API used by consumers (sync, non-blocking) -----------------------------------------

    def push_audio(self, pcm16_16k_mono: bytes) -> None:
        """Enqueue caller audio (16 kHz mono PCM16, any length)."""
        if not self._closed and self._ending.reason is None and pcm16_16k_mono:
            if self._started:
                self._inbound.arrived(self._clock(), len(pcm16_16k_mono))
                if self._recording is not None:
                    self._recording.caller(pcm16_16k_mono)
            self._input.push(pcm16_16k_mono)

    def push_dtmf(self, digit: str) -> None:
        """A keypad digit: sent as an event and given to the LLM as a user note."""
        if not self._closed and self._ending.reason is None:
            self._events.put_nowait(_Dtmf(digit=digit))

    def answered_by(self, verdict: str) -> None:
        """The answering-machine verdict of an outbound call (answering.py)."""
        if verdict not in ANSWER_VERDICTS:
            raise ValueError(f"unknown answer verdict {verdict!r}")
        if not self._closed and self._ending.reason is None:
            self._events.put_nowait(_Answered(verdict=verdict))

    def stop(self, reason: EndReason, *, say: str | None = None) -> None:
        """Ask the call to end; ``say`` is spoken first (not for a caller who hung up)."""
        self._end(reason, say=say)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The conversation as sent to the LLM (system prompt excluded); a copy."""
        return self._transcript.history

    # --- run ----------------------------------------------------------------------------------

    async def run(self) -> EndReason:
        if self._started:
            raise RuntimeError("CallSession.run() may only be called once")
        self._started = True
        self._clocks.start(self._clock())
        self._wall0 = datetime.now(UTC)
        if self._recording is not None:
            self._recording.start()
        self._recorder_q.start()
        self._loop_lag.open()
        self._recorder_q.put("call_started", lambda: self._recorder.call_started(self._config))
        cancelled = False
        try:
            cfg = self._config
            detector = TurnDetector(
                await new_vad(),
                min_speech_ms=cfg.min_speech_ms,
                # Smart mode: the VAD reports short pauses and end_of_turn.py decides.
                silence_timeout_ms=self._listener.detector_silence_ms,
                preroll_ms=cfg.preroll_ms,
                # With barge-in off the detector still needs a value: it is then unused.
                barge_in_ms=max(cfg.barge_in_min_ms, cfg.min_speech_ms),
                progress_ms=self._listener.progress_ms,
                clock=self._clock,
            )
            self._input_task = asyncio.create_task(
                self._input.feed(detector, lambda e: self._events.put_nowait(_Vad(event=e))),
                name=f"input-{self._call_id}",
            )
            self._heartbeat_task = asyncio.create_task(
                self._heartbeat_loop(), name=f"heartbeat-{self._call_id}"
            )
            logger.info("call %s: session started", self._call_id, extra=self._log_extra)
            await self._out.set_state("listening")
            if self._answered:
                self._greet()
            else:
                logger.info("call %s: waiting for the answering-machine verdict", self._call_id,
                            extra=self._log_extra)  # fmt: skip
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
        if self._ending.critical is not None:
            raise self._ending.critical
        assert self._ending.reason is not None
        return self._ending.reason

    async def _control_loop(self) -> None:
        while self._ending.reason is None:
            now = self._clock()
            timeout = max(0.0, self._clocks.next_deadline(now, answered=self._answered) - now)
            try:
                event: _Control | None = await asyncio.wait_for(self._events.get(), timeout)
            except TimeoutError:
                event = None
            if isinstance(event, _Vad):
                await self._on_vad(event.event)
            elif isinstance(event, _Dtmf):
                self._dtmf.press(event.digit, now=self._clock())
                self._idle.touch(self._clock(), new_turn=True)
                await self._out.emit({"type": "dtmf", "digit": event.digit})
            elif isinstance(event, _UtteranceDone) and self._speaking.owns(event.task):
                await self._finish_utterance(interrupt=False)
            elif isinstance(event, _Heard):
                if await self._listener.on_heard(event.task, self._speaking.current):
                    await self._finish_utterance(interrupt=True)
            elif isinstance(event, _Answered):
                self._on_answered(event.verdict)
            if self._ending.reason is None:
                await self._check_timers()

    def _greet(self) -> None:
        if self._speaking.current is not None:  # (nothing speaks before the verdict)
            return
        opening = opening_line(self._config, recorded=self._recording is not None)
        if opening and self._ending.reason is None:
            self._speaking.start("greeting", text=opening)
        else:
            self._answer_pending()

    def _on_answered(self, verdict: str) -> None:
        if self._answered:
            logger.info("call %s: answer verdict %s after the call went ahead, ignored",
                        self._call_id, verdict, extra=self._log_extra)  # fmt: skip
            return
        self._answered = True
        self._idle.touch(self._clock())
        logger.info("call %s: answered by %s", self._call_id, verdict, extra=self._log_extra)
        if verdict != "machine":
            self._greet()
            return
        self._end(EndReason.VOICEMAIL, say=voicemail_line(self._config))

    def _end(self, reason: EndReason, *, say: str | None = None, error: str = "") -> None:
        """First end request wins (CallEnd); the control loop wakes to act on it."""
        if self._ending.request(reason, say=say, error=error):
            self._events.put_nowait(_Wake())

    # --- caller speech ---------------------------------------------------------------------------

    async def _on_vad(self, event: TurnEvent) -> None:
        if event.kind not in (TurnEventKind.VOICE_ONSET, TurnEventKind.FALSE_START):
            self._idle.touch(self._clock(), new_turn=event.kind is TurnEventKind.TURN_ENDED)
        if await self._listener.on_vad(event, self._speaking.current):
            await self._finish_utterance(interrupt=True)
        self._answer_pending()

    def _answer_pending(self) -> None:
        if self._speaking.current is None and self._ending.reason is None and self._answered:
            if (turn := self._listener.take_turn()) is not None:
                self._speaking.start("reply", turn=turn)

    # --- timers -------------------------------------------------------------------------------

    async def _check_timers(self) -> None:
        now, cfg = self._clock(), self._config
        due = self._clocks.due(now, answered=self._answered)
        if due is None:
            return
        if due.kind == "max_duration":
            self._end(EndReason.MAX_DURATION, say=cfg.goodbye_message)
        elif due.kind == "answer_wait":
            logger.warning("call %s: no answering-machine verdict in %.0fs; going ahead",
                           self._call_id, cfg.answer_wait_s, extra=self._log_extra)  # fmt: skip
            self._on_answered("unknown")
        elif due.kind == "turn":
            self._answer_pending()
        elif due.kind == "stall" and (utt := self._speaking.current) is not None:
            await self._utterance_stalled(utt, due.stall)
        elif due.kind == "dtmf":
            dtmf = EotDecision(reason="dtmf")
            self._speaking.start("reply", turn=UserTurn(audio=b"", started_at=now,
                                                        speech_end_at=None, eot=dtmf))  # fmt: skip
        elif due.kind == "reprompt":
            logger.info("call %s: idle, reprompting", self._call_id, extra=self._log_extra)
            self._speaking.start("reprompt", text=cfg.idle_reprompt)
        else:
            self._end(EndReason.IDLE_TIMEOUT, say=cfg.goodbye_message)

    async def _utterance_stalled(self, utt: Utterance, error: str) -> None:
        role = utt.phase if utt.phase in ("stt", "llm") else "tts"
        local = self._pipeline.runs_locally(role)
        self._apply(ending_for_stall(error, local=local, config=self._config))
        await self._finish_utterance(interrupt=True, why=error)

    # --- agent utterances ----------------------------------------------------------------------

    async def _finish_utterance(self, *, interrupt: bool, why: str = "") -> None:
        """Wrap up the current utterance: completed, interrupted (barge-in, end of call,
        stall) or failed. The only place that records agent turns for the control loop,
        and the one that marks a user turn that got no reply."""
        if (utt := self._speaking.current) is None:
            return
        # Audio that had left the far end's speaker when we stopped sending.
        played_ms = max(0.0, utt.sent_ms - self._playout.queued_s() * 1000.0)
        stopped = await self._speaking.stop()
        assert stopped is not None
        failed, cut = stopped.failed, stopped.cut
        if cut:
            await self._out.clear(wire=utt.sent_ms > 0)
        # The caller went on before their turn was even recorded (we were transcribing
        # it, or holding it for the rest of the sentence): it joins what they say next.
        merged = (
            cut and failed is None and self._ending.reason is None and utt.turn is not None
            and utt.user_sequence is None and not why
        )  # fmt: skip
        if not merged:
            await self._pipeline.commit_user(utt)  # heard, even if never answered
        if failed is not None:
            self._apply(ending_for_error(failed, self._config))
        if utt.segments:
            await self._pipeline.record(utt, interrupted=cut, played_ms=played_ms)
        elif utt.kind == "reply" and not cut and utt.phase == "llm":
            logger.warning("call %s: empty LLM reply, listening again", self._call_id,
                           extra=self._log_extra)  # fmt: skip
        notice = ""
        if not cut and failed is None and self._ending.reason is None:
            outcome = await self._actions.carry_out(utt)
            if outcome.hang_up:
                self._end(EndReason.AGENT_HANGUP)
            elif outcome.transferred_to:
                self._transferred(outcome.transferred_to)
            notice = outcome.notice
        # A recorded user turn that heard nothing back. A barge-in before any audio is
        # not one: the caller went on, and the next reply answers both.
        barge_in = interrupt and self._ending.reason is None and not why
        if utt.user_sequence is not None and not utt.segments and not barge_in:
            reason = why or (
                f"engine failure: {failed}" if failed is not None
                else f"call ended ({self._ending.reason}) before the reply" if cut
                else "empty reply"
            )  # fmt: skip
            logger.warning("call %s: user turn %d got no reply: %s", self._call_id,
                           utt.user_sequence, reason, extra=self._log_extra)  # fmt: skip
            self._transcript.unanswered(utt.user_sequence, reason)
        if self._ending.reason is None:
            self._idle.touch(self._clock())
            await self._out.set_state("listening")
            self._listener.utterance_ended(dropped_turn=utt.turn if merged else None)
            if notice:
                self._speaking.start("notice", text=notice)
            self._answer_pending()

    def _transferred(self, destination: str) -> None:
        if self._ending.transferred(destination):
            self._events.put_nowait(_Wake())

    def _apply(self, ending: Ending) -> None:
        self._out.dead = self._out.dead or ending.transport_dead
        if self._ending.apply(ending):
            self._events.put_nowait(_Wake())

    # --- heartbeat -------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.HEARTBEAT_S)
            self._recorder_q.put("heartbeat", self._recorder.heartbeat, retry=False)

    # --- shutdown -------------------------------------------------------------------------------

    async def _shutdown(self, *, speak: bool) -> None:
        reason = self._ending.reason or EndReason.ERROR
        self._closed = True
        await cancel_all(self._input_task, self._heartbeat_task)
        await self._listener.close()
        await self._finish_utterance(interrupt=True)  # (if one is in progress)
        say = self._ending.say
        if speak and say and not self._out.dead and not self._ending.tts_failed:
            kind = "apology" if reason is EndReason.ERROR else "goodbye"
            await self._speaking.say_final(kind, say)
        await self._out.close(str(reason))
        if self._recording is not None:
            # The file is complete (the owner stores it), or goes on being finished.
            await self._recording.close(wait_s=self.RECORDER_FLUSH_WAIT_S)
        await self._speaking.drain()  # utterances stuck past their cancellation
        await self._tools.aclose()
        metrics = self._stats.summary(self._clock() - self._clocks.t0)
        if (flow := self._tools.summary()) is not None:  # a flow's path and values
            metrics["flow"] = flow
        metrics["audio_health"] = audio_health.summary(
            late_frames=self._playout.late_frames,
            max_agent_gap_s=self._playout.max_gap_s,
            inbound=self._inbound,
            loop_lag_p99_ms=await self._loop_lag.close(),
        )
        error = self._ending.error
        # Only when set: recorders written before transfers existed keep working.
        transferred = self._ending.transferred_to
        extra = {"transferred_to": transferred} if transferred else {}
        self._recorder_q.put(
            "call_ended",
            lambda: self._recorder.call_ended(reason=reason, error=error, metrics=metrics, **extra),
            describe=f"end reason {reason}",
        )
        # call_ended is the last write; a database outage keeps it retrying in the
        # background rather than holding up the socket (recorder_queue.py).
        await self._recorder_q.close(wait_s=self.RECORDER_FLUSH_WAIT_S)
        logger.info("call %s: session ended (%s) %s", self._call_id, reason, metrics,
                    extra=self._log_extra)  # fmt: skip

    def _wall(self, t: float) -> datetime:
        return self._wall0 + timedelta(seconds=t - self._clocks.t0)


def default_turn_model() -> ScoreFn | None:
    """Smart Turn, when its model file is installed (requirements-turn.txt)."""
    from orchestrator import smart_turn

    return smart_turn.score if smart_turn.available() else None
