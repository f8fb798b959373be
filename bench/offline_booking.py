"""The keyless default taking a booking: 3-turn calls over the Twilio protocol, English and
Spanish, on the offline engines and the seeded demo profiles (what `make run` serves).

    .venv/bin/python -m bench.offline_booking --label after            # ~5 min on 2 cores
    .venv/bin/python -m bench.offline_booking --calls 1 --label smoke

A fresh daphne (``bench.load.OursServer``: ``bench.settings``, a temporary SQLite
database) is seeded with ``manage.py seed_demo`` — the profiles a new user gets. English
uses the ``demo`` profile; Spanish the ``demo-es`` profile where the seed has one, else a
copy of ``demo`` in es-ES (so the script also runs on code that predates it). The caller
(``bench.load.TwilioCaller``: signed webhook, 20 ms µ-law frames on the wall clock, echoed
marks) says three booking lines in piper's voice (English) or SVOX Pico's (Spanish;
espeak-ng when ``pico2wave`` is not installed), trimmed to the speech itself.

Printed per language: every stored transcript (what the agent heard and said), voice-to-
voice per turn (end of the caller's speech -> first agent audio frame received) with
p50/p95, the offline post-call extraction of the last call (run with the local LLM after
the calls, ``EXTRACTION_OFFLINE_ENGINE=local-llm``) and the server's RSS once the models
are loaded. Writes ``bench/results/offline_booking-<label>.json``. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from bench.load import Clips, Endpoint, OursServer, machine_info, percentile, run_calls  # noqa: E402
from bench.turn_taking import LineAudio, _turns_since  # noqa: E402
from orchestrator.audio import StreamResampler  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LINES = {
    "en": [
        "Hi, I'd like to book a table for four people on Friday.",
        "At eight in the evening, please.",
        "My name is John Smith.",
    ],
    "es": [
        "Hola, quería reservar una mesa para cuatro personas el viernes.",
        "A las nueve de la noche, por favor.",
        "Me llamo Juan García.",
    ],
}
# Spanish profile for trees whose seed has none: the English demo, in Spanish.
_SPANISH_FALLBACK = """
from calls.models import AgentProfile
if not AgentProfile.objects.filter(slug="demo-es").exists():
    demo = AgentProfile.objects.get(slug="demo")
    demo.pk, demo.slug, demo.name, demo.is_default = None, "demo-es", "Demo (es)", False
    demo.language = "es-ES"
    demo.greeting = "Hola, le atiende Casa Lola. ¿En qué puedo ayudarle?"
    demo.system_prompt = ("Eres la recepcionista de Casa Lola, un restaurante. Ayudas a "
        "reservar mesa: pide el día, la hora, el número de personas y un nombre. "
        "Responde en una o dos frases cortas, en español.")
    demo.phone_numbers = ""
    demo.save()
    print("demo-es: created from demo (this tree's seed has no Spanish demo)")
