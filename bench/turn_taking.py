"""Turn-taking over the real Twilio protocol: endpointing, v2v, backchannels, interruptions.

    .venv/bin/python -m bench.turn_taking --label after            # this tree, ~10 min on 2 cores
    .venv/bin/python -m bench.turn_taking --label before --turn-detection silence
    .venv/bin/python -m bench.turn_taking --calls 2 --backchannels 4 --interruptions 2 --label smoke

A fresh daphne (``bench.load.OursServer``: ``bench.settings``, a temporary SQLite
database, ``DEBUG=false``) serves two profiles on the **offline local engines**
(faster-whisper, the llama.cpp LLM, piper), English, both created through the ORM:
``bench-tt`` (short greeting) and ``bench-tt-long`` (a greeting of four sentences, so the
agent is reliably speaking when the caller talks over it). ``--turn-detection`` sets the
profile's ``turn_detection`` where the model has that field (it is ignored, and said so,
on code that predates it), so the same script measures the code before and after a change.

The caller is ``bench.load.TwilioCaller``: the signed voice webhook, then ``connected`` /
``start`` / 160-byte µ-law ``media`` frames on a 20 ms wall-clock schedule / echoed
``mark`` / ``stop``. Its speech is the app's piper voice (``tests/speech.py``), trimmed so
the last frame sent ends the speech, and its line carries white noise (-60 dBFS RMS,
``--line-noise-dbfs``). Calls run one at a time, after one warm-up call. Measured:

a. endpointing: the server's own ``endpointing_ms`` (its VAD's end of speech -> end of turn
   decided) from the stored turns of the voice-to-voice calls (complete turns only).
b. voice-to-voice: ``--calls`` calls of 3 booking turns on ``bench-tt``: end of the
   caller's speech (last speech frame sent) -> first agent ``media`` frame received.
c. backchannels (``--backchannels``, "mm-hmm", "yeah", ... some spoken slower): each its
   own call on ``bench-tt-long``, said ``--overlap-at-ms`` after the greeting's first frame.
   Per overlap: onset (first speech frame sent) -> ``clear`` received, if any, and ->
   **agent quiet**: the first ``clear`` or gap in playback after the onset, replaying what
   the carrier plays (an agent that pauses by not sending goes quiet when the carrier has
   played what it held); end of the backchannel -> agent audio again (the greeting
   resuming; on code that takes the backchannel for a turn, its reply); and from the
   database, user turns stored and
   whether the greeting was stored interrupted. **False interruption** = greeting stored
   interrupted, or a user turn stored, or agent audio paused and not back within
   ``--resume-within-ms`` (2 s) of the backchannel's end.
d. real interruptions (``--interruptions``, full sentences, same set-up): **detected** =
   greeting stored interrupted; agent quiet as above (target <= 250 ms).
e. server CPU seconds per call (psutil on daphne and its children, between calls).

Prints a table and writes ``bench/results/turn_taking-<label>.json`` (per-call rows too).
Run it from the repository root (``python -m bench.turn_taking``); ``--help`` lists the
counts, timings and the line noise.

Before/after on one machine: run the same command in a worktree of the older commit
with this file and ``tests/speech.py`` copied in (uncommitted), e.g.

    git worktree add /tmp/tt-before <commit>
    cp bench/turn_taking.py /tmp/tt-before/bench/ && cp tests/speech.py /tmp/tt-before/tests/
    cd /tmp/tt-before && PYTHONPATH=/tmp/tt-before /work/main/.venv/bin/python \\
        -m bench.turn_taking --label before --turn-detection silence

then ``--label after`` (``--turn-detection smart``) in this tree. One run at a time: the
figures are only comparable on an otherwise quiet machine. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from bench.load import (  # noqa: E402
    FRAME_BYTES,
    CallResult,
    Clips,
    Endpoint,
    OursServer,
    TwilioCaller,
    machine_info,
    parse_twiml,
    percentile,
    process_tree_usage,
    run_calls,
    webhook,
)
from orchestrator.audio import pcm16_to_ulaw  # noqa: E402
from tests.speech import line_noise_pcm16, piper_pcm16  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SHORT, LONG = "bench-tt", "bench-tt-long"
SYSTEM_PROMPT = (
    "You are the receptionist of Casa Lola, a restaurant. You take table bookings. "
    "Answer in one short sentence."
)
GREETING = "Hello, Casa Lola here. How can I help you?"
LONG_GREETING = (
    "Hello, and thank you for calling Casa Lola, the Italian restaurant on Main Street. "
    "We are open every day from noon until eleven in the evening. "
    "I can book a table for you, change or cancel a booking, or tell you about our menu. "
    "How can I help you today?"
)
BOOKING = [
    "Hi, I'd like to book a table for four people on Friday.",
    "At eight in the evening, please.",
    "My name is John Smith.",
]
# (text, piper length_scale): > 1 is spoken slower, as a drawn-out "mm-hmm" or "okay".
BACKCHANNELS = [
    ("Mm-hmm.", 1.0), ("Yeah.", 1.0), ("Okay.", 1.0), ("Right.", 1.0), ("Uh-huh.", 1.0),
    ("Yes.", 1.0), ("Sure.", 1.0), ("I see.", 1.0), ("Got it.", 1.0), ("Mhm.", 1.0),
    ("Mm-hmm.", 1.5), ("Yeah.", 1.5), ("Okay.", 1.5), ("Right.", 1.4), ("Uh-huh.", 1.4),
    ("Yes.", 1.4), ("Sure.", 1.4), ("I see.", 1.3), ("Got it.", 1.3), ("Okay, yeah.", 1.0),
]  # fmt: skip
INTERRUPTIONS = [
    "Wait, sorry, actually I need a table for four.",
    "No no, I said Friday, not Saturday.",
    "Hold on, can I change the time to nine?",
    "Sorry to interrupt, do you have parking?",
    "Actually, make that six people instead.",
    "Excuse me, I think I called the wrong number.",
    "Stop, I only want to cancel my booking.",
    "Wait a moment, is the terrace open tonight?",
    "Sorry, could you repeat the opening hours?",
    "No, I need the table for tomorrow evening.",
]


# --- caller audio ----------------------------------------------------------------------------


class LineAudio:
    """Base64 µ-law 20 ms payloads of piper speech on a line with white noise."""

    def __init__(self, noise_dbfs: float | None) -> None:
        self.noise_dbfs = noise_dbfs
        self._seed = 0
        self.silence = self._frames(np.zeros(FRAME_BYTES * 50))

    def speech(self, text: str, length_scale: float = 1.0) -> list[str]:
        pcm = np.frombuffer(piper_pcm16(text, rate=8000, length_scale=length_scale), "<i2").astype(
            np.float64
        )
        loud = np.flatnonzero(np.abs(pcm) > 300)
        if not len(loud):
            raise RuntimeError(f"piper said nothing audible for {text!r}")
        pcm = pcm[loud[0] : loud[-1] + 1]  # the first and last frames sent are speech
        return self._frames(np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_BYTES)]))

    def _frames(self, samples: np.ndarray) -> list[str]:
        if self.noise_dbfs is not None:
            self._seed += 1
            ms = len(samples) * 1000 // 8000
            noise = line_noise_pcm16(ms, self.noise_dbfs, rate=8000, seed=self._seed)
            samples = samples + np.frombuffer(noise, "<i2")[: len(samples)]
        pcm = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
        size = FRAME_BYTES * 2
        return [_b64(pcm16_to_ulaw(pcm[i : i + size])) for i in range(0, len(pcm), size)]


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


# --- the server ------------------------------------------------------------------------------


def profile_fields(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    common: dict[str, Any] = {
        "language": "en-US",
        "system_prompt": SYSTEM_PROMPT,
        "stt_engine": "local",
        "llm_engine": "local",
        "tts_engine": "local",
        "max_tokens": args.max_tokens,
        "idle_timeout_s": 60,
        "max_call_seconds": 600,
        "is_active": True,
    }
    if args.turn_detection:
        common["turn_detection"] = args.turn_detection
    return {
        SHORT: {**common, "name": "Bench turn-taking", "greeting": GREETING},
        LONG: {**common, "name": "Bench turn-taking (long greeting)", "greeting": LONG_GREETING},
    }


# Runs in ``manage.py shell``: fields the model of this tree lacks are left out (and said).
_CREATE_PROFILES = """
import json, os
from calls.models import AgentProfile
known = {f.name for f in AgentProfile._meta.get_fields()}
for slug, fields in json.loads(os.environ["BENCH_PROFILES"]).items():
    missing = sorted(set(fields) - known)
    if missing:
        print(f"profile {slug}: this tree has no field(s) {missing}: left at its behaviour")
    AgentProfile.objects.update_or_create(
        slug=slug, defaults={k: v for k, v in fields.items() if k in known})
