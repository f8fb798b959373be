"""Audio helpers: G.711 µ-law codec, streaming resampler and 20 ms framing.

Pure functions on ``bytes``/numpy arrays, no ``audioop`` (removed in Python 3.13).
All PCM is 16-bit signed little-endian mono.
"""

from __future__ import annotations

import numpy as np
import soxr

FRAME_MS = 20

# µ-law segment bases, as in CCITT G.711 / CPython's audioop (see PROTOCOLS.md §3).
_ULAW_EXP = np.array([0, 132, 396, 924, 1980, 4092, 8316, 16764], np.int32)


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode G.711 µ-law bytes to PCM16LE; bit-exact with ``audioop.ulaw2lin(data, 2)``."""
    u = ~np.frombuffer(data, np.uint8).astype(np.int32) & 0xFF
    exponent = (u >> 4) & 7
    magnitude = _ULAW_EXP[exponent] + ((u & 0x0F) << (exponent + 3))
    return np.where(u & 0x80, -magnitude, magnitude).astype("<i2").tobytes()


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode PCM16LE to G.711 µ-law; bit-exact with ``audioop.lin2ulaw(data, 2)``."""
    x = np.frombuffer(data, "<i2").astype(np.int32) >> 2
    negative = x < 0
    v = np.minimum(np.where(negative, -x, x), 8159) + 33
    segment = np.floor(np.log2(v)).astype(np.int32) - 5
    clipped = np.minimum(segment, 7)
    u = np.where(segment > 7, 0x7F, (clipped << 4) | ((v >> (clipped + 1)) & 0x0F))
    return (u ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8).tobytes()


def frame_bytes(sample_rate: int, ms: int = FRAME_MS) -> int:
    """Bytes of PCM16 mono in ``ms`` milliseconds at ``sample_rate``."""
    return sample_rate * ms // 1000 * 2


def pcm16_duration_ms(data: bytes | bytearray, sample_rate: int) -> float:
    return len(data) / 2 / sample_rate * 1000.0


class StreamResampler:
    """One direction of one call's audio (e.g. carrier 8 kHz -> 16 kHz).

    Wraps ``soxr.ResampleStream`` so the filter history carries across chunk edges:
    resampling each 20 ms chunk on its own would click at every boundary. Keep one
    instance per call and direction; call :meth:`flush` at the end of a continuous
    stream (e.g. one synthesized sentence) to get the filter's tail out.
    """

    __slots__ = ("in_rate", "out_rate", "_stream", "_carry")

    def __init__(self, in_rate: int, out_rate: int, *, quality: str = "HQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        # Same rate: pass through, no filter delay.
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )
        # An odd byte left over when a chunk splits a sample in two.
        self._carry = b""

    def process(self, pcm16: bytes) -> bytes:
        """Resample a chunk of any length; output may lag input by the filter delay."""
        data = self._carry + pcm16
        usable = len(data) & ~1
        self._carry = data[usable:]
        if self._stream is None:
            return data[:usable]
        if usable == 0:
            return b""
        samples = np.frombuffer(data[:usable], "<i2")
        return self._stream.resample_chunk(samples).astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        """End of a continuous stream: emit the remaining samples and reset state."""
        self._carry = b""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, np.int16), last=True)
        self._stream.clear()
        return tail.astype("<i2", copy=False).tobytes()

    def clear(self) -> None:
        """Drop state without output (barge-in: the rest of the stream is discarded)."""
        self._carry = b""
        if self._stream is not None:
            self._stream.clear()


class FrameSplitter:
    """Cuts a byte stream into fixed-size frames, keeping the remainder for the next push."""

    __slots__ = ("size", "_buf")

    def __init__(self, size: int) -> None:
        if size <= 0 or size % 2:
            raise ValueError(f"frame size must be a positive even byte count, got {size}")
        self.size = size
        self._buf = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        self._buf += data
        n = len(self._buf) // self.size
        if n == 0:
            return []
        cut = n * self.size
        frames = [bytes(self._buf[i : i + self.size]) for i in range(0, cut, self.size)]
        del self._buf[:cut]
        return frames

    def flush(self) -> bytes | None:
        """The last partial frame padded with silence, or None if nothing is left."""
        if not self._buf:
            return None
        frame = bytes(self._buf) + b"\x00" * (self.size - len(self._buf))
        self._buf.clear()
        return frame

    def clear(self) -> None:
        self._buf.clear()