"""


class SpanishLine(LineAudio):
    """Spanish caller speech: Pico (a real voice) when installed, else espeak-ng."""

    voice = "pico" if shutil.which("pico2wave") else "espeak-ng"

    def speech(self, text: str, length_scale: float = 1.0) -> list[str]:
        if self.voice == "pico":
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "es.wav"
                subprocess.run(["pico2wave", "-l", "es-ES", "-w", str(path), text], check=True)
                with wave.open(str(path)) as w:
                    resampler = StreamResampler(w.getframerate(), 8000)
                    pcm = resampler.process(w.readframes(w.getnframes())) + resampler.flush()
        else:
            from tests.speech import speech_pcm16

            pcm = speech_pcm16(text, rate=8000, voice="es")
        samples = np.frombuffer(pcm, "<i2").astype(np.float64)
        loud = np.flatnonzero(np.abs(samples) > 300)
        samples = samples[loud[0] : loud[-1] + 1]
        return self._frames(np.concatenate([samples, np.zeros(-len(samples) % 160)]))


class DemoServer(OursServer):
    def __init__(self, workdir: Path) -> None:
        super().__init__(script=None, workdir=workdir)  # type: ignore[arg-type]

    def prepare(self) -> None:
        env = self.env()
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "seed_demo"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "shell", "-c", _SPANISH_FALLBACK], cwd=ROOT, env=env, check=True)

    def endpoint_for(self, slug: str) -> Endpoint:
        return Endpoint(
            base=f"http://127.0.0.1:{self.port}",
            voice_path=f"/telephony/twilio/voice/?profile={slug}",
            auth_token=self.auth_token,
        )

    def calls_since(self, mark: int) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            db.row_factory = sqlite3.Row
            calls = db.execute(
                "SELECT DISTINCT c.id, c.end_reason FROM calls_call c JOIN calls_turn t "
                "ON t.call_id = c.id WHERE t.id > ? ORDER BY c.started_at",
                (mark,),
            ).fetchall()
            out = []
            for call in calls:
                turns = db.execute(
                    "SELECT role, text, interrupted, metrics FROM calls_turn WHERE call_id = ? "
                    "ORDER BY sequence",
                    (call["id"],),
                ).fetchall()
                out.append({"id": call["id"], "end_reason": call["end_reason"],
                            "turns": [dict(t) for t in turns]})  # fmt: skip
            return out

    def extract(self, call_id: str) -> dict[str, Any]:
        env = {**self.env(), "EXTRACTION_OFFLINE_ENGINE": "local-llm"}
        code = (
            "import time; from calls.tasks import extract_call; t = time.monotonic(); "
            f"extract_call.apply(args=[{str(call_id)!r}]).get(); "
            "print('extraction_s', round(time.monotonic() - t, 1))"
        )
        done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT,
                              env=env, capture_output=True, text=True, check=False)  # fmt: skip
        seconds = None
        for line in done.stdout.splitlines():
            if line.startswith("extraction_s"):
                seconds = float(line.split()[1])
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            row = db.execute(
                "SELECT extraction_status, extraction, extraction_error FROM calls_call "
                "WHERE id = ?", (call_id,),
            ).fetchone()  # fmt: skip
        stderr = done.stderr[-500:] if done.returncode else ""
        return {"status": row[0], "data": json.loads(row[1] or "null"), "error": row[2],
                "seconds": seconds, "stderr": stderr}  # fmt: skip


def rss_mb(proc: psutil.Process) -> float:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return round(total / 2**20, 1)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    print("caller speech ...", flush=True)
    lines = {"en": LineAudio(None), "es": SpanishLine(None)}
    clips = {
        lang: Clips(turns=[lines[lang].speech(t) for t in LINES[lang]], silence=lines[lang].silence)
        for lang in LINES
    }
    server = DemoServer(workdir)
    server.prepare()
    server.start()
    report: dict[str, Any] = {
        "machine": machine_info(),
        "label": args.label,
        "spanish_caller_voice": SpanishLine.voice,
        "languages": {},
    }
    try:
        from bench.turn_taking import TurnTakingServer

        ready_s = await TurnTakingServer.wait_ready(server)  # type: ignore[arg-type]
        proc = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        print(f"server ready in {ready_s:.1f} s, RSS {rss_mb(proc)} MB", flush=True)
        for lang, slug in (("en", "demo"), ("es", "demo-es")):
            endpoint = server.endpoint_for(slug)
            await run_calls(endpoint, n=1, turns=1, clips=clips[lang], ramp_s=0,
                            gap_s=args.gap_ms / 1000, turn_timeout=args.turn_timeout)  # fmt: skip
            mark = server.turn_mark()
            v2v: list[float] = []
            for i in range(args.calls):
                [result] = await run_calls(endpoint, n=1, turns=3, clips=clips[lang], ramp_s=0,
                                           gap_s=args.gap_ms / 1000,
                                           turn_timeout=args.turn_timeout)  # fmt: skip
                per_turn = [r.v2v_ms() for r in result.replies]
                v2v += [v for v in per_turn if v is not None]
                print(f"  {lang} call {i + 1}: v2v {[round(v) if v else None for v in per_turn]}"
                      f"{' errors: ' + '; '.join(result.errors) if result.errors else ''}",
                      flush=True)  # fmt: skip
            await asyncio.sleep(2.0)
            calls = server.calls_since(mark)
            stored = _turns_since(server, mark)  # type: ignore[arg-type]
            server_v2v = [
                v for t in stored
                if t["role"] == "assistant" and (v := t["metrics"].get("voice_to_voice_ms"))
            ]  # fmt: skip
            extraction = server.extract(calls[-1]["id"]) if calls else None
            report["languages"][lang] = {
                "profile": slug,
                "v2v_ms": {"p50": percentile(v2v, 50), "p95": percentile(v2v, 95),
                           "values": [round(v) for v in v2v]},  # fmt: skip
                "server_v2v_p50_ms": percentile(server_v2v, 50),
                "calls": calls,
                "extraction_last_call": extraction,
            }
        report["rss_mb"] = rss_mb(proc)
    finally:
        server.stop()
    return report


def print_report(report: dict[str, Any]) -> None:
    for lang, r in report["languages"].items():
        print(f"\n=== {lang} ({r['profile']}) — v2v p50 {r['v2v_ms']['p50']} ms, "
              f"p95 {r['v2v_ms']['p95']} ms (client clock); "
              f"server p50 {r['server_v2v_p50_ms']}")  # fmt: skip
        for call in r["calls"]:
            print(f"--- call {call['id'][:8]} ({call['end_reason'] or 'open'})")
            for t in call["turns"]:
                who = "A" if t["role"] == "assistant" else "U" if t["role"] == "user" else "T"
                cut = " [interrupted]" if t["interrupted"] else ""
                print(f"  {who}: {t['text']}{cut}")
        ex = r["extraction_last_call"] or {}
        print(f"extraction ({ex.get('status')}, {ex.get('seconds')} s): "
              f"{json.dumps(ex.get('data'), ensure_ascii=False)[:600]} "
              f"{ex.get('error') or ''}")  # fmt: skip
    print(f"\nserver RSS with the models loaded: {report.get('rss_mb')} MB; "
          f"Spanish caller voice: {report['spanish_caller_voice']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="run")
    parser.add_argument("--calls", type=int, default=2, help="3-turn calls per language")
    parser.add_argument("--gap-ms", type=int, default=600)
    parser.add_argument("--turn-timeout", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="offline-booking-") as tmp:
        report = asyncio.run(run(args, Path(tmp)))
    print_report(report)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"offline_booking-{args.label}.json"
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
