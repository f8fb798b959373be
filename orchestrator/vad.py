"""Turn detection: a call's 16 kHz audio -> speech start, barge-in and end-of-turn events,
from the Silero VAD's window scores (``orchestrator/silero.py``) and the audio's energy.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from orchestrator.silero import QUIET_RMS, SAMPLE_RATE, WINDOW_BYTES, WINDOW_MS, WINDOW_SAMPLES


class TurnEventKind(StrEnum):
    # The first voiced window: maybe speech. Agent audio pauses here (the quickest quiet);
    # FALSE_START follows if it was only a click or a cough, SPEECH_STARTED if not.
    VOICE_ONSET = "voice_onset"
    FALSE_START = "false_start"
    SPEECH_STARTED = "speech_started"  # min_speech_ms of speech heard: a turn has begun
    BARGE_IN = "barge_in"  # the turn now holds barge_in_ms of speech: enough to cut the agent
    TURN_ENDED = "turn_ended"  # silence_timeout_ms of non-speech after the turn
    # Every progress_ms of audio within a turn: the utterance so far (partial transcripts).
    PROGRESS = "progress"


@dataclass(slots=True, kw_only=True)
class TurnEvent:
    kind: TurnEventKind
    at: float  # clock() when the event was detected
    voiced_ms: float  # speech (not silence) heard in this turn so far
    # TURN_ENDED: the utterance (pre-roll included, trailing silence trimmed) and the
    # clock() time the last speech window arrived: voice-to-voice starts there.
    # PROGRESS: the utterance so far.
    audio: bytes = b""
    speech_end_at: float = 0.0


class _State(StrEnum):
    IDLE = "idle"
    PENDING = "pending"  # speech heard, but less than min_speech_ms so far
    SPEECH = "speech"


class TurnDetector:
    """Turns a 16 kHz PCM16 stream into speech-start / barge-in / end-of-turn events.

    Durations are counted in audio time, not wall time, so feeding audio faster than
    real time (tests) gives the same turns; event timestamps use ``clock``.
    """

    # A pending burst is dropped after this much non-speech: a cough or click has no
    # follow-up, while real speech keeps coming within a syllable gap.
    PENDING_GAP_MS = 96.0
    # Trailing silence kept after the last speech window (STT likes a short tail;
    # the whole silence_timeout would only add upload and inference time).
    TAIL_MS = 160.0
    # The end-of-turn timer runs at sample resolution, not in whole 32 ms windows: within
    # the last voiced window, speech ends after the last 4 ms block louder than QUIET_RMS
    # (-40 dBFS), and the turn may end between windows once the samples not yet scored are
    # quiet too. Without this, the 32 ms window grid alone adds 0-32 ms to every reply.
    BLOCK_SAMPLES = 64
    QUIET_RMS = QUIET_RMS
    # A voice onset is also a window this loud (-30 dBFS, and 18 dB over the line's floor)
    # before the model calls it speech: Silero needs 100-300 ms on a soft or breathy
    # onset ("Excuse me"), energy 20-40 ms, and the agent must go quiet at once. Only a
    # pause hangs on it: the model still decides what is speech (FALSE_START if not).
    ONSET_RMS = 1000.0
    ONSET_OVER_FLOOR = 8.0
    ONSET_MAX_MS = 480.0  # loud but never speech for this long: not a voice (re-arms when quiet)

    def __init__(
        self,
        vad: Callable[[bytes], float],
        *,
        min_speech_ms: int,
        silence_timeout_ms: int,
        preroll_ms: int,
        barge_in_ms: int,
        threshold: float = 0.5,
        max_utterance_ms: int = 60_000,
        progress_ms: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._vad = vad
        self._min_speech_ms = float(min_speech_ms)
        self._silence_timeout_ms = float(silence_timeout_ms)
        self._barge_in_ms = float(barge_in_ms)
        self._start_threshold = threshold
        # Hysteresis as in Silero's own iterator: once in speech, stay there down to
        # threshold - 0.15 so a soft syllable does not count as silence.
        self._end_threshold = max(threshold - 0.15, 0.05)
        self._max_utterance_bytes = int(max_utterance_ms * SAMPLE_RATE / 1000) * 2
        self._progress_bytes = int(progress_ms * SAMPLE_RATE / 1000) * 2
        self._next_progress = 0
        self._clock = clock
        self._buf = bytearray()
        self._preroll: deque[bytes] = deque(maxlen=max(1, round(preroll_ms / WINDOW_MS)))
        self._state = _State.IDLE
        self._pending: list[bytes] = []
        self._utterance = bytearray()
        self._voiced_ms = 0.0
        self._gap_ms = 0.0
        self._speech_end_bytes = 0  # utterance length at the last speech window
        self._speech_end_at = 0.0
        self._speech_end_pos = 0  # stream position (samples) where speech last ended
        self._pos = 0  # samples scored so far (whole windows)
        self._barge_in_sent = False
        self._onset_ms: float | None = None  # an energy onset not yet confirmed by the model
        self._onset_quiet_ms = 0.0
        self._onset_armed = True

    @property
    def in_turn(self) -> bool:
        """A turn has started (SPEECH_STARTED sent) and has not ended yet."""
        return self._state is _State.SPEECH

    def feed(self, pcm16: bytes) -> list[TurnEvent]:
        """Events of the audio so far; each window is scored by calling the VAD."""
        events: list[TurnEvent] = []
        arrived = self._clock()
        for window in self._windows(pcm16):
            floor = self._line_floor()
            self._window(window, self._vad(window), floor, arrived, events)
        self._end_between_windows(events)
        return events

    async def feed_async(self, pcm16: bytes, *, behind: bool = False) -> list[TurnEvent]:
        """:meth:`feed` for the event loop: a VAD with an async ``score`` (SileroVad)
        scores windows in batches across calls; any other VAD is called as in ``feed``.
        ``behind``: more of the caller's audio is already waiting (no batch may wait)."""
        score = getattr(self._vad, "score", None)
        if score is None:
            return self.feed(pcm16)
        events: list[TurnEvent] = []
        windows = self._windows(pcm16)
        # The audio arrived now; a batch's wait must not make its speech seem to end later.
        arrived = self._clock()
        for n, window in enumerate(windows, 1):
            floor = self._line_floor()
            probability = await score(window, may_wait=not behind and n == len(windows))
            self._window(window, probability, floor, arrived, events)
        self._end_between_windows(events)
        return events

    def _windows(self, pcm16: bytes) -> list[bytes]:
        """The whole 32 ms windows buffered so far (the rest waits for more audio)."""
        self._buf += pcm16
        n = len(self._buf) // WINDOW_BYTES
        windows = [bytes(self._buf[i * WINDOW_BYTES : (i + 1) * WINDOW_BYTES]) for i in range(n)]
        del self._buf[: n * WINDOW_BYTES]
        return windows

    def _line_floor(self) -> float:
        """The line's noise floor before the next window; above -40 dBFS it is no floor but
        the quietest speech of a digitally silent line (only sound windows are tracked)."""
        floor = float(getattr(self._vad, "floor", 0.0))
        return floor if floor < self.QUIET_RMS else 0.0

    def _end_between_windows(self, events: list[TurnEvent]) -> None:
        if self._state is _State.SPEECH and self._buf and self._silence_done(len(self._buf) // 2):
            if self._loud_until(bytes(self._buf)) == 0:
                events.append(self._end_turn())

    def _silence_done(self, extra_samples: int = 0) -> bool:
        silence = self._pos + extra_samples - self._speech_end_pos
        return silence * 1000.0 / SAMPLE_RATE >= self._silence_timeout_ms

    def _loud_until(self, pcm16: bytes) -> int:
        """Samples up to the end of the last loud 4 ms block of ``pcm16`` (0: all quiet)."""
        blocks = len(pcm16) // (2 * self.BLOCK_SAMPLES)
        if blocks == 0:
            return 0
        x = np.frombuffer(pcm16, "<i2", count=blocks * self.BLOCK_SAMPLES).astype(np.float32)
        energy = np.einsum("ij,ij->i", *(x.reshape(blocks, self.BLOCK_SAMPLES),) * 2)
        loud = np.flatnonzero(energy > self.QUIET_RMS**2 * self.BLOCK_SAMPLES)
        return 0 if len(loud) == 0 else int(loud[-1] + 1) * self.BLOCK_SAMPLES

    def _mark_speech_end(self, window: bytes, arrived: float) -> None:
        """Speech was heard in ``window`` (the one at ``self._pos``): note where it ends."""
        loud_until = self._loud_until(window) or WINDOW_SAMPLES
        self._speech_end_pos = self._pos + loud_until
        # The window arrived when its last sample did; its speech ended that much earlier.
        self._speech_end_at = arrived - (WINDOW_SAMPLES - loud_until) / SAMPLE_RATE

    def reset(self) -> None:
        self._buf.clear()
        self._preroll.clear()
        self._onset_ms = None
        self._to_idle()

    def _to_idle(self) -> None:
        self._state = _State.IDLE
        self._pending = []
        self._utterance = bytearray()
        self._voiced_ms = 0.0
        self._gap_ms = 0.0
        self._speech_end_bytes = 0
        self._barge_in_sent = False

    def _window(
        self, window: bytes, probability: float, floor: float, arrived: float,
        events: list[TurnEvent],
    ) -> None:  # fmt: skip
        """One scored window (``arrived``: when its audio reached us; speech is dated by it)."""
        self._step(window, probability, floor, arrived, events)
        self._pos += WINDOW_SAMPLES

    def _step(
        self, window: bytes, probability: float, floor: float, arrived: float,
        events: list[TurnEvent],
    ) -> None:  # fmt: skip
        threshold = self._end_threshold if self._state is _State.SPEECH else self._start_threshold
        voiced = probability >= threshold
        if self._state is _State.IDLE:
            if not voiced:
                self._preroll.append(window)
                self._energy_onset(window, floor, events)
                return
            self._state = _State.PENDING
            self._pending = []
            self._voiced_ms = self._gap_ms = 0.0
            if self._onset_ms is None:
                events.append(self._event(TurnEventKind.VOICE_ONSET))
            self._onset_ms = None

        if self._state is _State.PENDING:
            self._pending.append(window)
            if voiced:
                self._voiced_ms += WINDOW_MS
                self._gap_ms = 0.0
                self._mark_speech_end(window, arrived)
            else:
                self._gap_ms += WINDOW_MS
            if self._voiced_ms >= self._min_speech_ms:
                self._state = _State.SPEECH
                self._utterance = bytearray(b"".join(self._preroll))
                self._utterance += b"".join(self._pending)
                trailing_gap = int(self._gap_ms / WINDOW_MS) * WINDOW_BYTES
                self._speech_end_bytes = len(self._utterance) - trailing_gap
                self._preroll.clear()
                self._pending = []
                self._next_progress = len(self._utterance) + self._progress_bytes
                events.append(self._event(TurnEventKind.SPEECH_STARTED))
                self._maybe_barge_in(events)
                return
            if self._gap_ms >= self.PENDING_GAP_MS:
                # Too short to be speech: the burst becomes part of the pre-roll history.
                self._preroll.extend(self._pending)
                self._to_idle()
                if self._loud_until(window):
                    # The line is not quiet: maybe the gap inside a word ("Ex-cuse").
                    # Still a possible voice: the energy onset rule decides.
                    self._onset_ms, self._onset_quiet_ms = 0.0, 0.0
                else:
                    events.append(self._event(TurnEventKind.FALSE_START))
            return

        # SPEECH
        self._utterance += window
        if self._progress_bytes and len(self._utterance) >= self._next_progress:
            self._next_progress = len(self._utterance) + self._progress_bytes
            progress = self._event(TurnEventKind.PROGRESS)
            progress.audio = bytes(self._utterance)
            events.append(progress)
        if voiced:
            self._voiced_ms += WINDOW_MS
            self._gap_ms = 0.0
            self._speech_end_bytes = len(self._utterance)
            self._mark_speech_end(window, arrived)
            self._maybe_barge_in(events)
        else:
            self._gap_ms += WINDOW_MS
        # A monologue (or endless noise) is cut at max_utterance_ms so memory stays bounded.
        too_long = len(self._utterance) >= self._max_utterance_bytes
        if not voiced:
            if self._loud_until(window):
                # Loud but not (yet) speech to the model: speech resuming after a pause, or
                # a loud line. Count whole windows, as the model sees them.
                ended = self._gap_ms >= self._silence_timeout_ms
            else:
                ended = self._silence_done(WINDOW_SAMPLES)
            if ended or too_long:
                events.append(self._end_turn())
        elif too_long:
            events.append(self._end_turn())

    def _energy_onset(self, window: bytes, floor: float, events: list[TurnEvent]) -> None:
        """IDLE, not (yet) speech to the model: a loud window is a voice onset."""
        x = np.frombuffer(window, "<i2").astype(np.float32)
        rms = float(np.sqrt(np.dot(x, x) / len(x)))
        loud = rms >= max(self.ONSET_RMS, floor * self.ONSET_OVER_FLOOR)
        if self._onset_ms is None:
            if loud and self._onset_armed:
                self._onset_ms, self._onset_quiet_ms = 0.0, 0.0
                events.append(self._event(TurnEventKind.VOICE_ONSET))
            elif not loud:
                self._onset_armed = True
            return
        self._onset_ms += WINDOW_MS
        # Hysteresis: once started, the voice goes on until the line is quiet again.
        quiet = rms < max(self.QUIET_RMS, floor * 2.0)
        self._onset_quiet_ms = self._onset_quiet_ms + WINDOW_MS if quiet else 0.0
        if self._onset_quiet_ms >= self.PENDING_GAP_MS or self._onset_ms >= self.ONSET_MAX_MS:
            # A click, a knock, a burst of noise: not a voice after all.
            self._onset_armed = not loud
            self._onset_ms = None
            events.append(self._event(TurnEventKind.FALSE_START))

    def _maybe_barge_in(self, events: list[TurnEvent]) -> None:
        if not self._barge_in_sent and self._voiced_ms >= self._barge_in_ms:
            self._barge_in_sent = True
            events.append(self._event(TurnEventKind.BARGE_IN))

    def _end_turn(self) -> TurnEvent:
        tail = int(self.TAIL_MS * SAMPLE_RATE / 1000) * 2
        audio = bytes(self._utterance[: self._speech_end_bytes + tail])
        event = TurnEvent(
            kind=TurnEventKind.TURN_ENDED,
            at=self._clock(),
            voiced_ms=self._voiced_ms,
            audio=audio,
            speech_end_at=self._speech_end_at,
        )
        self._to_idle()
        return event

    def _event(self, kind: TurnEventKind) -> TurnEvent:
        return TurnEvent(kind=kind, at=self._clock(), voiced_ms=self._voiced_ms)
