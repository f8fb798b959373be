"""Spanish offline TTS: SVOX Pico against espeak-ng (issue 19, part 3).

1. Synthesis time of one 6-8 s Spanish sentence at the phone rate (8 kHz), through the
   local TTS engine as a call uses it: time to the first chunk and to the last, p50/p95
   over ``--runs`` warm runs, for each voice.
2. Intelligibility after a phone line: ~10 Spanish booking sentences, each synthesized at
   8 kHz, through µ-law and back (the app's codec), then transcribed by the local Whisper
   base engine the app uses for Spanish (beam 5); word error rate per voice (numbers
   written as digits on both sides, punctuation and case ignored).

Prints the figures and writes ``bench/results/spanish_tts.json``.

    .venv/bin/python bench/spanish_tts.py [--runs 20] [--out bench/results/spanish_tts.json]

Needs ``pico2wave`` (Debian non-free ``libttspico-utils``) and espeak-ng; the Whisper base
weights come from ``requirements-local.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.audio import pcm16_to_ulaw, ulaw_to_pcm16  # noqa: E402
from orchestrator.config import CallConfig, EngineCredentials, EngineSpec  # noqa: E402
from orchestrator.engines import create_engine  # noqa: E402
from orchestrator.engines.local import LocalTTS  # noqa: E402
from orchestrator.engines.pico import pico_command  # noqa: E402
from tests.transcripts import word_error_rate  # noqa: E402

RATE = 8000
LANGUAGE = "es-ES"
TIMED = (  # 7-8 s spoken
    "Quería reservar una mesa para cuatro personas el viernes a las nueve de la noche, "
    "a nombre de Carmen Ruiz."
)
SENTENCES = (
    "Quería reservar una mesa para cuatro personas el viernes.",
    "Somos seis y llegaremos a las nueve de la noche.",
    "¿Tienen una mesa libre en la terraza para el sábado?",
    "Me llamo Carmen Ruiz y mi teléfono termina en cuarenta y dos.",
    "Necesito cancelar la reserva del domingo a mediodía.",
    "¿Podemos cambiar la hora a las ocho y media?",
    "Vamos a ser dos adultos y un niño pequeño.",
    "¿El restaurante abre los lunes por la noche?",
    "Perfecto, entonces confirmo la mesa para el jueves.",
    "Uno de nosotros es alérgico al marisco.",
)
NUMBERS = {
    "uno": "1", "un": "1", "una": "1", "dos": "2", "tres": "3", "cuatro": "4", "cinco": "5",
    "seis": "6", "siete": "7", "ocho": "8", "nueve": "9", "diez": "10", "once": "11",
    "doce": "12", "cuarenta": "40",
}  # fmt: skip
VOICES = {"pico": {}, "espeak-ng": {"voice": "espeak"}}


def normalized(text: str) -> str:
    """Number words as digits, "42" as "40 2" (Whisper writes either), no punctuation."""
    out: list[str] = []
    for word in re.findall(r"\w+", text.lower()):
        if word.isdigit() and len(word) == 2 and word[1] != "0" and int(word) > 20:
            out += [word[0] + "0", word[1]]
        elif word != "y" or not out or not out[-1].isdigit():
            out.append(NUMBERS.get(word, word))
    return " ".join(out)


def phone_line(pcm8: bytes) -> bytes:
    return ulaw_to_pcm16(pcm16_to_ulaw(pcm8))


async def speak(tts: LocalTTS, text: str) -> tuple[bytes, float, float]:
    """(pcm at 8 kHz, seconds to the first chunk, seconds to the end)."""
    start = time.perf_counter()
    first = 0.0
    chunks = []
    async for chunk in tts.synthesize(text, sample_rate=RATE, language=LANGUAGE):
        if not chunks:
            first = time.perf_counter() - start
        chunks.append(chunk)
    return b"".join(chunks), first, time.perf_counter() - start


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1)}


async def main(runs: int, out: Path) -> dict:
    if pico_command() is None:
        sys.exit("pico2wave is not installed (Debian non-free: libttspico-utils)")
    engines = {name: LocalTTS(language=LANGUAGE, **({"voice": ""} | spec)) for name, spec in
               VOICES.items()}  # fmt: skip
    assert engines["pico"].backend(LANGUAGE) == "pico"
    assert engines["espeak-ng"].backend(LANGUAGE) == "espeak"
    stt = create_engine(
        "stt", EngineSpec(engine="local"), EngineCredentials(), config=CallConfig(language=LANGUAGE)
    )
    await stt.warmup()

    result: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "rate_hz": RATE,
        "stt": "local Whisper base (faster-whisper int8, beam 5), after 8 kHz µ-law",
        "timing": {"sentence": TIMED, "runs": runs},
        "intelligibility": {},
    }
    print(f"Synthesis at {RATE} Hz, {runs} warm runs: {TIMED!r}")
    for name, tts in engines.items():
        await speak(tts, TIMED)  # warm: page in the language files
        firsts, totals, audio = [], [], b""
        for _ in range(runs):
            audio, first, total = await speak(tts, TIMED)
            firsts.append(first)
            totals.append(total)
        seconds = len(audio) / 2 / RATE
        figures = {
            "audio_s": round(seconds, 2),
            "first_chunk": percentiles(firsts),
            "whole": percentiles(totals),
        }
        result["timing"][name] = figures
        print(
            f"  {name:9s} {seconds:4.1f} s of audio: first chunk p50 "
            f"{figures['first_chunk']['p50_ms']} ms, whole p50 {figures['whole']['p50_ms']} ms"
            f" (p95 {figures['whole']['p95_ms']} ms)"
        )

    print(f"\nWhisper base on {len(SENTENCES)} booking sentences after 8 kHz µ-law:")
    for name, tts in engines.items():
        rows, errors, words = [], 0.0, 0
        for said in SENTENCES:
            pcm, _first, _total = await speak(tts, said)
            heard = await stt.transcribe(phone_line(pcm), sample_rate=RATE, language=LANGUAGE)
            ref, hyp = normalized(said), normalized(heard)
            wer = word_error_rate(ref, hyp)
            n = len(ref.split())
            errors += wer * n
            words += n
            rows.append({"said": said, "heard": heard.strip(), "wer": round(wer, 3)})
        total_wer = errors / words
        exact = sum(row["wer"] == 0 for row in rows)
        result["intelligibility"][name] = {
            "wer": round(total_wer, 3),
            "sentences_exact": exact,
            "words": words,
            "rows": rows,
        }
        print(f"  {name:9s} WER {total_wer:.1%} ({exact}/{len(rows)} sentences exact)")
        for row in rows:
            if row["wer"]:
                print(f"      {row['wer']:.2f}  {row['heard']!r}")
    close = getattr(stt, "aclose", None)
    if close is not None:
        await close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "spanish_tts.json"
    )
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.out))
