"""µ-law codec against known vectors and audioop; resampler round trips and chunk edges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from orchestrator.audio import (
    FrameSplitter,
    StreamResampler,
    frame_bytes,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def test_ulaw_known_vectors() -> None:
    # G.711: silence is 0xFF, full scale is 0x80 / 0x00, decode of 0x00 is -32124.
    assert pcm16_to_ulaw(np.array([0, 32767, -32768], "<i2").tobytes()) == bytes([0xFF, 0x80, 0x00])
    decoded = np.frombuffer(ulaw_to_pcm16(bytes([0xFF, 0x7F, 0x80, 0x00])), "<i2").tolist()
    assert decoded == [0, 0, 32124, -32124]


def test_ulaw_is_bit_exact_with_audioop_when_available() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in Python 3.13
    pcm = ALL_INT16.astype("<i2").tobytes()
    assert pcm16_to_ulaw(pcm) == audioop.lin2ulaw(pcm, 2)
    codes = bytes(range(256))
    assert ulaw_to_pcm16(codes) == audioop.ulaw2lin(codes, 2)


def test_ulaw_round_trip_error_is_bounded() -> None:
    pcm = ALL_INT16.astype("<i2").tobytes()
    back = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(pcm)), "<i2").astype(np.int64)
    x = ALL_INT16.astype(np.int64)
    err = np.abs(back - x)
    # logarithmic quantizer: small absolute error near zero, ~5% relative at most above
    assert err[np.abs(x) < 256].max() <= 12
    big = np.abs(x) >= 256
    assert (err[big] / np.abs(x[big])).max() < 0.052
    # decoding then re-encoding every code is the identity
    codes = bytes(range(256))
    assert ulaw_to_pcm16(pcm16_to_ulaw(ulaw_to_pcm16(codes))) == ulaw_to_pcm16(codes)


def _sine(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _snr_db(reference: np.ndarray, signal: np.ndarray) -> float:
    noise = reference.astype(np.float64) - signal.astype(np.float64)
    return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(np.sum(noise**2), 1e-9))


def _resample_in_frames(resampler: StreamResampler, pcm: bytes, frame: int) -> bytes:
    out = b"".join(resampler.process(pcm[i : i + frame]) for i in range(0, len(pcm), frame))
    return out + resampler.flush()


@pytest.mark.parametrize("high_rate", [16000, 24000])
def test_resampling_round_trip_through_8khz_keeps_the_signal(high_rate: int) -> None:
    original = _sine(high_rate, 1.0)
    down = _resample_in_frames(
        StreamResampler(high_rate, 8000), original.tobytes(), frame_bytes(high_rate)
    )
    up = _resample_in_frames(StreamResampler(8000, high_rate), down, frame_bytes(8000))
    back = np.frombuffer(up, "<i2")
    assert abs(len(back) - len(original)) <= 2
    n = min(len(back), len(original))
    # edges aside (filter warm-up), a 440 Hz tone survives 8 kHz with > 40 dB SNR
    middle = slice(n // 10, n - n // 10)
    assert _snr_db(original[:n][middle], back[:n][middle]) > 40


def test_streaming_resampler_has_no_seams_at_chunk_edges() -> None:
    pcm = _sine(8000, 0.5).tobytes()
    whole = _resample_in_frames(StreamResampler(8000, 16000), pcm, len(pcm))
    # odd chunk sizes, even splitting samples in two
    chunked = _resample_in_frames(StreamResampler(8000, 16000), pcm, 333)
    a, b = np.frombuffer(whole, "<i2"), np.frombuffer(chunked, "<i2")
    assert len(a) == len(b)
    # int16 rounding inside soxr differs by a few LSB; a seam would be hundreds
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 4


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (16000, 8000), (24000, 8000)])
def test_phone_rates_stream_every_20ms_chunk_without_buffering(in_rate: int, out_rate: int) -> None:
    # soxr's streaming mode would return nothing for several chunks, then ~100 ms at once
    resampler = StreamResampler(in_rate, out_rate)
    chunk = _sine(in_rate, 0.02).tobytes()
    sizes = [len(resampler.process(chunk)) for _ in range(10)]
    assert sizes[1:] == [frame_bytes(out_rate)] * 9


def test_same_rate_resampler_passes_through() -> None:
    r = StreamResampler(16000, 16000)
    assert r.process(b"\x01\x02\x03") + r.process(b"\x04") == b"\x01\x02\x03\x04"


def test_frame_splitter_cuts_exact_frames_and_pads_the_tail() -> None:
    splitter = FrameSplitter(frame_bytes(8000))
    assert frame_bytes(8000) == 320 and frame_bytes(16000) == 640
    frames = splitter.push(b"\x01" * 500) + splitter.push(b"\x02" * 300)
    assert [len(f) for f in frames] == [320, 320]
    tail = splitter.flush()
    assert tail is not None and len(tail) == 320 and tail.endswith(b"\x00" * 160)
    assert splitter.flush() is None
