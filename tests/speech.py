"""Real speech fixtures made with espeak-ng + sox, cached per test session.

Speech matters for VAD and STT, so tests use real synthesized speech rather than
sine waves; files are cached under ``.pytest_cache/speech`` keyed by their inputs.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

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
