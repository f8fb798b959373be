"""Turn-taking policy: what the caller's speech means while the agent talks or thinks.

The VAD (``orchestrator/vad.py``) says *that* the caller speaks; this decides what it
means: a real interruption (barge-in), a backchannel said over the agent ("mm-hm", a
cough) that must not become a turn, or a turn to answer. Turns that end while the agent
is still busy wait here and are answered together. No I/O: the session acts on the
decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from orchestrator.vad import TurnEvent


@dataclass(slots=True, kw_only=True)
class UserTurn:
    audio: bytes  # 16 kHz PCM16; empty for a DTMF-only turn
    started_at: float  # session clock
    speech_end_at: float | None
    detected_at: float | None = None  # when the end of turn was detected


class Verdict(Enum):
    TURN = "turn"  # a turn to answer (now, or when the agent is free)
    BACKCHANNEL = "backchannel"  # ignored: said over the agent, too short to interrupt


class TurnTaking:
    def __init__(self, *, barge_in_enabled: bool) -> None:
        self.barge_in_enabled = barge_in_enabled
        self.user_speaking = False
        self._started_at = 0.0
        self._overlapped = False  # started while agent audio was audible
        self._barged = False  # this speech interrupted the agent
        self._pending: list[UserTurn] = []

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def speech_started(self, event: TurnEvent, *, agent_audible: bool) -> None:
        self.user_speaking = True
        self._started_at = event.at - event.voiced_ms / 1000.0
        # Only speech over audible agent audio can be a backchannel; speech while the
        # agent is still thinking is the user going on, and is answered later.
        self._overlapped = agent_audible
        self._barged = False

    def should_interrupt(self, *, agent_interruptible: bool) -> bool:
        """Long enough speech (the VAD's barge-in threshold) over an interruptible agent."""
        if self.barge_in_enabled and agent_interruptible:
            self._barged = True
            return True
        return False

    def turn_ended(self, event: TurnEvent, *, agent_busy: bool) -> Verdict:
        self.user_speaking = False
        if self._overlapped and not self._barged and agent_busy and self.barge_in_enabled:
            return Verdict.BACKCHANNEL
        self._pending.append(
            UserTurn(
                audio=event.audio,
                started_at=self._started_at,
                speech_end_at=event.speech_end_at,
                detected_at=event.at,
            )
        )
        return Verdict.TURN

    def take_pending(self) -> UserTurn | None:
        """Every turn waiting for the agent, as one (they are answered together)."""
        if not self._pending:
            return None
        turns, self._pending = self._pending, []
        return UserTurn(
            audio=b"".join(t.audio for t in turns),
            started_at=turns[0].started_at,
            speech_end_at=turns[-1].speech_end_at,
            detected_at=turns[-1].detected_at,
        )
