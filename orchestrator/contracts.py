"""What a call session exchanges with the outside: the end reasons, the turns it reports,
the transport it speaks through and the recorder it reports to.

``calls/`` derives its Django choices from :class:`EndReason`, so there is one list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from orchestrator.config import CallConfig

INPUT_SAMPLE_RATE = 16000  # what consumers feed CallSession.push_audio()
UNTRANSCRIBED = "(speech not transcribed)"  # user turn text when STT failed


class EndReason(StrEnum):
    CALLER_HANGUP = "caller_hangup"
    AGENT_HANGUP = "agent_hangup"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    ERROR = "error"
    GLOBAL_STOP = "global_stop"
    SERVER_SHUTDOWN = "server_shutdown"
    ORPHANED = "orphaned"
    NOT_CONNECTED = "not_connected"  # the carrier never connected the call (busy, no answer)
    BUSY = "busy"  # we could not serve the call (overload), told the caller so
    TRANSFERRED = "transferred"  # handed to a person (transfer_call); the destination is kept
    VOICEMAIL = "voicemail"  # an answering machine took the outbound call


END_REASON_LABELS: dict[EndReason, str] = {
    EndReason.CALLER_HANGUP: "Caller hang-up",
    EndReason.AGENT_HANGUP: "Agent hang-up",
    EndReason.IDLE_TIMEOUT: "Idle timeout",
    EndReason.MAX_DURATION: "Max duration",
    EndReason.ERROR: "Error",
    EndReason.GLOBAL_STOP: "Global stop",
    EndReason.SERVER_SHUTDOWN: "Server shutdown",
    EndReason.ORPHANED: "Orphaned",
    EndReason.NOT_CONNECTED: "Not connected",
    EndReason.BUSY: "Busy (overloaded)",
    EndReason.TRANSFERRED: "Transferred",
    EndReason.VOICEMAIL: "Voicemail",
}


class CriticalCallError(Exception):
    """An engine failure ended the call; raised by ``CallSession.run()`` after the call
    was closed. The owner applies its global stop policy from it.

    ``reason`` is the failure as text ("llm: groq 401: invalid key"), ``role`` the engine
    role that failed (stt, llm, tts) and ``vendor`` the engine that failed (groq, azure,
    local...), for metrics labels and logs."""

    def __init__(self, reason: str, call_id: str, *, role: str = "", vendor: str = "") -> None:
        super().__init__(f"call {call_id}: {reason}")
        self.reason = reason
        self.call_id = call_id
        self.role = role
        self.vendor = vendor or "unknown"


@dataclass(slots=True, kw_only=True)
class TurnMetrics:
    stt_ms: float | None = None
    llm_ttft_ms: float | None = None
    # LLM request -> its first complete sentence (includes llm_ttft_ms): what TTS waits for.
    llm_first_sentence_ms: float | None = None
    tts_ttfb_ms: float | None = None
    voice_to_voice_ms: float | None = None  # end of user speech -> first agent frame sent
    # end of user speech -> end of turn decided (VAD pause + Smart Turn, or the timer)
    endpointing_ms: float | None = None
    # The end-of-turn decision (end_of_turn.py): why, the model's score, and the silence
    # waited before the reply went ahead (more than endpointing when the words held it).
    eot_reason: str | None = None  # model | words | max_silence | silence_timer | no_model | dtmf
    eot_score: float | None = None
    eot_wait_ms: float | None = None
    engines: dict[str, str] = field(default_factory=dict)  # role -> engine that served
    # Fallback switches made for this turn, e.g. "groq -> local: groq 500: ..."
    fallbacks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stt_ms": self.stt_ms,
            "llm_ttft_ms": self.llm_ttft_ms,
            "llm_first_sentence_ms": self.llm_first_sentence_ms,
            "tts_ttfb_ms": self.tts_ttfb_ms,
            "voice_to_voice_ms": self.voice_to_voice_ms,
            "endpointing_ms": self.endpointing_ms,
            "eot_reason": self.eot_reason,
            "eot_score": self.eot_score,
            "eot_wait_ms": self.eot_wait_ms,
            "engines": dict(self.engines),
            "fallbacks": list(self.fallbacks),
        }


@dataclass(slots=True, kw_only=True)
class ToolTurn:
    """What a ``tool`` turn stores: the call the LLM made and what came back."""

    name: str
    arguments: dict[str, Any] | str  # the parsed object, or the raw text if it was not JSON
    result: str
    status: str  # orchestrator.tools.ToolStatus
    latency_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arguments": self.arguments,
            "result": self.result,
            "status": self.status,
            "latency_ms": self.latency_ms,
        }


@dataclass(slots=True, kw_only=True)
class TurnRecord:
    role: str  # "user" | "assistant" | "tool"
    text: str
    started_at: datetime
    ended_at: datetime
    sequence: int = 0  # 1, 2, ... in the order spoken; assigned by the session, never reused
    interrupted: bool = False
    metrics: TurnMetrics | None = None
    tool: ToolTurn | None = None  # role "tool" only


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

    # Optional: ``async def transfer(self, destination: str) -> None`` hands the call to
    # ``destination`` (E.164 or SIP URI) at the carrier, raising on failure; transports
    # without it cannot transfer (the session tells the caller so).


class CallRecorder(Protocol):
    async def call_started(self, config: CallConfig) -> None: ...

    async def turn_recorded(self, turn: TurnRecord) -> None: ...

    async def turn_unanswered(self, *, sequence: int, reason: str) -> None:
        """The user turn ``sequence`` got no reply (engine failure, stall, the call ended
        while the agent was thinking)."""
        ...

    async def heartbeat(self) -> None: ...

    async def call_ended(
        self, *, reason: EndReason, error: str, metrics: dict[str, Any], transferred_to: str = ""
    ) -> None: ...