"""


class TurnTakingServer(OursServer):
    """bench/load.py's daphne, with the local-engine profiles of this bench."""

    def __init__(self, workdir: Path, profiles: dict[str, dict[str, Any]]) -> None:
        super().__init__(script=None, workdir=workdir)  # type: ignore[arg-type]  # no scripted engines
        self.profiles = profiles

    def prepare(self) -> None:
        env = {**self.env(), "BENCH_PROFILES": json.dumps(self.profiles)}
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "shell", "-c", _CREATE_PROFILES], cwd=ROOT, env=env, check=True)

    def endpoint_for(self, slug: str) -> Endpoint:
        return Endpoint(
            base=f"http://127.0.0.1:{self.port}",
            voice_path=f"/telephony/twilio/voice/?profile={slug}",
            auth_token=self.auth_token,
        )

    async def wait_ready(self, timeout: float = 300.0) -> float:
        """Until ``/health/ready/`` (the start-up preload has warmed the local models)."""
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() - started < timeout:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{self.port}/health/ready/")).is_success:
                        return time.monotonic() - started
                await asyncio.sleep(0.2)
        raise RuntimeError(f"not ready after {timeout:.0f} s; see {self.log_path}")

    def turns(self, call_sid: str) -> list[dict[str, Any]]:
        """The stored turns of one call, in order."""
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT t.sequence, t.role, t.text, t.interrupted, t.metrics FROM calls_turn t "
                "JOIN calls_call c ON c.id = t.call_id WHERE c.external_id = ? "
                "ORDER BY t.sequence",
                (call_sid,),
            ).fetchall()
        return [{**dict(r), "metrics": json.loads(r["metrics"] or "{}")} for r in rows]

    def call_metrics(self, call_sid: str) -> dict[str, Any]:
        """The call's own counters (e.g. backchannels vs interruptions, where kept)."""
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            row = db.execute(
                "SELECT metrics FROM calls_call WHERE external_id = ?", (call_sid,)
            ).fetchone()
        return json.loads(row[0] or "{}") if row else {}


