"""The call's clocks, kept out of the session's control loop: the caller's silence between
turns (one reprompt, then the call ends), the watchdog on a reply that stops making
progress (the caller hears the busy message or the apology, never silence), and
:class:`CallClocks`, which knows every deadline of a call and says which one is due; the
session acts on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from orchestrator.config import CallConfig
    from orchestrator.dtmf import DtmfDigits
    from orchestrator.listener import Listener
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


DueKind = Literal["max_duration", "answer_wait", "turn", "stall", "dtmf", "reprompt", "idle_end"]


@dataclass(slots=True, frozen=True)
class Due:
    """What the call's clocks call for now (``stall``: why the reply is stuck)."""

    kind: DueKind
    stall: str = ""


class CallClocks:
    """Every deadline of one call: its maximum length, the wait for an answering-machine
    verdict, the caller's pending turn, the reply watchdog, the DTMF entry and the idle
    silence. ``next_deadline`` tells the control loop how long it may wait for an event;
    ``due`` says what has come due, first match in the order of the checks, one per
    wake-up (``Listener.poll`` and ``IdleTimer.due`` move their own state when asked)."""

    def __init__(
        self,
        config: CallConfig,
        *,
        idle: IdleTimer,
        dtmf: DtmfDigits,
        watchdog: ReplyWatchdog,
        listener: Listener,
        current: Callable[[], Utterance | None],
    ) -> None:
        self._config = config
        self.idle = idle
        self._dtmf = dtmf
        self._watchdog = watchdog
        self._listener = listener
        self._current = current  # the agent's utterance in progress
        self.t0 = 0.0

    def start(self, now: float) -> None:
        self.t0 = now
        self.idle.touch(now)

    def idle_counting(self, *, answered: bool) -> bool:
        """The line is idle: nobody speaks, nothing is being answered or typed."""
        return (
            answered
            and self._current() is None
            and not self._listener.busy
            and not self._dtmf.pending
        )

    def next_deadline(self, now: float, *, answered: bool) -> float:
        deadlines = [self.t0 + self._config.max_call_seconds, now + 1.0]
        if self.idle_counting(answered=answered):
            deadlines.append(self.idle.deadline)
        if self._dtmf.deadline is not None:
            deadlines.append(self._dtmf.deadline)
        if (utt := self._current()) is not None:
            if (stuck_at := self._watchdog.deadline(utt)) is not None:
                deadlines.append(stuck_at)
        if (eot := self._listener.deadline()) is not None:
            deadlines.append(eot)
        if not answered:
            deadlines.append(self.t0 + self._config.answer_wait_s)
        return min(deadlines)

    def due(self, now: float, *, answered: bool) -> Due | None:
        if now >= self.t0 + self._config.max_call_seconds:
            return Due("max_duration")
        if not answered and now >= self.t0 + self._config.answer_wait_s:
            return Due("answer_wait")
        if self._listener.poll():
            return Due("turn")
        if (utt := self._current()) is not None:
            stall = self._watchdog.stall(utt, now)
            return Due("stall", stall) if stall else None
        if answered and not self._listener.turns.user_speaking and self._dtmf.due(now):
            return Due("dtmf")
        if self.idle_counting(answered=answered) and (silence := self.idle.due(now)):
            return Due("reprompt" if silence == "reprompt" else "idle_end")
        return None
