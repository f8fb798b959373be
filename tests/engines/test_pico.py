"""SVOX Pico (``orchestrator/engines/pico.py``) and the local TTS's choice of voice.

Runs the real ``pico2wave`` (Debian non-free ``libttspico-utils``); skipped without it.
A hung pico is a tiny shell script given as the command, not a mock of our code.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import numpy as np
import psutil
import pytest

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError, create_engine
from orchestrator.engines.local import LocalTTS
from orchestrator.engines.pico import pico_language, pico_pcm, synthesize
from tests.speech import mulaw_roundtrip
from tests.transcripts import assert_heard

pytestmark = pytest.mark.skipif(
    shutil.which("pico2wave") is None,
    reason="pico2wave not installed (Debian non-free: apt-get install libttspico-utils)",
)

GREETING = "Hola, gracias por llamar. ¿En qué puedo ayudarle hoy?"
MISSING = "/nonexistent/bin/pico2wave"


def voiced_seconds(pcm: bytes, rate: int) -> float:
    """Duration of 20 ms frames louder than -40 dBFS."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    frame = rate // 50
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    return float((np.sqrt((frames**2).mean(axis=1)) > 0.01).sum()) / 50


def pico_children() -> list[psutil.Process]:
    """pico2wave processes this test process started, zombies included."""
    return [p for p in psutil.Process().children(recursive=True) if "pico" in p.name()]


async def speak(text: str, rate: int) -> bytes:
    return b"".join([c async for c in synthesize(text, sample_rate=rate, language="es-ES")])


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_pico_speaks_spanish_as_pcm16_at_the_requested_rate(rate):
    audio = await speak(GREETING, rate)

    assert len(audio) % 2 == 0
    assert 1.5 < len(audio) / 2 / rate < 6
    assert voiced_seconds(audio, rate) > 1.0


async def test_the_same_sentence_lasts_as_long_at_8_and_16_khz():
    at_8k, at_16k = await speak(GREETING, 8000), await speak(GREETING, 16000)

    assert abs(len(at_8k) / 2 / 8000 - len(at_16k) / 2 / 16000) < 0.01


async def test_pico_drops_the_header_it_appends_after_the_audio_on_a_pipe(tmp_path):
    chunks = [c async for c in pico_pcm(GREETING, language="es-ES", tmp_root=str(tmp_path))]
    pcm = b"".join(pcm for _rate, pcm in chunks)

    assert {rate for rate, _pcm in chunks} == {16000}
    assert b"RIFF" not in pcm[-64:]
    assert list(tmp_path.iterdir()) == []  # the private directory is gone


@pytest.mark.parametrize(
    ("language", "expected"),
    [("es-ES", "es-ES"), ("es-MX", "es-ES"), ("de-AT", "de-DE"), ("fr-CA", "fr-FR"),
     ("it-IT", "it-IT"), ("en-GB", "en-GB"), ("en-US", None), ("pt-BR", None)],
)  # fmt: skip
def test_pico_languages_follow_the_language_tag(language, expected):
    assert pico_language(language) == expected


async def test_a_barge_in_kills_pico_and_leaves_no_temporary_file(tmp_path):
    long_text = "Una frase bastante larga para llenar la tubería. " * 40
    first_chunk = asyncio.Event()

    async def caller_hears_the_agent() -> None:
        stream = pico_pcm(long_text, language="es-ES", tmp_root=str(tmp_path))
        async with contextlib.aclosing(stream) as chunks:
            async for _chunk in chunks:
                first_chunk.set()
                await asyncio.Event().wait()  # playing out; the caller interrupts here

    task = asyncio.create_task(caller_hears_the_agent())
    await first_chunk.wait()
    running = pico_children()  # blocked writing: ~60 s of audio does not fit in the pipe
    assert [p.status() for p in running] not in ([], [psutil.STATUS_ZOMBIE])

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert pico_children() == []  # killed and reaped: no zombie
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def hung_pico(tmp_path: Path) -> str:
    script = tmp_path / "bin" / "pico2wave"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nexec sleep 60\n")
    script.chmod(0o755)
    return str(script)