# --- one overlap: the caller talks over the greeting -----------------------------------------


class WireLog:
    """The socket as ``TwilioCaller`` reads it, noting when each ``clear`` and agent
    ``media`` message arrives (``TwilioCaller`` keeps no such timeline)."""

    GAP_S = 0.03  # playback gaps shorter than this are network jitter, not a pause

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self.clears: list[float] = []
        self.media: list[float] = []
        self._events: list[tuple[float, str]] = []

    def quiet_and_resume(self, onset: float) -> tuple[float | None, float | None]:
        """When the caller's line went quiet after ``onset`` and when agent audio came
        back, replaying what a carrier does: each 20 ms frame plays after the ones it
        holds, a ``clear`` drops them. Quiet is the first ``clear`` or playback gap that
        starts at or after the onset (an agent that pauses by just not sending has no
        ``clear``: its audio ends when the carrier has played what it held)."""
        play_until = 0.0
        quiet: float | None = None
        for t, kind in self._events:
            if kind == "clear":
                if quiet is None and t >= onset:
                    # Quiet already if what the carrier held ran out before the clear.
                    quiet = max(onset, min(t, play_until)) if play_until >= onset else t
                play_until = t
                continue
            if quiet is not None and t >= quiet:
                return quiet, t
            if t > play_until + self.GAP_S and play_until >= onset:
                quiet = play_until
                return quiet, t
            play_until = max(play_until, t) + 0.02
        if quiet is None and play_until >= onset:
            quiet = play_until  # it just ended (or paused for good)
        return quiet, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    def __aiter__(self) -> Any:
        return self._messages()

    async def _messages(self) -> Any:
        loop = asyncio.get_running_loop()
        async for message in self._ws:
            event = json.loads(message).get("event")
            if event == "media":
                self.media.append(loop.time())
                self._events.append((self.media[-1], "media"))
            elif event == "clear":
                self.clears.append(loop.time())
                self._events.append((self.clears[-1], "clear"))
            yield message


