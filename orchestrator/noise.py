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
_ZEROS = bytes(FRAME_BYTES)

_logged: set[str] = set()


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
    its input unchanged (with whatever it still held).
    """

    def __init__(
        self, *, ns_level: int = DEFAULT_NS_LEVEL, high_pass: bool = True, call_id: str = ""
    ) -> None:
        self._call_id = call_id
        self._held = bytearray()  # less than one 10 ms frame, waiting for the rest
        self._frames = 0  # 10 ms frames processed: the dither sequence's position
        self._silent_run = 0  # silent input frames in a row, up to the last one processed
        self._processor: Any = None
        cls = _processor_class()
        if cls is None:
            return
        try:
            self._processor = cls(
                sample_rate=INPUT_SAMPLE_RATE,
                noise_suppression=True,
                ns_level=ns_level,
                high_pass_filter=high_pass,
            )
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
            logger.warning(
                "call %s: noise suppression failed, off for this call",
                self._call_id,
                exc_info=True,
                extra={"call_id": self._call_id},
            )
            self._processor = None
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
