from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from orchestrator.audio import StreamResampler
from orchestrator.engines._pcm import (
    language_code,
    resample,
    split_wav_header,
    wav_bytes,
)


def test_wav_bytes_round_trips_pcm16():
    pcm = np.arange(-100, 100, dtype="<i2").tobytes()
    with wave.open(io.BytesIO(wav_bytes(pcm, 8000))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.readframes(wav.getnframes()) == pcm


def test_split_wav_header_ignores_placeholder_lengths_of_a_streamed_wav():
    header = bytearray(wav_bytes(b"", 22050))
    header[4:8] = header[40:44] = struct.pack("<I", 0x7FFFFFFF)  # what espeak-ng --stdout writes
    assert split_wav_header(bytes(header[:20])) is None  # not complete yet
    assert split_wav_header(bytes(header) + b"\x01\x02") == (22050, 44)


def test_split_wav_header_rejects_non_wav():
    with pytest.raises(ValueError):
        split_wav_header(b"ID3\x04" + b"\x00" * 40)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(22050, 8000), (24000, 16000), (16000, 16000)])
def test_resampler_keeps_duration_with_chunks_split_mid_sample(in_rate, out_rate):
    seconds = 1.0
    tone = (8000 * np.sin(2 * np.pi * 300 * np.arange(int(in_rate * seconds)) / in_rate)).astype(
        "<i2"
    )
    data = tone.tobytes()
    resampler = StreamResampler(in_rate, out_rate)

    out = b"".join(resampler.process(data[i : i + 1001]) for i in range(0, len(data), 1001))
    out += resampler.flush()

    assert len(out) % 2 == 0
    assert abs(len(out) // 2 - out_rate * seconds) <= 2
    if in_rate == out_rate:
        assert out == data
    else:
        assert abs(len(resample(data, in_rate, out_rate)) - len(out)) <= 4


@pytest.mark.parametrize(
    ("tag", "code"), [("es-ES", "es"), ("en", "en"), ("pt_BR", "pt"), ("EN-us", "en")]
)
def test_language_code_takes_the_primary_subtag(tag, code):
    assert language_code(tag) == code
