"""Load test over the real Twilio protocol: N concurrent phone calls against a real server.

    .venv/bin/python bench/load.py --sweep 1,10,50,100,200 --target ours,pipecat

For each N of the sweep the target server is started fresh on 127.0.0.1 (ours: daphne
with ``bench.settings`` and a temporary SQLite database; pipecat: the peer bot in
``bench/peers/pipecat/``), warmed up with one call, then N concurrent clients each do
what Twilio does: POST the signed voice webhook, read ``<Stream>`` and its
``<Parameter>``s from the TwiML, open the media socket, send ``connected`` + ``start``,
then real speech (espeak-ng, 8 kHz µ-law) in 160-byte frames paced at real time, with
silence between turns, for ``--turns`` turns; marks are echoed when their audio would
have played, and ``stop`` ends the call. Both servers run the same scripted latencies
(STT delay, LLM time to first token and tokens/s, TTS time to first byte and speed).

Per turn each client measures voice-to-voice (end of its own speech -> first agent
``media`` frame received) and plays the agent audio into a simulated carrier buffer:
a frame that arrives more than 40 ms after the buffer ran dry is a late frame (an
audible gap); "jitter" is how far behind schedule frames arrive (p99).

    overhead = voice-to-voice - (silence_timeout + STT + LLM TTFT
                                 + tokens until the first sentence ends + TTS TTFB)

Server CPU (% of one core; 200 % = both cores of this machine) is measured with psutil
on the server process while all N calls are up; RSS per call = (peak RSS - RSS after
the warm-up call) / N. Client lag (how late the load generator itself sends its frames)
is printed so an overloaded client is not mistaken for a slow server. Results go to
``bench/results/<target>.json``; ``bench/chart.py`` draws the PNG. Loopback only; every
run is bounded (``--turn-timeout``, a hard limit per N, and ``--stop-overhead-ms``
ends the sweep once a target is saturated). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import random
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from orchestrator.audio import pcm16_to_ulaw  # noqa: E402
from scenarios.wire_client import (  # noqa: E402, F401 - re-exported for the benchmarks built on this
    FRAME_BYTES,
    FRAME_S,
    LATE_S,
    QUIET_S,
    CallResult,
    Reply,
    TwilioCaller,
    caller_form,
    parse_twiml,
    post_voice_webhook,
)
from tests.speech import speech_pcm16  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PIPECAT_DIR = ROOT / "bench" / "peers" / "pipecat"
PIPECAT_PYTHON = PIPECAT_DIR / ".venv" / "bin" / "python"
PROFILE_SLUG = "bench-load"
UTTERANCES = [
    "Hello, I would like to book a table for tonight.",
    "We are four people, around nine please.",
    "Perfect, thank you very much.",
]


# --- what the scripted engines do ------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Script:
    """The scripted latencies, the same for both servers (defaults: bench/session_overhead.py)."""

    stt_ms: float = 120.0
    llm_ttft_ms: float = 250.0
    tokens_per_s: float = 60.0
    tts_ttfb_ms: float = 120.0
    ms_per_char: float = 20.0  # TTS audio per character of text
    chunk_ms: float = 100.0
    tts_realtime: float = 2.0  # TTS produces audio at this multiple of real time
    silence_timeout_ms: int = 700
    # "silence": the fixed timer the pipecat peer also runs (comparable figures); "smart":
    # our default, Smart Turn at each 250 ms pause (its CPU per call, its waits on espeak).
    turn_detection: str = "silence"
    heard: str = "a table for four"
    reply: str = "Of course, I can do that. For how many people would you like the table tonight?"
    greeting: str = "Hello, Casa Lola here."

    def first_sentence_ms(self) -> float:
        """Tokens the LLM must stream before its first sentence is complete (any splitter)."""
        tokens = re.findall(r"\S+\s*", self.reply)
        for i, token in enumerate(tokens):
            if re.search(r"[.?!]\s*$", token):
                return i * 1000.0 / self.tokens_per_s
        return (len(tokens) - 1) * 1000.0 / self.tokens_per_s

    def expected_ms(self) -> float:
        """Voice-to-voice that the script alone makes unavoidable."""
        return (
            self.silence_timeout_ms
            + self.stt_ms
            + self.llm_ttft_ms
            + self.first_sentence_ms()
            + self.tts_ttfb_ms
        )

    def profile_fields(self) -> dict[str, Any]:
        """AgentProfile fields wiring our server to the scripted engines of bench/."""
        fields = {
            "name": "Bench load",
            "language": "en-US",
            "greeting": self.greeting,
            "stt_engine": "scripted",
            "stt_model": f"delay_ms={self.stt_ms:g};text={self.heard}",
            "llm_engine": "scripted",
            "llm_model": (
                f"ttft_ms={self.llm_ttft_ms:g};tokens_per_s={self.tokens_per_s:g};"
                f"reply={self.reply}"
            ),
            "tts_engine": "scripted",
            "tts_model": (
                f"ttfb_ms={self.tts_ttfb_ms:g};ms_per_char={self.ms_per_char:g};"
                f"chunk_ms={self.chunk_ms:g};realtime={self.tts_realtime:g}"
            ),
            "silence_timeout_ms": self.silence_timeout_ms,
            "turn_detection": self.turn_detection,
            "idle_timeout_s": 60,
            "max_call_seconds": 600,
            "is_active": True,
        }
        too_long = [k for k in ("stt_model", "llm_model", "tts_model") if len(fields[k]) > 120]
        if too_long:
            raise SystemExit(
                f"{', '.join(too_long)} longer than the 120 chars a profile holds: shorten --reply"
            )
        return fields

    def pipecat_args(self) -> list[str]:
        return [
            "--stt-ms",
            f"{self.stt_ms:g}",
            "--heard",
            self.heard,
            "--llm-ttft-ms",
            f"{self.llm_ttft_ms:g}",
            "--tokens-per-s",
            f"{self.tokens_per_s:g}",
            "--reply",
            self.reply,
            "--tts-ttfb-ms",
            f"{self.tts_ttfb_ms:g}",
            "--ms-per-char",
            f"{self.ms_per_char:g}",
            "--chunk-ms",
            f"{self.chunk_ms:g}",
            "--tts-realtime",
            f"{self.tts_realtime:g}",
            "--silence-timeout-ms",
            str(self.silence_timeout_ms),
            "--greeting",
            self.greeting,
        ]


# --- caller audio ----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Clips:
    """Base64 µ-law 20 ms payloads: one list per utterance, trimmed to the speech itself,
    and one second of "silence" frames sent between and after the caller's turns.

    ``noise_dbfs`` adds white noise of that RMS level to everything the caller sends, as
    a phone line carries (PSTN/mobile comfort noise is around -70..-50 dBFS); ``None``
    sends digital silence (a muted or silence-suppressed line), which a VAD may skip.
    """

    turns: list[list[str]]
    silence: list[str]

    @classmethod
    def build(
        cls, utterances: list[str] = UTTERANCES, *, noise_dbfs: float | None = -60.0
    ) -> Clips:
        import numpy as np

        rng = np.random.default_rng(8)
        size = FRAME_BYTES * 2  # PCM16

        def frames(samples: np.ndarray) -> list[str]:
            if noise_dbfs is not None:
                noise = rng.normal(0.0, 32768 * 10 ** (noise_dbfs / 20), len(samples))
                samples = np.clip(samples + noise, -32768, 32767)
            pcm = samples.astype("<i2").tobytes()
            return [_b64(pcm16_to_ulaw(pcm[i : i + size])) for i in range(0, len(pcm), size)]

        turns = []
        for text in utterances:
            pcm = np.frombuffer(speech_pcm16(text, rate=8000), "<i2").astype(np.float64)
            loud = np.flatnonzero(np.abs(pcm) > 300)
            # Trim espeak's leading/trailing silence so the last frame sent ends the speech.
            pcm = pcm[loud[0] : loud[-1] + 1]
            pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME_BYTES)])
            turns.append(frames(pcm))
        return cls(turns=turns, silence=frames(np.zeros(FRAME_BYTES * 50)))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- where the calls go ---------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Endpoint:
    """Where the calls go: base URL, voice webhook path, and the token that signs it."""

    base: str
    voice_path: str = f"/telephony/twilio/voice/?profile={PROFILE_SLUG}"
    auth_token: str = ""


# --- one call, as Twilio drives it -----------------------------------------------------------
# The client (webhook, TwiML, the paced socket) is shared with the scenario runner.


async def webhook(http: httpx.AsyncClient, endpoint: Endpoint, call_sid: str, index: int) -> str:
    form = caller_form(call_sid, from_number=f"+1555{index:07d}")
    return await post_voice_webhook(
        http, url=endpoint.base + endpoint.voice_path, form=form, auth_token=endpoint.auth_token
    )


def busy_twiml(xml: str) -> bool:
    """The server refused the call as busy: ``<Reject>``, or a spoken message and hang-up."""
    root = ET.fromstring(xml)
    return root.find("./Reject") is not None or (
        root.find("./Connect") is None and root.find("./Hangup") is not None
    )


async def one_call(
    index: int,
    *,
    endpoint: Endpoint,
    http: httpx.AsyncClient,
    clips: Clips,
    turns: int,
    greeting: bool,
    gap_s: float,
    turn_timeout: float,
    start_delay: float,
    active: list[int],
) -> CallResult:
    result = CallResult()
    await asyncio.sleep(start_delay)
    call_sid = "CA" + uuid.uuid4().hex
    asked = time.monotonic()
    try:
        twiml = await webhook(http, endpoint, call_sid, index)
        if busy_twiml(twiml):
            result.busy, result.busy_s = "webhook", time.monotonic() - asked
            return result
        stream_url, parameters = parse_twiml(twiml)
    except (httpx.HTTPError, RuntimeError, ValueError, ET.ParseError) as exc:
        result.errors.append(f"webhook: {exc!r}")
        return result
    try:
        ws = await connect(
            stream_url, compression=None, open_timeout=15, ping_interval=None, max_size=2**20
        )
    except (OSError, TimeoutError, ConnectionClosed, Exception) as exc:  # noqa: BLE001 - any handshake failure is an error of this call
        result.errors.append(f"connect: {exc!r}")
        return result
    caller = TwilioCaller(ws, stream_sid="MZ" + uuid.uuid4().hex, call_sid=call_sid, result=result)
    receiver = asyncio.create_task(caller.receive())
    active[0] += 1
    try:
        await caller.open(parameters)
        if greeting:
            if await caller.silence_until(caller.agent_done, clips.silence, turn_timeout):
                result.greeting = caller.reply
            elif (caller.closed or "").startswith("4503") and caller.reply.frames == 0:
                # Admitted at the webhook, refused by the worker its stream landed on.
                result.busy, result.busy_s = "stream", time.monotonic() - asked
                return result
            else:
                result.errors.append(
                    "no greeting" if caller.reply.frames == 0 else "greeting did not end"
                )
        for turn in range(turns):
            if caller.closed is not None:
                break
            await caller.silence_until(lambda: False, clips.silence, gap_s)
            for payload in clips.turns[turn % len(clips.turns)]:
                end = await caller.frame(payload)
            caller.reply = Reply(speech_end=end)
            result.replies.append(caller.reply)
            if not await caller.silence_until(caller.agent_done, clips.silence, turn_timeout):
                if caller.closed is None:
                    result.errors.append(
                        f"turn {turn}: "
                        + ("no reply" if caller.reply.frames == 0 else "reply did not end")
                    )
        if caller.closed is not None:
            result.errors.append(f"server closed the stream: {caller.closed}")
        await caller.stop()
        # Ours closes after stop; give it a moment, then close from our side anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(receiver), 5)
    except ConnectionClosed as exc:
        if exc.rcvd is not None and exc.rcvd.code == 4503 and result.greeting is None:
            # Admitted at the webhook, refused by the worker its stream landed on.
            result.busy, result.busy_s = "stream", time.monotonic() - asked
        else:
            result.errors.append(f"socket closed while sending: {exc!r}")
    finally:
        active[0] -= 1
        await ws.close()
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
    return result


async def run_calls(
    endpoint: Endpoint,
    *,
    n: int,
    turns: int,
    clips: Clips,
    greeting: bool = True,
    gap_s: float = 0.6,
    turn_timeout: float = 15.0,
    ramp_s: float | None = None,
    active: list[int] | None = None,
) -> list[CallResult]:
    """N concurrent calls; returns when all ended (or the hard limit passed)."""
    ramp = min(5.0, 0.025 * n) if ramp_s is None else ramp_s
    counter = active if active is not None else [0]
    limits = httpx.Limits(max_connections=64)
    speech_s = sum(len(clips.turns[t % len(clips.turns)]) for t in range(turns)) * FRAME_S
    hard_limit = ramp + 30 + speech_s + turns * (gap_s + 2 * turn_timeout)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        tasks: list[asyncio.Task[CallResult]] = []
        for i in range(n):
            call = one_call(
                i,
                endpoint=endpoint,
                http=http,
                clips=clips,
                turns=turns,
                greeting=greeting,
                gap_s=gap_s,
                turn_timeout=turn_timeout,
                start_delay=random.uniform(0, ramp),
                active=counter,
            )
            task = asyncio.create_task(call, name=f"bench-call-{i}")
            tasks.append(task)
        done, pending = await asyncio.wait(tasks, timeout=hard_limit)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    results = []
    for task in tasks:
        if task in pending:
            results.append(
                CallResult(
                    errors=[f"call did not finish within the hard limit ({hard_limit:.0f} s)"]
                )
            )
        elif task.exception() is not None:
            results.append(CallResult(errors=[f"client crashed: {task.exception()!r}"]))
        else:
            results.append(task.result())
    return results


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process on 127.0.0.1 that ``start()`` launches and ``stop()`` kills."""

    name = ""

    def __init__(self, script: Script, workdir: Path) -> None:
        self.script = script
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = workdir / f"{self.name}.log"

    def prepare(self) -> None:
        """Once per sweep (database, profile)."""

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def endpoint(self) -> Endpoint:
        raise NotImplementedError

    def start(self, timeout: float = 60) -> Endpoint:
        self.port = free_port()
        cmd, env = self.command()
        log = self.log_path.open("ab")
        log.write(f"\n=== start {' '.join(cmd[:4])} port {self.port}\n".encode())
        log.flush()
        self.process = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        endpoint = self.endpoint()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited early; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{endpoint.base}/health/", timeout=1).status_code == 200:
                    return endpoint
            time.sleep(0.2)
        raise RuntimeError(
            f"{self.name} server did not answer /health/ in {timeout:.0f} s; see {self.log_path}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # The whole tree at once: workers of a killed supervisor would otherwise end
            # their calls gracefully while the next N already runs.
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    child.kill()
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def log_errors(self, since: int) -> int:
        text = self.log_path.read_text(errors="replace")[since:]
        return sum(
            1 for line in text.splitlines() if " ERROR " in line or line.startswith("Traceback")
        )

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def turn_mark(self) -> int:
        """Where the server's own per-turn records stand (0 when it keeps none)."""
        return 0

    def own_metrics(self, since: int) -> dict[str, float | None]:
        """The server's own per-turn figures recorded after ``since`` (none for a peer)."""
        return {}


class OursServer(Server):
    """daphne + voiceapp with bench.settings, a temporary SQLite DB, Celery not eager."""

    name = "ours"

    def __init__(
        self,
        script: Script,
        workdir: Path,
        database_url: str = "",
        settings: str = "bench.settings",
        server: str = "daphne",
        workers: int = 1,
        max_calls: int = 0,
    ) -> None:
        super().__init__(script, workdir)
        self.settings = settings
        self.server = server
        self.workers = workers
        self.max_calls = max_calls
        self.auth_token = secrets.token_hex(16)
        self.db = workdir / "bench.sqlite3"
        # IMMEDIATE: SQLite's deferred transactions fail with "database is locked" when two
        # writers upgrade at once (turn_record reads, then inserts); PostgreSQL has no such issue.
        self.database_url = database_url or f"sqlite:///{self.db}?transaction_mode=IMMEDIATE"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": "",
            # Post-call work belongs to a Celery worker in production, not to the media server.
            "CELERY_BROKER_URL": "memory://",
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "DEBUG": "false",
            "SECRET_KEY": "bench-" + secrets.token_hex(24),
            "SECURE_SSL_REDIRECT": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_ACCOUNT_SID": "",  # no REST hang-up: closing the stream ends the call
            "TELEPHONY_ALLOW_UNSIGNED": "false",
            "GROQ_API_KEY": "",
            "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "",
            "AZURE_SPEECH_KEY": "",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "text",
            # Capacity sweeps measure the process itself (no admission limits); the overload
            # run (--max-calls) sets them as production would.
            "MAX_CALLS_PER_PROCESS": str(self.max_calls),
            "ADMISSION_MAX_LOOP_LAG_MS": "100" if self.max_calls else "0",
        }

    def prepare(self) -> None:
        env = {**self.env(), "BENCH_PROFILE": json.dumps(self.script.profile_fields())}
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        code = (
            "import json, os; from calls.models import AgentProfile; "
            f"AgentProfile.objects.update_or_create(slug={PROFILE_SLUG!r}, "
            "defaults=json.loads(os.environ['BENCH_PROFILE']))"
        )
        subprocess.run([*manage, "shell", "-c", code], cwd=ROOT, env=env, check=True)

    def turn_mark(self) -> int:
        if not self.database_url.startswith("sqlite"):
            return 0  # server-side figures are read from the bench's own SQLite file only
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            return db.execute("SELECT COALESCE(MAX(id), 0) FROM calls_turn").fetchone()[0]

    def own_metrics(self, since: int) -> dict[str, float | None]:
        """Server-side voice-to-voice (speech end as its VAD saw it -> first frame handed to
        the socket) and endpointing (that speech end -> end of turn detected), from the
        turn records: the client's figure minus these is wire + client time."""
        if not self.database_url.startswith("sqlite"):
            return {}
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            rows = db.execute(
                "SELECT metrics FROM calls_turn WHERE id > ? AND role = 'assistant'", (since,)
            ).fetchall()
        metrics = [json.loads(m) for (m,) in rows if m]
        out: dict[str, float | None] = {}
        for key, name in (("voice_to_voice_ms", "server_v2v"), ("endpointing_ms", "endpointing")):
            values = [m[key] for m in metrics if m.get(key) is not None]
            for q in (50, 95):
                value = percentile(values, q)
                out[f"{name}_p{q}_ms"] = None if value is None else round(value, 1)
        return out

    def command(self) -> tuple[list[str], dict[str, str]]:
        # The production command (voiceapp/serve.py): the chosen ASGI server, N workers.
        cmd = [
            sys.executable,
            "-m",
            "voiceapp.serve",
            "--server",
            self.server,
            "--workers",
            str(self.workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        return cmd, self.env()

    def endpoint(self) -> Endpoint:
        return Endpoint(base=f"http://127.0.0.1:{self.port}", auth_token=self.auth_token)


class PipecatServer(Server):
    """bench/peers/pipecat/bot.py in its own venv."""

    name = "pipecat"

    def prepare(self) -> None:
        if not PIPECAT_PYTHON.exists():
            raise SystemExit(
                f"{PIPECAT_PYTHON} not found. Create it with:\n"
                f"  python3.11 -m venv {PIPECAT_DIR}/.venv && "
                f"{PIPECAT_DIR}/.venv/bin/pip install -r {PIPECAT_DIR}/requirements.txt"
            )

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [
            str(PIPECAT_PYTHON),
            str(PIPECAT_DIR / "bot.py"),
            "--port",
            str(self.port),
            *self.script.pipecat_args(),
        ]
        return cmd, dict(os.environ)

    def endpoint(self) -> Endpoint:
        return Endpoint(base=f"http://127.0.0.1:{self.port}", voice_path="/telephony/twilio/voice/")


SERVERS: dict[str, type[Server]] = {"ours": OursServer, "pipecat": PipecatServer}


# --- measuring one N -------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def process_tree_usage(proc: psutil.Process) -> tuple[float, int]:
    """CPU seconds and RSS bytes of the server and any children it spawned."""
    cpu, rss = 0.0, 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
    return cpu, rss


async def sample_server(
    proc: psutil.Process, active: list[int], out: list[tuple[float, float, int, int]]
) -> None:
    loop = asyncio.get_running_loop()
    while True:
        cpu, rss = process_tree_usage(proc)
        out.append((loop.time(), cpu, rss, active[0]))
        await asyncio.sleep(0.5)


def summarize(n: int, results: list[CallResult], script: Script, turns: int) -> dict[str, Any]:
    replies = [r for c in results for r in c.replies]
    v2v = [v for r in replies if (v := r.v2v_ms()) is not None]
    expected = script.expected_ms()
    overhead = [v - expected for v in v2v]
    behind = [
        b
        for c in results
        for r in [*c.replies, *([c.greeting] if c.greeting else [])]
        for b in r.behind_ms
    ]
    frames = sum(
        r.frames for c in results for r in [*c.replies, *([c.greeting] if c.greeting else [])]
    )
    late = sum(r.late for c in results for r in [*c.replies, *([c.greeting] if c.greeting else [])])
    errors = [e for c in results for e in c.errors]
    busy = [c for c in results if c.busy]
    busy_s = [c.busy_s for c in busy if c.busy_s is not None]
    lag = [x for c in results for x in c.lag_ms]
    r1 = lambda x: None if x is None else round(x, 1)  # noqa: E731
    return {
        "n": n,
        "turns_planned": n * turns,
        "turns_measured": len(v2v),
        "calls_with_agent_audio": sum(1 for c in results if any(r.frames for r in c.replies)),
        "v2v_p50_ms": r1(percentile(v2v, 50)),
        "v2v_p95_ms": r1(percentile(v2v, 95)),
        "v2v_p99_ms": r1(percentile(v2v, 99)),
        "overhead_p50_ms": r1(percentile(overhead, 50)),
        "overhead_p95_ms": r1(percentile(overhead, 95)),
        "overhead_p99_ms": r1(percentile(overhead, 99)),
        "agent_frames": frames,
        "late_frames": late,
        "jitter_p99_ms": r1(percentile(behind, 99)),
        "errors": len(errors),
        "error_samples": sorted(set(errors))[:10],
        "client_lag_p99_ms": r1(percentile(lag, 99)),
        "client_lag_max_ms": r1(max(lag, default=None)),
        "admitted": n - len(busy),
        "busy_webhook": sum(1 for c in busy if c.busy == "webhook"),
        "busy_stream": sum(1 for c in busy if c.busy == "stream"),
        "busy_answer_p99_ms": r1(None if not busy_s else percentile(busy_s, 99) * 1000.0),
        "busy_answer_max_ms": r1(None if not busy_s else max(busy_s) * 1000.0),
    }


async def measure(
    server: Server,
    n: int,
    *,
    script: Script,
    clips: Clips,
    turns: int,
    gap_s: float,
    turn_timeout: float,
) -> dict[str, Any]:
    log_mark = server.log_size()
    endpoint = server.start()
    try:
        assert server.process is not None
        proc = psutil.Process(server.process.pid)
        greeting = bool(script.greeting)
        warm = await run_calls(
            endpoint,
            n=1,
            turns=1,
            clips=clips,
            greeting=greeting,
            gap_s=gap_s,
            turn_timeout=turn_timeout,
            ramp_s=0,
        )
        if warm[0].errors or not warm[0].replies or warm[0].replies[0].first_at is None:
            raise RuntimeError(
                f"warm-up call failed on {server.name}: {warm[0].errors}; see {server.log_path}"
            )
        await asyncio.sleep(1.0)
        _, rss_idle = process_tree_usage(proc)
        turn_mark = server.turn_mark()
        active = [0]
        samples: list[tuple[float, float, int, int]] = []
        sampler = asyncio.create_task(sample_server(proc, active, samples))
        psutil.cpu_percent()  # starts the machine-wide counter
        client0, wall0 = time.process_time(), time.monotonic()
        try:
            results = await run_calls(
                endpoint,
                n=n,
                turns=turns,
                clips=clips,
                greeting=greeting,
                gap_s=gap_s,
                turn_timeout=turn_timeout,
                active=active,
            )
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        wall = time.monotonic() - wall0
        client_cpu = (time.process_time() - client0) / wall * 100.0
        machine_cpu = psutil.cpu_percent() * psutil.cpu_count()
        await asyncio.sleep(1.0)  # the last turn records reach the database
    finally:
        server.stop()
    row = summarize(n, results, script, turns)
    # CPU while all N calls are up (the ramp and the tail are left out), else over the run.
    full = [s for s in samples if s[3] >= n]
    window = (
        (full[0], full[-1])
        if len(full) >= 2 and full[-1][0] - full[0][0] >= 2.0
        else (samples[0], samples[-1])
    )
    cpu_pct = (window[1][1] - window[0][1]) / max(1e-6, window[1][0] - window[0][0]) * 100.0
    rss_peak = max(s[2] for s in samples)
    row.update(
        {
            "server_cpu_pct": round(cpu_pct, 1),
            "cpu_window_s": round(window[1][0] - window[0][0], 1),
            "cpu_pct_per_call": round(cpu_pct / max(1, row["admitted"]), 2),
            "server_rss_idle_mb": round(rss_idle / 2**20, 1),
            "server_rss_peak_mb": round(rss_peak / 2**20, 1),
            "rss_mb_per_call": round((rss_peak - rss_idle) / 2**20 / n, 2),
            "server_log_errors": server.log_errors(log_mark),
            "client_cpu_pct": round(client_cpu, 1),
            "machine_cpu_pct": round(machine_cpu, 1),
            "wall_s": round(wall, 1),
            **server.own_metrics(turn_mark),
        }
    )
    return row


# --- output ----------------------------------------------------------------------------------

COLUMNS = [
    ("N", "n", "{:>4}"),
    ("turns", "turns_measured", "{:>5}"),
    ("v2v p50", "v2v_p50_ms", "{:>7.0f}"),
    ("p95", "v2v_p95_ms", "{:>5.0f}"),
    ("p99", "v2v_p99_ms", "{:>5.0f}"),
    ("ovh p50", "overhead_p50_ms", "{:>7.1f}"),
    ("ovh p95", "overhead_p95_ms", "{:>7.1f}"),
    ("late", "late_frames", "{:>5}"),
    ("jit p99", "jitter_p99_ms", "{:>7.1f}"),
    ("CPU %", "server_cpu_pct", "{:>6.1f}"),
    ("%/call", "cpu_pct_per_call", "{:>6.2f}"),
    ("RSS MB", "server_rss_peak_mb", "{:>6.0f}"),
    ("MB/call", "rss_mb_per_call", "{:>7.2f}"),
    ("err", "errors", "{:>4}"),
    ("busy", "busy_webhook", "{:>4}"),
    ("b.strm", "busy_stream", "{:>6}"),
    ("busy ms", "busy_answer_max_ms", "{:>7.0f}"),
    ("srv err", "server_log_errors", "{:>7}"),
    ("srv v2v p95", "server_v2v_p95_ms", "{:>11.0f}"),
    ("lag p99", "client_lag_p99_ms", "{:>7.1f}"),
]


def format_table(title: str, rows: list[dict[str, Any]]) -> str:
    header = " ".join(
        f"{name:>{len(fmt.format(0) if 'f' not in fmt else fmt.format(0.0))}}"
        for name, _, fmt in COLUMNS
    )
    lines = [title, header]
    for row in rows:
        cells = []
        for _, key, fmt in COLUMNS:
            value = row.get(key)
            width = len(fmt.format(0) if "f" not in fmt else fmt.format(0.0))
            cells.append(f"{'-':>{width}}" if value is None else fmt.format(value))
        lines.append(" ".join(cells))
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    """ours/pipecat at each N both completed (below 1 = ours better)."""
    out: dict[str, float | None] = {}
    for key in ("overhead_p95_ms", "cpu_pct_per_call", "rss_mb_per_call"):
        a, b = ours.get(key), peer.get(key)
        out[key] = round(a / b, 2) if a is not None and b not in (None, 0) else None
    return out


def print_comparison(ours_rows: list[dict[str, Any]], peer_rows: list[dict[str, Any]]) -> None:
    peer_by_n = {r["n"]: r for r in peer_rows}
    print("\nours/pipecat (below 1 = ours better; overhead ratio is of p95 in ms, and is only")
    print("meaningful where both are positive)")
    print(f"{'N':>4} {'ovh p95':>8} {'CPU/call':>9} {'RSS/call':>9}")
    for row in ours_rows:
        if row["n"] in peer_by_n:
            r = ratios(row, peer_by_n[row["n"]])
            cells = [
                f"{'-' if v is None else v:>{w}}"
                for v, w in zip(r.values(), (8, 9, 9), strict=True)
            ]
            print(f"{row['n']:>4} " + " ".join(cells))


async def sweep(
    target: str, args: argparse.Namespace, script: Script, clips: Clips, workdir: Path
) -> dict[str, Any]:
    if target == "ours":
        server: Server = OursServer(
            script,
            workdir,
            args.database_url,
            args.settings,
            args.server,
            args.workers,
            args.max_calls,
        )
    else:
        server = SERVERS[target](script, workdir)
    server.prepare()
    rows: list[dict[str, Any]] = []
    where = f" ({args.server}, {args.workers} worker(s))" if target == "ours" else ""
    title = (
        f"\n{target}{where}: {args.turns} turns/call, "
        f"expected v2v from the script {script.expected_ms():.0f} ms"
    )
    print(title, flush=True)
    for n in args.sweep:
        load = os.getloadavg()[0]
        print(f"  N={n} (load average {load:.2f}) ...", flush=True)
        row = await measure(
            server,
            n,
            script=script,
            clips=clips,
            turns=args.turns,
            gap_s=args.gap_ms / 1000,
            turn_timeout=args.turn_timeout,
        )
        row["load_avg_before"] = round(load, 2)
        rows.append(row)
        print(format_table("", [row]).splitlines()[-1], flush=True)
        for sample in row["error_samples"][:3]:
            print(f"      error: {sample}")
        ovh = row["overhead_p95_ms"]
        if row["errors"] > n * args.turns * 0.5 or (
            ovh is not None and ovh > args.stop_overhead_ms
        ):
            print(
                f"  {target} saturated at N={n} (overhead p95 {ovh} ms, "
                f"{row['errors']} errors): sweep stops here"
            )
            break
    print(format_table(f"\n{target} (times in ms; CPU % of one core, 200 = both)", rows))
    return {"target": target, "rows": rows, "log": str(server.log_path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sweep", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50, 100, 200]
    )
    parser.add_argument("--target", default="ours", help="ours, pipecat or ours,pipecat")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=600, help="caller silence before each turn")
    parser.add_argument("--turn-timeout", type=float, default=15.0)
    parser.add_argument(
        "--stop-overhead-ms",
        type=float,
        default=1000.0,
        help="end the sweep of a target once its overhead p95 passes this",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="print only; do not write bench/results/"
    )
    parser.add_argument(
        "--settings",
        default="bench.settings",
        help="ours: Django settings module (it must register the scripted engines)",
    )
    parser.add_argument(
        "--tag", default="", help="results go to bench/results/<target>[-<tag>].json"
    )
    parser.add_argument(
        "--line-noise-dbfs",
        default="-60",
        help="RMS of the noise on the caller's line, or 'off' for digital silence",
    )
    parser.add_argument(
        "--server",
        default="daphne",
        choices=("daphne", "uvicorn", "granian"),
        help="ours: the ASGI server (voiceapp/serve.py)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="ours: worker processes sharing the port"
    )
    parser.add_argument(
        "--max-calls",
        type=int,
        default=0,
        help="ours: MAX_CALLS_PER_PROCESS (and the loop-lag limit, 100 ms) for an overload "
        "run; 0 (default): no admission limit, the sweep measures the process itself",
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="ours: a database to migrate and use (default: a temporary SQLite file)",
    )
    defaults = Script()
    for name in (
        "stt_ms",
        "llm_ttft_ms",
        "tokens_per_s",
        "tts_ttfb_ms",
        "ms_per_char",
        "tts_realtime",
    ):
        parser.add_argument(
            "--" + name.replace("_", "-"), type=float, default=getattr(defaults, name)
        )
    parser.add_argument("--silence-timeout-ms", type=int, default=defaults.silence_timeout_ms)
    parser.add_argument(
        "--turn-detection", choices=("silence", "smart"), default=defaults.turn_detection,
        help="ours: end of turn by the fixed timer (as the peer) or Smart Turn",
    )
    args = parser.parse_args()
    script = Script(
        **{
            k: getattr(args, k)
            for k in (
                "stt_ms",
                "llm_ttft_ms",
                "tokens_per_s",
                "tts_ttfb_ms",
                "ms_per_char",
                "tts_realtime",
                "silence_timeout_ms",
                "turn_detection",
            )
        }
    )
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    unknown = [t for t in targets if t not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}; use {', '.join(SERVERS)}")
    command = "bench/load.py " + " ".join(sys.argv[1:])
    machine = machine_info()
    print(
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; "
        f"load average {machine['load_avg']}"
    )
    line = (
        "digital silence" if args.line_noise_dbfs == "off" else f"{args.line_noise_dbfs} dBFS noise"
    )
    print(f"script: {asdict(script)}; caller line: {line}")
    noise = None if args.line_noise_dbfs == "off" else float(args.line_noise_dbfs)
    clips = Clips.build(noise_dbfs=noise)
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    print(f"server logs and database: {workdir}")
    outputs = {}
    for target in targets:
        outputs[target] = asyncio.run(sweep(target, args, script, clips, workdir))
        if not args.no_save:
            RESULTS.mkdir(parents=True, exist_ok=True)
            doc = {
                "target": target,
                "command": command,
                "machine": machine,
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "script": asdict(script),
                "expected_v2v_ms": round(script.expected_ms(), 1),
                "turns_per_call": args.turns,
                "line_noise_dbfs": noise,
                "rows": outputs[target]["rows"],
            }
            name = f"{target}-{args.tag}" if args.tag else target
            (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    if "ours" in outputs and "pipecat" in outputs:
        print_comparison(outputs["ours"]["rows"], outputs["pipecat"]["rows"])
    if not args.no_save:
        try:
            from bench.chart import draw

            print(f"\nchart: {draw()}")
        except ImportError as exc:  # matplotlib is imported by draw()
            print(f"\nno chart ({exc}); pip install matplotlib, then run bench/chart.py")


if __name__ == "__main__":
    main()
