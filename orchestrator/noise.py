"""Inbound clean-up of caller audio: WebRTC noise suppression and a high-pass filter.

``pywebrtc-audio`` wraps the WebRTC audio processing module (the NS, high-pass filter and
AGC that run in every browser). One :class:`InboundCleaner` per call, stateful: the noise
suppressor learns the line's noise over the first few hundred milliseconds and keeps
following it. It runs in the session's input task, before the VAD (``caller_audio.py``),
never in the socket's ``receive``: ~20 µs per 20 ms chunk, 0.1 % of one core (bench/noise.py).

What it does and does not do:

- noise suppression at level 1 (WebRTC's "12 dB"): mild on purpose. Aggressive suppression
  smears consonants and can raise Whisper's error rate; the aim is to keep steady line noise
  (hiss, hum, a fan) from reaching the VAD and the STT, not to make the line sound clean.
- high-pass filter (WebRTC's: -3 dB at 100 Hz, -12 dB at 50 Hz): DC, rumble, mains hum.
- no automatic gain control: AGC lifts a quiet line's noise in the pauses, exactly where
  the VAD decides whether a turn starts (measured: -60 dBFS line noise came out at
  -49 dBFS, and with NS on, -50 dBFS noise was back at -46 to -48 dBFS: the suppression
  undone), while ``vad.QUIET_RMS`` (-40 dBFS) and its line-noise floor assume the line's
  own level. Whisper normalises the level itself, so there is nothing to win.
- no echo cancellation: phone networks and browsers cancel acoustic echo already, and AEC
  would need our outbound audio as a time-aligned reference.

The library processes 10 ms frames and zero-pads a partial one (which would feed the
suppressor 10 ms of silence), so :meth:`InboundCleaner.process` keeps the remainder for
the next chunk: every sample that goes in comes out, less than 10 ms later (plus the
suppressor's own 6 ms delay inside the audio). With 20 ms carrier frames nothing is held.

Only lines that need it (:class:`LineGate`): most phone and browser lines are quiet (comfort
noise around -70..-55 dBFS, or digital silence), where the VAD's own quiet skip and Whisper
cope, and suppression would only spend CPU (~10 % of a loaded server's, bench/load.py with
py-spy). A call starts suppressed; 200 ms in a row under -50 dBFS switch it off; a steady
level over -50 dBFS for a second switches it back on for the rest of the call.

Nothing here may raise into the audio path: without the library, or if it fails, audio
passes through unchanged and the reason is logged once.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from orchestrator.contracts import INPUT_SAMPLE_RATE

logger = logging.getLogger(__name__)

FRAME_SAMPLES = INPUT_SAMPLE_RATE // 100  # WebRTC APM's 10 ms frame
FRAME_BYTES = FRAME_SAMPLES * 2
DEFAULT_NS_LEVEL = 1  # 0-3 = WebRTC's 6, 12, 18, 21 dB targets

# Digital silence (a 10 ms frame of exact zeros: a muted browser, a phone line's silence
# through our resampler) reaches the suppressor as +-1 LSB of dither (about -92 dBFS),
# the same fixed sequence for every call. On exact zeros WebRTC's noise estimate is
# degenerate and it then thins out soft speech until Silero no longer hears it: measured
# with espeak "It's for" on a silent 8 kHz µ-law line, no turn at all with NS on; with
# the dither, the same turns as without NS. The output of a frame reaches back over the
# two frames before it (96-sample delay, overlap-add): once three frames in a row were
# silent, the output is set back to exact zeros, so silence stays silence for the VAD's
# skip and for Whisper (which heard "for it." in a cleaned "for" with the dither left in).
_DITHER = np.random.default_rng(0).integers(-1, 2, (100, FRAME_SAMPLES), dtype=np.int16)
_SILENCE_REACH = 3  # frames
NS_DELAY = 96  # samples: the suppressor's output lags its input by this (overlap-add)
NS_DELAY_BYTES = NS_DELAY * 2
_ZEROS = bytes(FRAME_BYTES)

_logged: set[str] = set()

QUIET_LINE_RMS = 32768 * 10 ** (-50 / 20)  # -50 dBFS: 10 dB under the VAD's quiet skip
QUIET_FRAMES = 20  # 200 ms under it in a row: the line is quiet
NOISY_FRAMES = 100  # 1 s over it, steady: the line has become noisy
STEADY_SPREAD = 4.0  # max / min RMS (12 dB) within those frames: noise, not speech


class LineGate:
    """Whether a call's line needs noise suppression, decided per 10 ms frame of its input.

    On at the start (a noisy line is suppressed from its first frame). Off once the line
    has been under ``QUIET_LINE_RMS`` for ``QUIET_FRAMES`` in a row: there is no steady
    noise to remove. Back on, for good, after ``NOISY_FRAMES`` in a row over it within a
    12 dB spread: a fan or a TV started. Speech alone never turns it back on: its level
    swings far more than 12 dB within a second, and a quiet line's pauses fall under it.
    Either way every input sample comes out once, in order, 6 ms later (the suppressor's
    delay, which a passed-through line keeps too).
    """

    __slots__ = ("suppressing", "settled", "_run", "_low", "_high")

    def __init__(self) -> None:
        self.suppressing = True
        self.settled = False  # switched back on: stays on
        self._run = 0
        self._low = self._high = 0.0

    def step(self, rms: float) -> bool:
        if self.settled:
            return True
        if self.suppressing:
            self._run = self._run + 1 if rms < QUIET_LINE_RMS else 0
            if self._run >= QUIET_FRAMES:
                self.suppressing, self._run = False, 0
            return self.suppressing
        if rms < QUIET_LINE_RMS:
            self._run = 0
            return False
        if self._run == 0 or max(self._high, rms) > STEADY_SPREAD * min(self._low, rms):
            self._run, self._low, self._high = 1, rms, rms  # a new run starts here
        else:
            self._run += 1
            self._low, self._high = min(self._low, rms), max(self._high, rms)
        if self._run >= NOISY_FRAMES:
            self.suppressing = self.settled = True
        return self.suppressing


def _log_once(key: str, message: str, *args: object, exc_info: bool = False) -> None:
    if key not in _logged:
        _logged.add(key)
        logger.warning(message, *args, exc_info=exc_info)


@functools.cache
def _processor_class() -> Any:
    """``pywebrtc_audio.AudioProcessor``, or None (logged once) if it cannot be imported."""
    try:
        from pywebrtc_audio import AudioProcessor
    except ImportError as exc:  # a platform without a wheel: the calls go on, uncleaned
        _log_once("import", "noise suppression off: pywebrtc-audio unavailable (%s)", exc)
        return None
    return AudioProcessor


def available() -> bool:
    """Whether inbound noise suppression can run in this process."""
    return _processor_class() is not None


class InboundCleaner:
    """Noise suppression + high-pass over one call's 16 kHz mono PCM16, any chunk length.

    ``active`` is False when the library is missing or failed: ``process`` then returns
    its input unchanged (with whatever it still held). ``only_when_needed`` (the default)
    passes a quiet line's audio through unchanged (:class:`LineGate`); False suppresses
    every frame.
    """

    def __init__(
        self,
        *,
        ns_level: int = DEFAULT_NS_LEVEL,
        high_pass: bool = True,
        call_id: str = "",
        only_when_needed: bool = True,
    ) -> None:
        self._call_id = call_id
        self.gate = LineGate() if only_when_needed else None
        self._held = bytearray()  # less than one 10 ms frame, waiting for the rest
        self._frames = 0  # 10 ms frames processed: the dither sequence's position
        self._silent_run = 0  # silent input frames in a row, up to the last one processed
        self._processor: Any = None
        # The last NS_DELAY input samples: a quiet line's audio passes through delayed by
        # exactly the suppressor's own delay, so switching either way neither drops nor
        # repeats a sample (and the output never jumps 6 ms).
        self._tail = bytes(NS_DELAY_BYTES)
        self._stale = False  # audio passed by the suppressor: its inner state is old
        self._options = {"ns_level": ns_level, "high_pass_filter": high_pass}
        cls = _processor_class()
        if cls is None:
            return
        try:
            self._processor = self._build()
        except Exception:  # a bad build must not stop calls
            # The same failure would repeat for every call: say it once, and run uncleaned.
            _log_once(
                "init", "noise suppression off: pywebrtc-audio failed to start", exc_info=True
            )

    @property
    def active(self) -> bool:
        return self._processor is not None

    def process(self, pcm16: bytes) -> bytes:
        """Cleaned audio for ``pcm16``; whole 10 ms frames only, the rest is kept."""
        if self._processor is None:
            if not self._held:
                return pcm16
            out = bytes(self._held) + pcm16
            self._held.clear()
            return out
        self._held += pcm16
        whole = len(self._held) // FRAME_BYTES * FRAME_BYTES
        if whole == 0:
            return b""
        frames = bytes(self._held[:whole])
        del self._held[:whole]
        if self.gate is None:
            return self._suppress(frames)
        if self.gate.settled:  # on for good: no levels to measure on the hot path
            return self._through(frames, True)
        rows = np.frombuffer(frames, "<i2").reshape(-1, FRAME_SAMPLES).astype(np.float32)
        levels = np.sqrt(np.einsum("ij,ij->i", rows, rows) / FRAME_SAMPLES).tolist()
        gate, out, start = self.gate, [], 0
        was = gate.suppressing
        for i, rms in enumerate(levels):  # runs of frames with the same verdict
            now = gate.step(rms)
            if now != was:
                out.append(self._through(frames[start * FRAME_BYTES : i * FRAME_BYTES], was))
                start, was = i, now
                self._silent_run = 0  # (the frames passed through were never suppressed)
                logger.log(
                    logging.INFO if now else logging.DEBUG,
                    "call %s: noise suppression %s (line at %.0f dBFS)",
                    self._call_id,
                    "on: steady line noise" if now else "off: quiet line",
                    20 * np.log10(max(rms, 1.0) / 32768),
                    extra={"call_id": self._call_id},
                )
        out.append(self._through(frames[start * FRAME_BYTES :], was))
        return out[0] if len(out) == 1 else b"".join(out)

    def _through(self, frames: bytes, suppressing: bool) -> bytes:
        if not frames:
            return frames
        held = self._tail + frames
        self._tail = held[-NS_DELAY_BYTES:]
        if not suppressing or self._processor is None:
            self._stale = True
            return held[: len(frames)]  # delayed like the suppressor's output
        if not self._stale:
            return self._suppress(frames)
        # Back on after passing audio by: a fresh suppressor (the old one's 6 ms delay line
        # holds audio from before the pause), whose first NS_DELAY output samples, its
        # empty delay line, are the raw samples that precede these frames.
        self._stale = False
        try:
            self._processor = self._build()
        except Exception:  # a bad build must not stop calls
            self._give_up("failed to restart")
            return held[: len(frames)]
        cleaned = self._suppress(frames)
        return held[:NS_DELAY_BYTES] + cleaned[NS_DELAY_BYTES:]

    def _build(self) -> Any:
        return _processor_class()(
            sample_rate=INPUT_SAMPLE_RATE, noise_suppression=True, **self._options
        )

    def _give_up(self, what: str) -> None:
        """Off for the rest of the call (logged with the exception being handled)."""
        logger.warning("call %s: noise suppression %s, off for this call", self._call_id, what,
                       exc_info=True, extra={"call_id": self._call_id})  # fmt: skip
        self._processor = None

    def _suppress(self, frames: bytes) -> bytes:
        """Whole 10 ms frames through the suppressor."""
        whole = len(frames)
        rows = np.frombuffer(frames, "<i2").reshape(-1, FRAME_SAMPLES)
        # Digital silence by comparing bytes (a memcmp): numpy's any() per 10 ms row cost
        # 4x more, on every frame of every call.
        flags = [frames[i : i + FRAME_BYTES] == _ZEROS for i in range(0, whole, FRAME_BYTES)]
        any_silent = any(flags)
        silent = np.array(flags)
        first = self._frames
        self._frames += len(rows)
        if any_silent:
            rows = rows.copy()
            rows[silent] = _DITHER[(first + np.flatnonzero(silent)) % len(_DITHER)]
        try:
            out = self._processor.process(rows.ravel())
        except Exception:  # the caller's audio matters more than its cleaning
            self._give_up("failed")
            return frames
        if any_silent:
            out = out.reshape(-1, FRAME_SAMPLES)
            run = self._silent_run
            for i, is_silent in enumerate(silent):
                run = run + 1 if is_silent else 0
                if run >= _SILENCE_REACH:
                    out[i] = 0
            self._silent_run = run
        else:
            self._silent_run = 0
        return out.tobytes()
