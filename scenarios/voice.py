"""The caller's voice: lines spoken by the offline TTS (piper's ``joe`` for English,
espeak-ng for other languages), as the scenario's channel carries them in 20 ms frames
(a phone line: 8 kHz µ-law in base64; the browser: 16 kHz PCM16), with line noise at the
scenario's level.

The synthesis is the app's own local TTS engine (``orchestrator.engines.local.LocalTTS``),
so the caller needs nothing the offline agent does not already install. Lines are cached
per process: a repeated scenario speaks the same audio every time.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from orchestrator.audio import pcm16_to_ulaw
from orchestrator.engines._pcm import language_code
from scenarios.caller_line import Payload


@dataclass(frozen=True, slots=True)
class LineFormat:
    """How a channel carries the caller's voice: its rate, and one 20 ms frame of PCM16
    at that rate as the socket sends it."""

    rate: int
    encode: Callable[[bytes], Payload]

    @property
    def frame_samples(self) -> int:
        return self.rate // 50


PHONE = LineFormat(rate=8000, encode=lambda pcm: base64.b64encode(pcm16_to_ulaw(pcm)).decode())
WIDEBAND = LineFormat(rate=16000, encode=bytes)
LINE_FORMATS = {"twilio": PHONE, "telnyx": PHONE, "browser": WIDEBAND}

SPEECH_FLOOR = 300  # |sample| above this is speech: the TTS's leading/trailing silence is cut


def voice_for(language: str, voice: str) -> str:
    """The LocalTTS voice: the scenario's, else piper for English and espeak-ng otherwise
    (never Pico: the caller should not sound like the agent it calls)."""
    if voice:
        return voice
    return "joe" if language_code(language) == "en" else "espeak"


class CallerVoice:
    """Frames of speech and silence for one scenario's caller, in its line's format."""

    _cache: dict[tuple[str, str, int, str], np.ndarray] = {}  # (voice, lang, rate, text) -> PCM

    def __init__(
        self, *, language: str, voice: str, noise_dbfs: float | None, line: LineFormat = PHONE
    ) -> None:
        from orchestrator.engines.local import LocalTTS

        self.line = line
        self.language = language
        self.voice = voice_for(language, voice)
        self.noise_dbfs = noise_dbfs
        self._tts = LocalTTS(voice=self.voice, language=language)
        self._rng = np.random.default_rng(16)
        self.silence = self._frames(np.zeros(line.rate))  # one second, looped

    async def speech(self, text: str) -> list[Payload]:
        """``text`` spoken, trimmed so its first and last frames are speech."""
        key = (self.voice, self.language, self.line.rate, text)
        pcm = self._cache.get(key)
        if pcm is None:
            chunks = [
                chunk
                async for chunk in self._tts.synthesize(
                    text, sample_rate=self.line.rate, language=self.language
                )
            ]
            samples = np.frombuffer(b"".join(chunks), "<i2").astype(np.float64)
            loud = np.flatnonzero(np.abs(samples) > SPEECH_FLOOR)
            if not len(loud):
                raise RuntimeError(f"the caller's voice said nothing audible for {text!r}")
            pcm = samples[loud[0] : loud[-1] + 1]
            self._cache[key] = pcm
        size = self.line.frame_samples
        return self._frames(np.concatenate([pcm, np.zeros(-len(pcm) % size)]))

    def pause(self, seconds: float) -> list[Payload]:
        return self._frames(np.zeros(self.line.frame_samples * max(1, round(seconds / 0.02))))

    def _frames(self, samples: np.ndarray) -> list[Payload]:
        if self.noise_dbfs is not None:
            noise = self._rng.normal(0.0, 32768 * 10 ** (self.noise_dbfs / 20), len(samples))
            samples = samples + noise
        pcm = np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()
        size = self.line.frame_samples * 2  # PCM16
        return [self.line.encode(pcm[i : i + size]) for i in range(0, len(pcm), size)]
