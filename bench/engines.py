"""Per-engine latency on this machine: time to first result and per-utterance times.

    .venv/bin/python bench/engines.py [--runs 5] [--languages en-US es-ES] [--rate 8000]

Local engines always; Groq / OpenAI / Azure only when their keys are in the environment
(``GROQ_API_KEY``, ``OPENAI_API_KEY`` [+ ``OPENAI_BASE_URL``], ``AZURE_SPEECH_KEY`` +
``AZURE_SPEECH_REGION``; models/voices from the usual ``*_MODEL``/``*_VOICE`` variables).
The first ("cold") run includes loading the model; p50/p95 are over the warm runs.
Speech input is espeak-ng audio (tests/speech.py). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec  # noqa: E402
from orchestrator.engines import EngineError, create_engine  # noqa: E402
from tests.speech import speech_pcm16  # noqa: E402

PHRASES = {
    "en": ("I would like to book an appointment for Monday morning", "en-us"),
    "es": ("Quiero pedir una cita para el lunes por la mañana", "es"),
}
REPLIES = {
    "en": "Sure. I can book you in on Monday at nine. Does that work for you?",
    "es": "Claro. Le puedo dar cita el lunes a las nueve. ¿Le viene bien?",
}
QUESTIONS = {
    "en": (
        "You are the receptionist of a dental clinic. Answer briefly.",
        "Hi, can I book an appointment for tomorrow?",
    ),
    "es": (
        "Eres la recepcionista de una clínica dental. Responde breve.",
        "Hola, ¿puedo pedir cita para mañana?",
    ),
}


@dataclass
class Row:
    engine: str
    role: str
    language: str
    cold_first_ms: float = 0.0
    first_ms: list[float] = field(default_factory=list)  # time to first result, warm runs
    total_ms: list[float] = field(default_factory=list)  # whole utterance, warm runs
    sample: str = ""
    error: str = ""


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_stt(engine, row: Row, lang: str, language: str, runs: int, rate: int) -> None:
    text, voice = PHRASES[lang]
    pcm = speech_pcm16(text, rate=rate, voice=voice)
    for run in range(runs + 1):
        started = time.perf_counter()
        out = await engine.transcribe(pcm, sample_rate=rate, language=language)
        elapsed = (time.perf_counter() - started) * 1000
        if run == 0:
            row.cold_first_ms = elapsed
            row.sample = out
        else:
            row.first_ms.append(elapsed)
            row.total_ms.append(elapsed)


async def bench_llm(engine, row: Row, lang: str, runs: int) -> None:
    system, question = QUESTIONS[lang]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    for run in range(runs + 1):
        started = time.perf_counter()
        first = None
        text = ""
        async for delta in engine.stream(messages, temperature=0.6, max_tokens=60):
            first = first or time.perf_counter()
            text += delta
        end = time.perf_counter()
        first_ms = ((first or end) - started) * 1000
        if run == 0:
            row.cold_first_ms, row.sample = first_ms, text
        else:
            row.first_ms.append(first_ms)
            row.total_ms.append((end - started) * 1000)


async def bench_tts(engine, row: Row, lang: str, language: str, runs: int, rate: int) -> None:
    for run in range(runs + 1):
        started = time.perf_counter()
        first = None
        size = 0
        async for chunk in engine.synthesize(REPLIES[lang], sample_rate=rate, language=language):
            first = first or time.perf_counter()
            size += len(chunk)
        end = time.perf_counter()
        first_ms = ((first or end) - started) * 1000
        if run == 0:
            row.cold_first_ms, row.sample = (
                first_ms,
                f"{size / 2 / rate:.2f} s of audio at {rate} Hz",
            )
        else:
            row.first_ms.append(first_ms)
            row.total_ms.append((end - started) * 1000)


def cloud_specs() -> list[tuple[str, EngineSpec]]:
    specs: list[tuple[str, EngineSpec]] = []
    if os.environ.get("GROQ_API_KEY"):
        specs.append(("stt", EngineSpec(engine="groq")))
        if os.environ.get("GROQ_LLM_MODEL"):
            specs.append(("llm", EngineSpec(engine="groq")))
    if os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        for role, variable in (
            ("stt", "OPENAI_STT_MODEL"),
            ("llm", "OPENAI_LLM_MODEL"),
            ("tts", "OPENAI_TTS_MODEL"),
        ):
            if os.environ.get(variable):
                specs.append((role, EngineSpec(engine="openai")))
    if os.environ.get("AZURE_SPEECH_KEY") and os.environ.get("AZURE_SPEECH_VOICE"):
        specs.append(("tts", EngineSpec(engine="azure", voice=os.environ["AZURE_SPEECH_VOICE"])))
    return specs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="warm runs per engine (after one cold run)"
    )
    parser.add_argument("--languages", nargs="+", default=["en-US", "es-ES"])
    parser.add_argument(
        "--rate", type=int, default=8000, help="channel sample rate (8000 phone, 16000 browser)"
    )
    args = parser.parse_args()

    credentials = EngineCredentials(
        groq_api_key=os.environ.get("GROQ_API_KEY", ""),
        openai_api_key=os.environ.get("OPENAI_API_KEY", ""),
        openai_base_url=os.environ.get("OPENAI_BASE_URL", ""),
        azure_speech_key=os.environ.get("AZURE_SPEECH_KEY", ""),
        azure_speech_region=os.environ.get("AZURE_SPEECH_REGION", ""),
    )
    specs = [(role, EngineSpec(engine="local")) for role in ("stt", "llm", "tts")] + cloud_specs()
    rows: list[Row] = []
    for language in args.languages:
        lang = language.split("-")[0]
        config = CallConfig(
            language=language, channel="browser" if args.rate == 16000 else "twilio"
        )
        for role, spec in specs:
            row = Row(engine=spec.engine, role=role, language=language)
            rows.append(row)
            try:
                engine = create_engine(role, spec, credentials, config=config)
                if role == "stt":
                    await bench_stt(engine, row, lang, language, args.runs, args.rate)
                elif role == "llm":
                    await bench_llm(engine, row, lang, args.runs)
                else:
                    await bench_tts(engine, row, lang, language, args.runs, args.rate)
                if hasattr(engine, "aclose"):
                    await engine.aclose()
            except EngineError as error:
                row.error = str(error)

    print(
        f"\n{os.cpu_count()} CPUs, channel rate {args.rate} Hz, {args.runs} warm runs; times in ms"
    )
    print(
        f"{'engine':7} {'role':4} {'lang':6} {'cold 1st':>9} {'1st p50':>8} {'1st p95':>8} "
        f"{'total p50':>10} {'total p95':>10}  sample"
    )
    for row in rows:
        if row.error:
            print(f"{row.engine:7} {row.role:4} {row.language:6} ERROR {row.error}")
            continue
        print(
            f"{row.engine:7} {row.role:4} {row.language:6} {row.cold_first_ms:9.0f} "
            f"{statistics.median(row.first_ms):8.0f} {pct(row.first_ms, 0.95):8.0f} "
            f"{statistics.median(row.total_ms):10.0f} {pct(row.total_ms, 0.95):10.0f}"
            f"  {row.sample!r}"
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"\nCPU {usage.ru_utime + usage.ru_stime:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    asyncio.run(main())
