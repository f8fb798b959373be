"""Smart Turn v3.2 (orchestrator/smart_turn.py): what one end-of-turn decision costs.

For a few real utterances (piper, the app's voice, when installed; espeak-ng otherwise),
at 16 kHz and after a phone line (16 kHz -> 8 kHz -> µ-law -> 16 kHz with the app's own
codec and resampler), prints per inference:

- features and inference latency, p50/p90 (ms), measured separately on this thread;
- CPU per inference (features + inference), of the whole process: numpy's BLAS or ONNX
  Runtime waking helper threads would show here;
- the model load and its first inference (ONNX Runtime's first run is the slowest);
- the async path: ``score`` latency through the shared model thread, one call at a time;
- a burst: N scores at once against the bounded queue (how many ran, how many were
  answered None at once, and the wall time until the last answer).

Scores are printed for information only: synthetic voices read as "finished" whatever
the words, so they say little about the model on real callers.

Usage: ``python -m bench.smart_turn [--rounds 20] [--burst 12]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator import smart_turn  # noqa: E402
from orchestrator.smart_turn import SmartTurn, features  # noqa: E402
from tests.speech import (  # noqa: E402
    have_piper,
    have_speech_tools,
    mulaw_roundtrip,
    piper_pcm16,
    speech_pcm16,
)

UTTERANCES = [
    "I would like to book a table for two people tonight at eight.",
    "Could you tell me whether the",
    "Yes, that works for me.",
    "My account number is four five six, and",
    "Thank you, that is all I needed.",
]


def _speech(text: str) -> bytes:
    return piper_pcm16(text) if have_piper() else speech_pcm16(text)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000.0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(turn: SmartTurn, clips: list[bytes], rounds: int) -> dict[str, float]:
    feat_s: list[float] = []
    infer_s: list[float] = []
    cpu0 = time.process_time()  # the whole process: a library's helper threads count too
    for _ in range(rounds):
        for pcm in clips:
            t0 = time.perf_counter()
            f = features(pcm)
            t1 = time.perf_counter()
            turn.infer(f)
            t2 = time.perf_counter()
            feat_s.append(t1 - t0)
            infer_s.append(t2 - t1)
    cpu = time.process_time() - cpu0
    return {
        "n": len(feat_s),
        "feat_p50": _pct(feat_s, 50),
        "feat_p90": _pct(feat_s, 90),
        "inf_p50": _pct(infer_s, 50),
        "inf_p90": _pct(infer_s, 90),
        "cpu_ms": cpu / len(feat_s) * 1000.0,
    }


async def async_path(turn: SmartTurn, clips: list[bytes], rounds: int) -> list[float]:
    waits: list[float] = []
    for _ in range(rounds):
        for pcm in clips:
            t0 = time.perf_counter()
            await turn.score(pcm)
            waits.append(time.perf_counter() - t0)
    return waits


async def burst(turn: SmartTurn, clip: bytes, n: int) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(turn.score(clip) for _ in range(n)))
    wall = time.perf_counter() - t0
    return sum(r is not None for r in results), sum(r is None for r in results), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="passes over the utterances")
    parser.add_argument("--burst", type=int, default=12, help="scores submitted at once")
    args = parser.parse_args()
    if not smart_turn.available():
        sys.exit("Smart Turn model not installed: pip install --no-deps -r requirements-turn.txt")
    if not (have_piper() or have_speech_tools()):
        sys.exit("needs piper (requirements-local.txt) or espeak-ng + sox for the utterances")

    import onnxruntime

    voice = "piper" if have_piper() else "espeak-ng"
    wide = [_speech(t) for t in UTTERANCES]
    phone = [mulaw_roundtrip(pcm) for pcm in wide]
    print(
        f"{_cpu_model()}, {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.2f}, "
        f"onnxruntime {onnxruntime.__version__}, 1 intra-op thread; {voice} utterances "
        f"{min(len(p) for p in wide) / 32000:.1f}-{max(len(p) for p in wide) / 32000:.1f} s"
    )

    turn = SmartTurn()
    t0 = time.perf_counter()
    turn.load()
    t1 = time.perf_counter()
    turn.infer(features(wide[0]))
    t2 = time.perf_counter()
    print(
        f"load (sha256 + session) {1000 * (t1 - t0):.0f} ms, "
        f"first inference {1000 * (t2 - t1):.0f} ms"
    )

    print(
        f"\n{'audio':<10} {'n':>4} {'feat p50':>9} {'p90':>6} {'infer p50':>10} {'p90':>6} "
        f"{'CPU ms/inf':>11}"
    )
    for name, clips in (("16 kHz", wide), ("phone", phone)):
        r = measure(turn, clips, args.rounds)
        print(
            f"{name:<10} {r['n']:>4} {r['feat_p50']:>9.1f} {r['feat_p90']:>6.1f} "
            f"{r['inf_p50']:>10.1f} {r['inf_p90']:>6.1f} {r['cpu_ms']:>11.1f}"
        )

    print("\nscores (information only; synthetic voice):")
    for text, a, b in zip(UTTERANCES, wide, phone, strict=True):
        print(f"  16k {turn.infer(features(a)):.3f}  phone {turn.infer(features(b)):.3f}  {text!r}")

    async def run_async() -> None:
        waits = await async_path(turn, wide, max(1, args.rounds // 4))
        print(
            f"\nasync score (model thread, one at a time): p50 {_pct(waits, 50):.1f} ms, "
            f"p90 {_pct(waits, 90):.1f} ms"
        )
        ran, skipped, wall = await burst(turn, wide[0], args.burst)
        print(
            f"burst of {args.burst} at once (max_waiting={turn.max_waiting}): {ran} scored, "
            f"{skipped} answered None at once, last answer after {1000 * wall:.0f} ms"
        )

    asyncio.run(run_async())
    s = turn.stats()
    print(
        f"counters: inferences={s.inferences} skipped_busy={s.skipped_busy} "
        f"dropped={s.dropped} cpu/inference={1000 * s.cpu_s / max(1, s.inferences):.1f} ms"
    )


if __name__ == "__main__":
    main()
