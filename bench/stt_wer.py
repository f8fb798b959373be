"""Word error rate of the local English STT on phone-quality speech: Whisper tiny.en (the
English default before Moonshine, now ``stt_model="whisper"``) against Moonshine tiny-en
(the default now).

    .venv/bin/python bench/stt_wer.py [--engines whisper,moonshine] [--out bench/results/stt_wer.json]

The set: the ``UTTERANCES`` below (fixed; bookings and support lines as callers say them),
each spoken by the app's piper voice (en_US "joe") at three speaking rates (piper
``length_scale`` 0.9, 1.0, 1.15), on two phone lines: ``clean`` (the speech alone) and
``noisy`` (white line noise at -50 dBFS RMS, with 0.3 s of it before and after the speech
as a VAD-cut turn has), each through 16 kHz -> 8 kHz -> µ-law -> 8 kHz -> 16 kHz
(``tests/speech.mulaw_roundtrip``) and transcribed at 16 kHz as the session does, through
the real local engine (``create_engine("stt", local)``: same model, thread and decoding
options as a call, no prompt). Synthesis is cached (``.pytest_cache/speech``), the noise
seeded, so every run hears the same audio.

WER = (substitutions + deletions + insertions) / words said, summed over the set, after
the same normalisation of what was said and what was heard (:func:`normalise`): lower
case, punctuation and apostrophes dropped, numbers as words ("4" -> "four", "8:30" and
"8.30" -> "eight thirty", "5th" -> "fifth", runs of 3+ digits digit by digit as phone and
order numbers are said), "p.m." -> "pm", "to-night" -> "tonight". Latency: wall time of
``transcribe`` per utterance, warm (each engine is warmed up first), one utterance at a
time (CPU: the process's CPU time during it, all threads); RSS: the process's resident
memory added by loading the model (the first engine loaded also pays for shared
libraries). Not part of the test suite.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec  # noqa: E402
from orchestrator.engines import create_engine  # noqa: E402
from tests.speech import line_noise_pcm16, mulaw_roundtrip, piper_pcm16  # noqa: E402
from tests.transcripts import word_error_rate, words  # noqa: E402

RATE = 16000
LANGUAGE = "en-US"
# Profile ``stt_model`` values of the local engine (orchestrator/engines/local.py).
ENGINES = {"whisper": "whisper", "moonshine": "moonshine"}
LENGTH_SCALES = (0.9, 1.0, 1.15)  # piper speaking rates: every utterance at each
LINES = {"clean": None, "noisy": -50.0}  # line noise, dBFS RMS
LINE_PAD_MS = 300

UTTERANCES = (
    "Hi, I would like to book a table for four people on Friday.",
    "At eight in the evening, please.",
    "My name is John Smith.",
    "Do you have anything available tomorrow at seven thirty?",
    "Can I change my reservation from Saturday to Sunday?",
    "I need to cancel my booking for tonight.",
    "It's for two adults and three children.",
    "Is there parking near the restaurant?",
    "Could you tell me your opening hours on Monday?",
    "My phone number is five five five, one two three four.",
    "I'm calling about my order number four seven two nine.",
    "The delivery hasn't arrived yet.",
    "I was charged twice on my credit card.",
    "Can I speak to a manager, please?",
    "We'd like a table by the window if possible.",
    "One of our guests is allergic to nuts.",
    "Yes, that's correct.",
    "No, thank you, that's all.",
    "Can you send me a confirmation by email?",
    "I'd like to make an appointment for a haircut next Wednesday.",
    "Is it possible to come a bit earlier, around six?",
    "The booking is under the name Garcia.",
    "How much is the set menu for a group of twelve?",
    "Sorry, could you repeat that?",
)

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def _cardinal(n: int) -> str:
    if n < 20:
        return _UNITS[n]
    tens, unit = divmod(n, 10)
    return _TENS[tens] + (f" {_UNITS[unit]}" if unit else "")


def _ordinal(n: int) -> str:
    *head, last = _cardinal(n).split()
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _number(digits: str) -> str:
    if len(digits) >= 3:  # phone and order numbers are said digit by digit
        return " ".join(_UNITS[int(d)] for d in digits)
    return _cardinal(int(digits))


def normalise(text: str) -> str:
    """What was said and what was heard, made comparable (see the module docstring)."""
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"\b([ap])\.?\s?m\b\.?", r"\1m", text)  # p.m. / p m / pm -> pm
    text = re.sub(
        r"\b(\d{1,2})[:.](\d{2})\b",  # 8:30, 8.30
        lambda m: _cardinal(int(m[1])) + ("" if m[2] == "00" else f" {_number(m[2])}"),
        text,
    )
    text = re.sub(r"\b(\d{1,2})(st|nd|rd|th)\b", lambda m: _ordinal(int(m[1])), text)
    text = re.sub(r"\d+", lambda m: f" {_number(m[0])} ", text)
    text = re.sub(r"\bto-(morrow|night|day)\b", r"to\1", text)
    text = re.sub(r"'", "", text)  # we'd -> wed: one word, as said
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def phone_audio(text: str, *, length_scale: float, noise_dbfs: float | None, seed: int) -> bytes:
    pcm = piper_pcm16(text, rate=RATE, length_scale=length_scale)
    if noise_dbfs is not None:
        pad = b"\x00\x00" * (RATE * LINE_PAD_MS // 1000)
        speech = np.frombuffer(pad + pcm + pad, "<i2").astype(np.int32)
        noise = np.frombuffer(
            line_noise_pcm16(len(speech) * 1000 // RATE, noise_dbfs, rate=RATE, seed=seed), "<i2"
        )
        size = min(len(speech), len(noise))
        pcm = np.clip(speech[:size] + noise[:size], -32768, 32767).astype("<i2").tobytes()
    return mulaw_roundtrip(pcm)


def test_set() -> list[dict]:
    """Every utterance at every speaking rate on every line: said, line, rate, audio."""
    items = []
    for line, noise in LINES.items():
        for scale in LENGTH_SCALES:
            for said in UTTERANCES:
                seed = len(items)
                audio = phone_audio(said, length_scale=scale, noise_dbfs=noise, seed=seed)
                items.append({"said": said, "line": line, "length_scale": scale, "pcm": audio})
    return items


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_engine(name: str, items: list[dict]) -> dict:
    engine = create_engine(
        "stt",
        EngineSpec(engine="local", model=ENGINES[name]),
        EngineCredentials(),
        config=CallConfig(language=LANGUAGE),
    )
    rss_before = _rss_mb()
    started = time.perf_counter()
    await engine.warmup()  # load + one inference
    warm_s = time.perf_counter() - started
    rss_after = _rss_mb()
    rows = []
    for item in items:
        said, pcm = item["said"], item["pcm"]
        started, cpu_started = time.perf_counter(), time.process_time()
        heard = await engine.transcribe(pcm, sample_rate=RATE, language=LANGUAGE)
        elapsed_ms = (time.perf_counter() - started) * 1000
        cpu_ms = (time.process_time() - cpu_started) * 1000  # all threads: one job at a time
        ref, hyp = normalise(said), normalise(heard)
        wer = word_error_rate(ref, hyp)
        rows.append(
            {
                "said": said,
                "line": item["line"],
                "length_scale": item["length_scale"],
                "heard": heard,
                "errors": round(wer * len(words(ref))),
                "words": len(words(ref)),
                "wer": round(wer, 3),
                "ms": round(elapsed_ms, 1),
                "cpu_ms": round(cpu_ms, 1),
                "audio_s": round(len(pcm) / 2 / RATE, 2),
            }
        )
    latencies = [r["ms"] for r in rows]
    errors, said_words = sum(r["errors"] for r in rows), sum(r["words"] for r in rows)
    by_line = {
        line: round(
            sum(r["errors"] for r in rows if r["line"] == line)
            / sum(r["words"] for r in rows if r["line"] == line),
            4,
        )
        for line in LINES
    }
    return {
        "engine": name,
        "model": engine.model_label,
        "wer": round(errors / said_words, 4),
        "wer_by_line": by_line,
        "errors": errors,
        "words": said_words,
        "exact_utterances": sum(r["errors"] == 0 for r in rows),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "p50_ms": round(pct(latencies, 0.5), 1),
        "p95_ms": round(pct(latencies, 0.95), 1),
        "mean_cpu_ms": round(statistics.fmean(r["cpu_ms"] for r in rows), 1),
        "real_time_factor": round(
            sum(latencies) / 1000 / sum(r["audio_s"] for r in rows), 3
        ),
        "load_and_warmup_s": round(warm_s, 2),
        "rss_added_mb": round(rss_after - rss_before, 1),
        "utterances": rows,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="whisper,moonshine")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "stt_wer.json"))
    args = parser.parse_args()
    names = [n.strip() for n in args.engines.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; known: {sorted(ENGINES)}")

    items = test_set()
    print(
        f"{len(UTTERANCES)} sentences x {len(LENGTH_SCALES)} speaking rates x {len(LINES)} "
        f"lines = {len(items)} utterances, {sum(len(i['pcm']) for i in items) / 2 / RATE:.0f} s "
        f"of piper speech through 8 kHz µ-law, {LANGUAGE}"
    )
    results = [await run_engine(name, items) for name in names]

    print(f"\n{'engine':<10} {'model':<34} {'WER':>6} {'clean':>6} {'noisy':>6} {'exact':>7} "
          f"{'mean':>8} {'p50':>8} {'p95':>8} {'CPU':>7} {'RTF':>6} {'RSS+':>7}")  # fmt: skip
    for r in results:
        print(
            f"{r['engine']:<10} {r['model']:<34} {r['wer']:>6.1%} "
            f"{r['wer_by_line']['clean']:>6.1%} {r['wer_by_line']['noisy']:>6.1%} "
            f"{r['exact_utterances']:>3}/{len(items):<3} {r['mean_ms']:>6.0f}ms "
            f"{r['p50_ms']:>6.0f}ms {r['p95_ms']:>6.0f}ms {r['mean_cpu_ms']:>5.0f}ms "
            f"{r['real_time_factor']:>6.3f} "
            f"{r['rss_added_mb']:>5.0f}MB"
        )
    if len(results) > 1:
        print("\nWhere the engines differ:")
        for i, item in enumerate(items):
            heard = [r["utterances"][i] for r in results]
            if len({normalise(h["heard"]) for h in heard}) > 1:
                print(f"  said: {item['said']}  ({item['line']}, rate {item['length_scale']})")
                for r, h in zip(results, heard, strict=True):
                    print(f"    {r['engine']:<10} ({h['errors']} err) {h['heard']}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "language": LANGUAGE,
                "speech": "piper en_US-joe-medium, length_scale 0.9/1.0/1.15",
                "lines": {
                    "clean": "16k -> 8k mu-law -> 16k",
                    "noisy": f"white noise -50 dBFS RMS, {LINE_PAD_MS} ms before/after, "
                    "then 16k -> 8k mu-law -> 16k",
                },
                "engines": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    asyncio.run(main())