async def test_a_hung_pico_is_an_engine_error_and_is_killed(hung_pico, tmp_path):
    work = tmp_path / "work"
    work.mkdir()

    with pytest.raises(EngineError, match="produced nothing"):
        async for _chunk in pico_pcm(
            "Hola.", language="es-ES", command=hung_pico, timeout_s=0.2, tmp_root=str(work)
        ):
            pass

    assert [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"] == []
    assert list(work.iterdir()) == []


async def test_cancelling_while_pico_is_working_kills_it(hung_pico, tmp_path):
    started = asyncio.Event()

    async def synthesize_one() -> None:
        stream = pico_pcm("Hola.", language="es-ES", command=hung_pico, tmp_root=str(tmp_path))
        async with contextlib.aclosing(stream) as chunks:
            started.set()
            async for _chunk in chunks:
                pass

    task = asyncio.create_task(synthesize_one())
    await started.wait()
    while not [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"]:
        await asyncio.sleep(0.01)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert [p for p in psutil.Process().children(recursive=True) if p.name() == "sleep"] == []
    assert [p.name for p in tmp_path.iterdir()] == ["bin"]


def local_tts(language: str, **options: str) -> LocalTTS:
    return LocalTTS(language=language, **({"voice": ""} | options))


@pytest.mark.parametrize(
    ("language", "voice", "expected"),
    [("es-ES", "", "pico"), ("de-DE", "", "pico"), ("en-GB", "", "pico"),
     ("en-US", "", "piper"), ("en-US", "pico", "pico"), ("en-GB", "joe", "piper"),
     ("es-ES", "espeak", "espeak"), ("pt-BR", "", "espeak")],
)  # fmt: skip
def test_the_local_tts_picks_pico_where_it_has_the_language(language, voice, expected):
    assert local_tts(language, voice=voice).backend(language) == expected


@pytest.mark.parametrize(
    ("language", "expected"), [("es-ES", "espeak"), ("en-GB", "piper"), ("en-US", "piper")]
)
def test_without_pico_the_local_tts_falls_back_to_espeak_and_piper(language, expected):
    assert local_tts(language, pico_binary=MISSING).backend(language) == expected


async def test_without_pico_spanish_is_still_spoken_by_espeak():
    tts = local_tts("es-ES", pico_binary=MISSING)

    audio = b"".join(
        [c async for c in tts.synthesize(GREETING, sample_rate=8000, language="es-ES")]
    )

    assert tts.backend("es-ES") == "espeak"
    assert voiced_seconds(audio, 8000) > 1.0


async def test_the_local_engine_speaks_spanish_with_pico():
    engine = create_engine(
        "tts",
        EngineSpec(engine="local"),
        EngineCredentials(),
        config=CallConfig(language="es-ES"),
    )

    audio = b"".join(
        [c async for c in engine.synthesize(GREETING, sample_rate=8000, language="es-ES")]
    )

    assert engine.backend("es-ES") == "pico"
    assert 1.5 < len(audio) / 2 / 8000 < 6


@pytest.mark.slow
async def test_whisper_understands_pico_spanish_through_a_phone_line():
    said = "Quería reservar una mesa para cuatro personas el viernes."
    pcm = mulaw_roundtrip(await speak(said, 16000))
    stt = create_engine(
        "stt", EngineSpec(engine="local"), EngineCredentials(), config=CallConfig(language="es-ES")
    )

    heard = await stt.transcribe(pcm, sample_rate=16000, language="es-ES")

    # Seen on this machine: exact ("Quería reservar una mesa para cuatro personas el
    # viernes."); espeak-ng's version of it comes back as "que díame pervar una meta ...".
    assert_heard(
        heard, said, max_wer=0.35, at_least=2, of=frozenset({"mesa", "viernes", "reservar"})
    )