@dataclass(slots=True, kw_only=True)
class Overlap:
    kind: str  # backchannel | interruption
    text: str
    length_scale: float = 1.0
    call_sid: str = ""
    speech_ms: float = 0.0
    clear_ms: float | None = None  # onset -> first clear received after it
    clears: int = 0
    # onset -> the caller's line quiet (a clear, or the carrier running out of agent audio)
    quiet_ms: float | None = None
    paused: bool = False
    # end of the overlap -> next agent frame after that clear: the agent resuming, or (code
    # that takes the backchannel for a turn) its reply to it
    resume_ms: float | None = None
    user_turns: int = 0
    greeting_interrupted: bool | None = None
    replies: int = 0  # assistant turns after the greeting
    error: str = ""
    cpu_s: float = 0.0
    call_metrics: dict[str, Any] = field(default_factory=dict)  # as the server stored them
    paused_for_good: bool = False  # a clear, and no agent audio within --resume-within-ms
    false_interruption: bool | None = None  # backchannels
    detected: bool | None = None  # interruptions


async def overlap_call(
    server: TurnTakingServer,
    http: httpx.AsyncClient,
    line: LineAudio,
    overlap: Overlap,
    frames: list[str],
    *,
    at_s: float,
    settle_s: float,
    timeout_s: float,
) -> None:
    """One call on the long-greeting profile: silence until the greeting's first frame,
    the overlap ``at_s`` later, then silence until the agent is done (and at least
    ``settle_s`` after the overlap, so a turn it caused is answered or stored)."""
    overlap.call_sid = "CA" + uuid.uuid4().hex
    endpoint = server.endpoint_for(LONG)
    stream_url, parameters = parse_twiml(await webhook(http, endpoint, overlap.call_sid, 0))
    ws = await connect(stream_url, compression=None, ping_interval=None, max_size=2**20)
    wire = WireLog(ws)
    caller = TwilioCaller(
        wire, stream_sid="MZ" + uuid.uuid4().hex, call_sid=overlap.call_sid, result=CallResult()
    )
    receiver = asyncio.create_task(caller.receive())
    try:
        await caller.open(parameters)
        loop = caller.loop
        if not await caller.silence_until(
            lambda: caller.reply.first_at is not None, line.silence, timeout_s
        ):
            overlap.error = "no greeting"
            return
        start_at = (caller.reply.first_at or 0.0) + at_s
        await caller.silence_until(lambda: loop.time() >= start_at, line.silence, timeout_s)
        onset = end = loop.time()
        for i, payload in enumerate(frames):
            sent = await caller.frame(payload)
            if i == 0:
                onset = sent
            end = sent
        overlap.speech_ms = round(len(frames) * 20.0, 1)
        settled = end + settle_s
        if not await caller.silence_until(
            lambda: loop.time() > settled and caller.agent_done(), line.silence, timeout_s
        ):
            overlap.error = "agent did not finish" if caller.closed is None else caller.closed
        clears = [t for t in wire.clears if t >= onset]
        overlap.clears = len(clears)
        if clears:
            overlap.clear_ms = round((clears[0] - onset) * 1000.0, 1)
        quiet, resumed = wire.quiet_and_resume(onset)
        if quiet is not None:
            overlap.quiet_ms = round((quiet - onset) * 1000.0, 1)
            overlap.paused = True
        if resumed is not None:
            overlap.resume_ms = round((resumed - end) * 1000.0, 1)
        await caller.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(receiver), 5)
    finally:
        await ws.close()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver


def judge(overlap: Overlap, turns: list[dict[str, Any]], resume_within_ms: float) -> None:
    """Fill in what the database says, and the verdict."""
    assistant = [t for t in turns if t["role"] == "assistant"]
    overlap.user_turns = sum(1 for t in turns if t["role"] == "user")
    overlap.greeting_interrupted = bool(assistant[0]["interrupted"]) if assistant else None
    overlap.replies = max(0, len(assistant) - 1)
    overlap.paused_for_good = overlap.paused and (
        overlap.resume_ms is None or overlap.resume_ms > resume_within_ms
    ) and not overlap.replies
    if overlap.kind == "backchannel":
        overlap.false_interruption = bool(
            overlap.greeting_interrupted or overlap.user_turns or overlap.paused_for_good
        )
    else:
        overlap.detected = bool(overlap.greeting_interrupted)


# --- the run ---------------------------------------------------------------------------------


def cycle(items: list[Any], n: int) -> list[Any]:
    return [items[i % len(items)] for i in range(n)]


def cpu_s(proc: psutil.Process) -> float:
    return process_tree_usage(proc)[0]


