"""Two of the call's clocks, kept out of the session's control loop: the caller's silence
between turns (one reprompt, then the call ends) and the watchdog on a reply that stops
making progress (the caller hears the busy message or the apology, never silence)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from orchestrator.reply import Utterance


@dataclass(slots=True)
class IdleTimer:
    """Silence since the last sign of the caller (speech, a key, the agent finishing)."""

    timeout_s: float
    reprompt: str
    last_activity: float = 0.0
    reprompted: bool = False

    def touch(self, now: float, *, new_turn: bool = False) -> None:
        """Activity now; ``new_turn`` (a finished turn, a key): the next silence may be
        reprompted again."""
        self.last_activity = now
        if new_turn:
            self.reprompted = False

    @property
    def deadline(self) -> float:
        return self.last_activity + self.timeout_s

    def due(self, now: float) -> Literal["reprompt", "end"] | None:
        """What the silence calls for now (only asked while the line is idle)."""
        if now < self.deadline:
            return None
        if not self.reprompted and self.reprompt:
            self.reprompted = True
            return "reprompt"
        return "end"


class ReplyWatchdog:
    """A reply with no progress (no first frame, or frames that stopped) for longer than
    the slowest engine step's budget plus ``MARGIN_S`` is stuck."""

    MARGIN_S = 2.0

    def __init__(self, budget_s: Callable[[str], float], *, paused: Callable[[], bool]) -> None:
        self._budget_s = budget_s  # per engine role: the reply pipeline's step budget
        self._paused = paused  # the playout is paused by the caller's speech

    def limit_s(self) -> float:
        return max(self._budget_s(role) for role in ("stt", "llm", "tts")) + self.MARGIN_S

    def watches(self, utt: Utterance) -> bool:
        """Not a reply held for the caller's next words or paused by them, nor one waiting
        for its tools (each bounded by its own timeout)."""
        return utt.phase not in ("held", "tool") and not self._paused()

    def deadline(self, utt: Utterance) -> float | None:
        return utt.progress_at + self.limit_s() if self.watches(utt) else None

    def stall(self, utt: Utterance, now: float) -> str:
        """Why ``utt`` is stuck, if it is ("" if not)."""
        deadline = self.deadline(utt)
        if deadline is None or now < deadline:
            return ""
        where = "before its first audio" if utt.first_frame_at is None else "mid-utterance"
        return f"reply stalled in {utt.phase} {where} for {now - utt.progress_at:.1f}s"
