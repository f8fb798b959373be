"""Reply stress: do callers ever sit in silence? Real offline engines, barge-ins, CPU load.

N concurrent calls run in this process on the shipped local engines (Whisper tiny.en,
the local llama.cpp LLM, piper), sharing their single model threads as production does.
Each caller speaks real speech (espeak-ng) at real-time pace; every third turn barges in
0.4 s after the agent starts answering. ``--contention`` keeps the other core busy.

For every turn the caller then waits for the agent: a reply (first agent frame) or the
apology/busy message that ends the call. Printed per run:
- turns, replies, barge-ins, calls ended by apology/busy (with their reasons);
- silent: turns after which nothing came within the engine timeout + 6 s (target 0);
- unanswered: user turns the session marked as such (they carry a reason);
- wait p50/p95/max from the end of the caller's speech to the agent's first frame.

Usage: ``python -m bench.reply_stress --calls 3 --turns 17 --contention``
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.audio import frame_bytes  # noqa: E402
from orchestrator.config import CallConfig, EngineCredentials  # noqa: E402
from orchestrator.engines import build_engines  # noqa: E402
from orchestrator.session import CallSession, EndReason, TurnRecord  # noqa: E402
from tests.speech import speech_pcm16  # noqa: E402

RATE = 16000
FRAME = frame_bytes(RATE)
LINES = [
    "Hello, I would like to book a table for four people on Friday.",
    "At eight in the evening, please.",
    "My name is John Smith.",
    "Do you have a table near the window?",
    "Can I bring a dog?",
    "What time do you close on Fridays?",
]


class Transport:
    sample_rate = RATE

    def __init__(self) -> None:
        self.frames = 0
        self.last_frame_at = 0.0
        self.closed: str | None = None

    async def send_audio(self, frame: bytes) -> None:
        self.frames += 1
        self.last_frame_at = time.monotonic()

    async def clear_audio(self) -> None:
        pass

    async def send_event(self, event: dict[str, Any]) -> None:
        pass

    async def close(self, reason: str) -> None:
        self.closed = reason


class Recorder:
    def __init__(self) -> None:
        self.turns: list[TurnRecord] = []
        self.unanswered: list[tuple[int, str]] = []
        self.ended: dict[str, Any] = {}

    async def call_started(self, config: CallConfig) -> None:
        pass

    async def turn_recorded(self, turn: TurnRecord) -> None:
        self.turns.append(turn)

    async def turn_unanswered(self, *, sequence: int, reason: str) -> None:
        self.unanswered.append((sequence, reason))

    async def heartbeat(self) -> None:
        pass

    async def call_ended(self, *, reason: EndReason, error: str, metrics: dict[str, Any]) -> None:
        self.ended = {"reason": str(reason), "error": error, "metrics": metrics}


@dataclass
class CallResult:
    turns: int = 0
    replies: int = 0
    barge_ins: int = 0
    silent: int = 0
    waits_ms: list[float] = field(default_factory=list)
    end: dict[str, Any] = field(default_factory=dict)
    unanswered: list[tuple[int, str]] = field(default_factory=list)


async def run_call(n: int, turns: int, timeout_s: float, speech: list[bytes]) -> CallResult:
    config = CallConfig(
        call_id=f"stress-{n}",
        language="en-US",
        system_prompt="You are the receptionist of a restaurant. Answer in one short sentence.",
        greeting="",
        engine_timeout_s=timeout_s,
        idle_timeout_s=120,
        max_tokens=200,  # the profiles' default
        apology_message="Sorry, something went wrong.",
    )
    engines = build_engines(config, EngineCredentials())
    await engines.warmup()  # as the server's start-up preload does (calls/preload.py)
    transport, recorder = Transport(), Recorder()
    session = CallSession(config, engines=engines, transport=transport, recorder=recorder)
    task = asyncio.create_task(session.run())
    result = CallResult()
    outbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def feed() -> None:
        """Real-time 20 ms frames: queued speech, else line silence (as a carrier sends)."""
        silence = b"\x00" * FRAME
        next_at = time.monotonic()
        pending = b""
        while True:
            if not pending and not outbox.empty():
                pending = outbox.get_nowait()
            frame, pending = (pending[:FRAME], pending[FRAME:]) if pending else (silence, b"")
            session.push_audio(frame.ljust(FRAME, b"\x00"))
            next_at += 0.02
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    feeder = asyncio.create_task(feed())
    # The session's watchdog answers by engine_timeout + 3 s after the end of the turn;
    # the apology/busy message itself then needs TTS: 3 s more.
    budget = timeout_s + 6.0 + config.silence_timeout_ms / 1000.0
    try:
        for i in range(turns):
            if task.done():
                break
            audio = speech[(n + i) % len(speech)]
            frames_before = transport.frames
            await outbox.put(audio)
            spoken_at = time.monotonic() + len(audio) / (2 * RATE)
            result.turns += 1
            barge = i % 3 == 2 and i < turns - 1
            replied = False
            while time.monotonic() < spoken_at + budget and not task.done():
                if transport.frames > frames_before:
                    replied = True
                    result.waits_ms.append((time.monotonic() - spoken_at) * 1000.0)
                    break
                await asyncio.sleep(0.01)
            if task.done():
                break  # ended by apology or busy: the caller was told
            if not replied:
                result.silent += 1
                print(f"call {n} turn {i}: silent for {budget:.0f} s", flush=True)
                continue
            result.replies += 1
            if barge:
                result.barge_ins += 1
                await asyncio.sleep(0.4)  # speak over the agent's answer
                continue
            # Let the agent finish before the next turn, as a polite caller would.
            while not task.done() and time.monotonic() - transport.last_frame_at < 0.6:
                await asyncio.sleep(0.05)
    finally:
        feeder.cancel()
        if not task.done():
            session.stop(EndReason.CALLER_HANGUP)
        try:
            await asyncio.wait_for(task, 60)
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on
            result.end = {"reason": "error", "error": f"{type(exc).__name__}: {exc}"}
        await engines.aclose()
    result.end = result.end or recorder.ended
    result.unanswered = recorder.unanswered
    return result


def _burn() -> None:
    while True:
        pass


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--turns", type=int, default=17, help="per call")
    parser.add_argument("--timeout", type=float, default=10.0, help="engine_timeout_s")
    parser.add_argument("--contention", action="store_true", help="busy-loop the other core")
    args = parser.parse_args()

    speech = [speech_pcm16(line) for line in LINES]
    burner = None
    if args.contention:
        burner = multiprocessing.Process(target=_burn, daemon=True)
        burner.start()
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(run_call(n, args.turns, args.timeout, speech) for n in range(args.calls))
        )
    finally:
        if burner is not None:
            burner.terminate()
    waits = sorted(w for r in results for w in r.waits_ms)

    def pct(q: float) -> str:
        return f"{waits[min(len(waits) - 1, int(q * len(waits)))]:.0f}" if waits else "-"

    print(
        f"\ncalls={args.calls} turns={sum(r.turns for r in results)} "
        f"replies={sum(r.replies for r in results)} barge_ins={sum(r.barge_ins for r in results)} "
        f"silent={sum(r.silent for r in results)} "
        f"unanswered_marked={sum(len(r.unanswered) for r in results)} "
        f"contention={args.contention} wall={time.monotonic() - started:.0f}s"
    )
    if waits:
        print(
            f"wait to first agent frame ms: p50={statistics.median(waits):.0f} "
            f"p95={pct(0.95)} max={waits[-1]:.0f}"
        )
    for n, r in enumerate(results):
        reasons = "; ".join(f"{s}: {why}" for s, why in r.unanswered)
        print(f"call {n}: end={r.end.get('reason')} {r.end.get('error', '')} {reasons}".rstrip())


if __name__ == "__main__":
    asyncio.run(main())