def stats(values: list[float]) -> dict[str, Any]:
    r1 = lambda x: None if x is None else round(x, 1)  # noqa: E731
    return {
        "n": len(values),
        "p50": r1(percentile(values, 50)),
        "p95": r1(percentile(values, 95)),
        "max": r1(max(values, default=None)),
    }


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    line = LineAudio(None if args.line_noise_dbfs == "off" else float(args.line_noise_dbfs))
    print("caller speech (piper) ...", flush=True)
    booking = Clips(turns=[line.speech(text) for text in BOOKING], silence=line.silence)
    backchannels = [
        (Overlap(kind="backchannel", text=t, length_scale=s), line.speech(t, s))
        for t, s in cycle(BACKCHANNELS, args.backchannels)
    ]
    interruptions = [
        (Overlap(kind="interruption", text=t), line.speech(t))
        for t in cycle(INTERRUPTIONS, args.interruptions)
    ]
    server = TurnTakingServer(workdir, profile_fields(args))
    server.prepare()
    server.start()
    try:
        ready_s = await server.wait_ready()
        log_mark = server.log_size()  # the 503s of /health/ready/ while it warmed up are no errors
        proc = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        print(f"server ready in {ready_s:.1f} s; warm-up call ...", flush=True)
        gap_s, timeout_s = args.gap_ms / 1000.0, args.turn_timeout
        await run_calls(
            server.endpoint_for(SHORT),
            n=1,
            turns=1,
            clips=booking,
            ramp_s=0,
            gap_s=gap_s,
            turn_timeout=timeout_s,
        )
        turn_mark = server.turn_mark()
        use = MachineUse(proc)

        v2v: list[float] = []
        v2v_cpu: list[float] = []
        errors: list[str] = []
        for i in range(args.calls):
            before = cpu_s(proc)
            [result] = await run_calls(
                server.endpoint_for(SHORT),
                n=1,
                turns=len(BOOKING),
                clips=booking,
                ramp_s=0,
                gap_s=gap_s,
                turn_timeout=timeout_s,
            )
            v2v_cpu.append(cpu_s(proc) - before)
            v2v += [v for r in result.replies if (v := r.v2v_ms()) is not None]
            errors += result.errors
            print(
                f"  v2v call {i + 1}/{args.calls}: "
                f"{[round(v) if (v := r.v2v_ms()) is not None else None for r in result.replies]}"
                f"{' errors: ' + '; '.join(result.errors) if result.errors else ''}",
                flush=True,
            )
        await asyncio.sleep(2.0)  # the last turn records reach the database
        v2v_turns = _turns_since(server, turn_mark)

        overlaps: list[Overlap] = []
        async with httpx.AsyncClient(timeout=30) as http:
            for overlap, frames in [*backchannels, *interruptions]:
                before = cpu_s(proc)
                try:
                    await overlap_call(
                        server,
                        http,
                        line,
                        overlap,
                        frames,
                        at_s=args.overlap_at_ms / 1000.0,
                        settle_s=args.settle_ms / 1000.0,
                        timeout_s=args.call_timeout,
                    )
                except (OSError, RuntimeError, ValueError, httpx.HTTPError) as exc:
                    overlap.error = repr(exc)
                overlap.cpu_s = round(cpu_s(proc) - before, 2)
                await asyncio.sleep(1.0)  # its turns reach the database
                judge(overlap, server.turns(overlap.call_sid), args.resume_within_ms)
                overlap.call_metrics = server.call_metrics(overlap.call_sid)
                overlaps.append(overlap)
                print(
                    f"  {overlap.kind} {overlap.text!r} x{overlap.length_scale:g}: "
                    f"clear {overlap.clear_ms} resume {overlap.resume_ms} "
                    f"user turns {overlap.user_turns} greeting interrupted "
                    f"{overlap.greeting_interrupted}{' ' + overlap.error if overlap.error else ''}",
                    flush=True,
                )
        machine = use.stop()
    finally:
        server.stop()
    return summarize(v2v, v2v_cpu, v2v_turns, errors, overlaps, server, log_mark, machine)


