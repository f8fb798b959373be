"""PCM16 helpers shared by the engines: WAV wrapping/parsing, whole-buffer resampling.

Engines work on mono little-endian PCM16 ``bytes``; these helpers are pure functions with
no I/O. Streaming resampling is ``orchestrator.audio.StreamResampler`` (one resampler for
the whole code base).
"""

from __future__ import annotations

import io
import struct
import wave

from orchestrator.audio import StreamResampler


def wav_bytes(pcm16: bytes, sample_rate: int) -> bytes:
    """Wrap mono PCM16 in an in-memory WAV file (what Whisper upload APIs expect)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm16)
    return buffer.getvalue()


def split_wav_header(data: bytes) -> tuple[int, int] | None:
    """Return ``(sample_rate, data_offset)`` of a PCM16 mono WAV header at the start of ``data``.

    Streamed WAVs (``espeak-ng --stdout``, some TTS servers) carry a placeholder length,
    so only the ``fmt `` chunk and the start of the ``data`` chunk are trusted. Returns
    ``None`` while ``data`` is too short to hold the whole header.
    """
    if len(data) < 12:
        return None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    offset = 12
    sample_rate = 0
    while True:
        if len(data) < offset + 8:
            return None
        chunk_id, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        if chunk_id == b"data":
            if not sample_rate:
                raise ValueError("WAV data chunk before fmt chunk")
            return sample_rate, offset + 8
        if len(data) < offset + 8 + size:
            return None
        if chunk_id == b"fmt ":
            fmt, channels, sample_rate = struct.unpack("<HHI", data[offset + 8 : offset + 16])
            bits = struct.unpack("<H", data[offset + 22 : offset + 24])[0]
            if fmt != 1 or channels != 1 or bits != 16:
                raise ValueError(f"unsupported WAV format {fmt}/{channels}ch/{bits}bit")
        offset += 8 + size + (size & 1)


def resample(pcm16: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole mono PCM16 buffer."""
    resampler = StreamResampler(in_rate, out_rate)
    return resampler.process(pcm16) + resampler.flush()


def language_code(language: str) -> str:
    """BCP-47 ``es-ES`` -> ISO-639-1 ``es`` (what Whisper APIs take)."""
    return language.split("-", 1)[0].split("_", 1)[0].lower()
