"""The caller's side of the floor: speech segments assembled into turns, and overlaps.

The VAD (``orchestrator/vad.py``) says *that* the caller speaks and pauses; this keeps
what they said until it is a turn to answer:

- **segments** between pauses join into one turn until the end of turn is decided
  (``end_of_turn.py``): "I'd like to book a table for" + pause + "two people" is one
  turn. Turns that end while the agent is busy wait here too and are answered together;
- an **overlap** is speech that starts while the agent holds the floor (speaking, or
  working on a reply). The agent pauses at once; the overlap ends as a *backchannel*
  ("mm-hmm": the agent resumes, nothing is stored) or an *interruption* (more words, or
  ``barge_in_min_ms`` of speech: the reply is cancelled and the speech becomes a turn).

No I/O: the session acts on what this returns.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum

from orchestrator.end_of_turn import EotDecision
from orchestrator.turn_words import is_backchannel, words_of
from orchestrator.vad import TurnEvent


@dataclass(slots=True, kw_only=True)
class UserTurn:
    audio: bytes  # 16 kHz PCM16; empty for a DTMF-only turn
    started_at: float  # session clock
    speech_end_at: float | None
    detected_at: float | None = None  # when the end of turn was decided
    eot: EotDecision | None = None
    # Transcription of exactly ``audio``, started at the pause (transcriber.py).
    transcript: asyncio.Task[str] | None = None


class Outcome(Enum):
    UNDECIDED = "undecided"
    BACKCHANNEL = "backchannel"
    INTERRUPTION = "interruption"


@dataclass(slots=True, kw_only=True)
class Overlap:
    onset: float  # session clock: when the caller's speech began
    audible: bool  # agent audio was playing (not just a reply being prepared)
    segments: list[UserTurn] = field(default_factory=list)
    voiced_ms: float = 0.0  # over the finished segments
    heard: str = ""  # transcript of the segments, once classified
    quiet_ms: float | None = None  # onset -> agent audio paused

    @property
    def audio(self) -> bytes:
        return b"".join(s.audio for s in self.segments)


class TurnTaking:
    def __init__(
        self,
        *,
        barge_in_enabled: bool,
        barge_in_min_ms: int,
        language: str,
        backchannel_words: tuple[str, ...] = (),
    ) -> None:
        self.barge_in_enabled = barge_in_enabled
        self._barge_in_min_ms = float(barge_in_min_ms)
        self._language = language
        self._backchannels = backchannel_words
        self.user_speaking = False
        self._started_at = 0.0
        self._segments: list[UserTurn] = []
        self.overlap: Overlap | None = None

    # --- segments and turns ----------------------------------------------------------------

    @property
    def has_pending(self) -> bool:
        return bool(self._segments)

    def pending_audio(self) -> bytes:
        return b"".join(t.audio for t in self._segments)

    def speech_started(self, event: TurnEvent) -> None:
        self.user_speaking = True
        self._started_at = event.at - event.voiced_ms / 1000.0

    def segment_ended(self, event: TurnEvent) -> UserTurn:
        """The caller paused: the segment, to keep as part of a turn or of an overlap."""
        self.user_speaking = False
        return UserTurn(
            audio=event.audio,
            started_at=self._started_at,
            speech_end_at=event.speech_end_at,
            detected_at=event.at,
        )

    def add(self, segment: UserTurn) -> None:
        self._segments.append(segment)

    def put_back(self, turn: UserTurn) -> None:
        """A turn whose reply was dropped before it was recorded (the caller went on):
        it is joined with what follows."""
        turn.transcript = None
        self._segments.insert(0, turn)

    def pending_speech_end(self) -> float:
        return (self._segments[-1].speech_end_at or 0.0) if self._segments else 0.0

    def take_pending(
        self, eot: EotDecision | None = None, *, detected_at: float | None = None
    ) -> UserTurn | None:
        """Every segment waiting for the agent, as one turn."""
        if not self._segments:
            return None
        turns, self._segments = self._segments, []
        return UserTurn(
            audio=b"".join(t.audio for t in turns),
            started_at=turns[0].started_at,
            speech_end_at=turns[-1].speech_end_at,
            detected_at=detected_at if detected_at is not None else turns[-1].detected_at,
            eot=eot,
        )

    # --- overlaps ------------------------------------------------------------------------------

    def overlap_started(self, *, onset: float, audible: bool) -> Overlap:
        self.overlap = Overlap(onset=onset, audible=audible)
        return self.overlap

    def overlap_segment(self, segment: UserTurn, *, voiced_ms: float) -> Outcome:
        """A pause in the overlapping speech: long enough speech already interrupts."""
        assert self.overlap is not None
        self.overlap.segments.append(segment)
        self.overlap.voiced_ms += voiced_ms
        if self.overlap.voiced_ms >= self._barge_in_min_ms:
            return Outcome.INTERRUPTION
        return Outcome.UNDECIDED

    # Nobody says more than ~4.5 words a second; STT "hearing" a few fast words in a very
    # short overlap is a murmur it made words of (piper's "mm-hmm" comes back as "in a
    # month"). Kept narrow: the VAD's voiced time undercounts fluent speech, so longer
    # phrases ("Actually, make that six people") are never judged by their rate.
    MAX_WORDS_PER_S = 6.0
    # One word is never a murmur ("Wait." or "Stop." must interrupt); piper's "Mhm." comes
    # back as "and make sure" or "And make a check." from 400-500 ms of speech.
    MURMUR_WORDS = (2, 4)
    MURMUR_MAX_MS = 600.0

    def overlap_heard(self, text: str) -> Outcome:
        """The overlap's words: only acknowledgements resume the agent. Over a reply the
        caller has not heard yet, every word counts: they are going on with their turn."""
        assert self.overlap is not None
        self.overlap.heard = text
        if not self.overlap.audible:
            return Outcome.INTERRUPTION
        if is_backchannel(text, self._language, self._backchannels):
            return Outcome.BACKCHANNEL
        n, voiced_ms = len(words_of(text)), max(self.overlap.voiced_ms, 1.0)
        if (
            self.MURMUR_WORDS[0] <= n <= self.MURMUR_WORDS[1]
            and voiced_ms < self.MURMUR_MAX_MS
            and n / (voiced_ms / 1000.0) > self.MAX_WORDS_PER_S
        ):
            return Outcome.BACKCHANNEL
        return Outcome.INTERRUPTION

    def end_overlap(self, outcome: Outcome) -> Overlap | None:
        """Close the overlap; an interruption's speech starts the caller's next turn."""
        overlap, self.overlap = self.overlap, None
        if overlap is not None and outcome is Outcome.INTERRUPTION:
            self._segments.extend(overlap.segments)
        return overlap