class MachineUse:
    """CPU of the whole machine while the calls ran, split into the server, this client
    and everything else (other people's work on a shared machine skews the latencies)."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.wall = time.monotonic()
        self.server = cpu_s(proc)
        self.client = time.process_time()
        psutil.cpu_percent()  # starts the machine-wide counter

    def stop(self) -> dict[str, Any]:
        wall = max(1e-6, time.monotonic() - self.wall)
        machine = psutil.cpu_percent() * psutil.cpu_count()
        server = (cpu_s(self.proc) - self.server) / wall * 100.0
        client = (time.process_time() - self.client) / wall * 100.0
        return {
            "machine_cpu_pct": round(machine, 1),
            "server_cpu_pct": round(server, 1),
            "client_cpu_pct": round(client, 1),
            "others_cpu_pct": round(max(0.0, machine - server - client), 1),
            "load_avg_end": [round(x, 2) for x in os.getloadavg()],
            "wall_s": round(wall, 1),
        }


def _turns_since(server: TurnTakingServer, mark: int) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(server.db)) as db:
        rows = db.execute(
            "SELECT role, interrupted, metrics FROM calls_turn WHERE id > ?", (mark,)
        ).fetchall()
    return [
        {"role": r, "interrupted": bool(i), "metrics": json.loads(m or "{}")} for r, i, m in rows
    ]


def summarize(
    v2v: list[float],
    v2v_cpu: list[float],
    v2v_turns: list[dict[str, Any]],
    errors: list[str],
    overlaps: list[Overlap],
    server: TurnTakingServer,
    log_mark: int,
    machine: dict[str, Any],
) -> dict[str, Any]:
    # The replies to the callers' turns (the greeting has no endpointing), as the server saw them.
    replies = [t["metrics"] for t in v2v_turns if t["metrics"].get("endpointing_ms") is not None]
    parts = ("endpointing_ms", "stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")
    server_ms = {k: stats([m[k] for m in replies if m.get(k) is not None]) for k in parts}
    backs = [o for o in overlaps if o.kind == "backchannel"]
    cuts = [o for o in overlaps if o.kind == "interruption"]
    mean = lambda xs: round(sum(xs) / len(xs), 2) if xs else None  # noqa: E731
    return {
        "endpointing_ms": server_ms["endpointing_ms"],
        "voice_to_voice_ms": stats(v2v),
        "server_reply_ms": server_ms,  # per reply: its stored TurnMetrics, p50/p95/max
        "server_reply_metrics": replies,
        "v2v_errors": errors,
        "v2v_agent_interrupted": sum(
            1 for t in v2v_turns if t["role"] == "assistant" and t["interrupted"]
        ),
        "backchannels": {
            "n": len(backs),
            "false_interruptions": sum(1 for o in backs if o.false_interruption),
            "greeting_interrupted": sum(1 for o in backs if o.greeting_interrupted),
            "user_turns_stored": sum(o.user_turns for o in backs),
            "with_clear": sum(1 for o in backs if o.clears),
            "paused_not_resumed": sum(1 for o in backs if o.paused_for_good),
            "onset_to_clear_ms": stats([o.clear_ms for o in backs if o.clear_ms is not None]),
            "onset_to_quiet_ms": stats([o.quiet_ms for o in backs if o.quiet_ms is not None]),
            "end_to_resume_ms": stats([o.resume_ms for o in backs if o.resume_ms is not None]),
            "errors": sum(1 for o in backs if o.error),
        },
        "interruptions": {
            "n": len(cuts),
            "detected": sum(1 for o in cuts if o.detected),
            "with_clear": sum(1 for o in cuts if o.clears),
            "user_turns_stored": sum(o.user_turns for o in cuts),
            "onset_to_clear_ms": stats([o.clear_ms for o in cuts if o.clear_ms is not None]),
            "onset_to_quiet_ms": stats([o.quiet_ms for o in cuts if o.quiet_ms is not None]),
            "errors": sum(1 for o in cuts if o.error),
        },
        "cpu_s_per_call": {
            "voice_to_voice": mean(v2v_cpu),
            "backchannel": mean([o.cpu_s for o in backs]),
            "interruption": mean([o.cpu_s for o in cuts]),
        },
        "server_log_errors": server.log_errors(log_mark),
        "machine_use": machine,
        "overlaps": [asdict(o) for o in overlaps],
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _p(s: dict[str, Any]) -> str:
    p50, p95, top = (_cell(s[k]) for k in ("p50", "p95", "max"))
    return f"n={s['n']:<3} p50 {p50:>5}  p95 {p95:>5}  max {top:>5}"


def format_table(label: str, r: dict[str, Any]) -> str:
    b, c, cpu, m = r["backchannels"], r["interruptions"], r["cpu_s_per_call"], r["machine_use"]
    return "\n".join(
        [
            f"turn_taking [{label}] (ms; server CPU s per call)",
            f"endpointing (server)        {_p(r['endpointing_ms'])}",
            f"voice-to-voice (client)     {_p(r['voice_to_voice_ms'])}  "
            f"errors {len(r['v2v_errors'])}  agent cut {r['v2v_agent_interrupted']}",
            "  server p50: "
            + "  ".join(
                f"{k.removesuffix('_ms')} {_cell(v['p50'])}"
                for k, v in r["server_reply_ms"].items()
            ),
            f"backchannels                n={b['n']:<3} "
            f"false interruptions {b['false_interruptions']} "
            f"(greeting cut {b['greeting_interrupted']}, user turns {b['user_turns_stored']}, "
            f"paused for good {b['paused_not_resumed']}), clear sent {b['with_clear']}, "
            f"errors {b['errors']}",
            f"  onset -> clear            {_p(b['onset_to_clear_ms'])}",
            f"  onset -> agent quiet      {_p(b['onset_to_quiet_ms'])}",
            f"  end -> agent audio again  {_p(b['end_to_resume_ms'])}",
            f"interruptions               n={c['n']:<3} detected {c['detected']}, clear sent "
            f"{c['with_clear']}, user turns {c['user_turns_stored']}, errors {c['errors']}",
            f"  onset -> clear            {_p(c['onset_to_clear_ms'])}",
            f"  onset -> agent quiet      {_p(c['onset_to_quiet_ms'])}",
            f"server CPU s/call           v2v {cpu['voice_to_voice']}  backchannel "
            f"{cpu['backchannel']}  interruption {cpu['interruption']}; "
            f"server log errors {r['server_log_errors']}",
            f"machine CPU during calls    {m['machine_cpu_pct']:.0f} % of one core (server "
            f"{m['server_cpu_pct']:.0f}, this client {m['client_cpu_pct']:.0f}, others "
            f"{m['others_cpu_pct']:.0f}); load average at the end {m['load_avg_end']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--label", default="run", help="results: bench/results/turn_taking-<label>.json"
    )
    parser.add_argument("--calls", type=int, default=5, help="3-turn voice-to-voice calls")
    parser.add_argument(
        "--backchannels", type=int, default=20, help="backchannel overlaps (1 per call)"
    )
    parser.add_argument(
        "--interruptions", type=int, default=10, help="real interruptions (1 per call)"
    )
    parser.add_argument(
        "--turn-detection",
        choices=["silence", "smart"],
        default=None,
        help="the profiles' turn_detection, where the model has the field",
    )
    parser.add_argument(
        "--overlap-at-ms",
        type=float,
        default=1000.0,
        help="overlap onset after the greeting's first agent frame",
    )
    parser.add_argument(
        "--resume-within-ms",
        type=float,
        default=2000.0,
        help="a paused agent must speak again this soon after a backchannel",
    )
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=4000.0,
        help="after an overlap, stay on the line at least this long",
    )
    parser.add_argument("--max-tokens", type=int, default=60, help="profiles' LLM max_tokens")
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=1000.0,
        help="caller silence before each turn, once the agent has been quiet for 0.5 s",
    )
    parser.add_argument("--turn-timeout", type=float, default=20.0)
    parser.add_argument("--call-timeout", type=float, default=60.0)
    parser.add_argument("--line-noise-dbfs", default="-60", help="or 'off' for digital silence")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()

    machine = machine_info()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(
        f"{machine['cpu']}, {machine['cores']} cores; load average {machine['load_avg']}; "
        f"code {ROOT} at {commit}{' (+ local changes)' if dirty else ''}",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-turn-taking-"))
    print(f"server log and database: {workdir}", flush=True)
    started = time.monotonic()
    result = asyncio.run(run(args, workdir))
    print()
    print(format_table(args.label, result))
    print(f"wall {time.monotonic() - started:.0f} s")
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        doc = {
            "label": args.label,
            "command": "python -m bench.turn_taking " + " ".join(sys.argv[1:]),
            "commit": commit,
            "local_changes": bool(dirty),
            "machine": machine,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "args": vars(args),
            **result,
        }
        out = RESULTS / f"turn_taking-{args.label}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"saved {out}")


if __name__ == "__main__":
    main()
