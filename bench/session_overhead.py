"""Session overhead: N concurrent calls in one process, scripted engines of fixed latency.

Each call is a phone call as the carrier would drive it: real speech (espeak-ng)
arrives as 8 kHz µ-law 20 ms frames at real-time pace and goes through the same path
as production (µ-law decode -> 8->16 kHz streaming resample -> push_audio -> Silero
VAD); agent audio leaves as 8 kHz frames that the transport µ-law encodes.

Printed:
- overhead = voice-to-voice minus what the script makes unavoidable: the end-of-turn
  silence (silence_timeout, rounded up to Silero's 32 ms windows), STT delay, LLM
  time-to-first-token plus the tokens needed to complete the first sentence, and
  TTS time-to-first-byte. What remains is the session's own cost (queues, VAD,
  scheduling under load) plus up to ±20 ms of alignment between 20 ms carrier frames
  and 32 ms VAD windows. Target p95 < 25 ms.
- pipeline overhead: the same, but measured from the detected end of turn
  (voice-to-voice minus ``endpointing_ms``), so the frame/window alignment is out.
- endpointing excess: ``endpointing_ms`` minus silence_timeout (alignment + VAD lag).
- CPU seconds per call-minute for the whole process (VAD, codecs, resampling,
  asyncio, scripted engines): target < 1 s.
- audio health as the calls stored it (docs/operations.md "Audio health"): late agent
  frames summed over the calls, the worst call's longest agent gap and loop-lag p99.

Usage: ``python -m bench.session_overhead -n 1 10 50 [--turns 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scripted_engines import ScriptedLLM, ScriptedSTT, ScriptedTTS  # noqa: E402
from orchestrator.audio import (  # noqa: E402
    StreamResampler,
    frame_bytes,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from orchestrator.config import CallConfig  # noqa: E402
from orchestrator.engines import Engines  # noqa: E402
from orchestrator.sentences import SentenceSplitter  # noqa: E402
from orchestrator.session import CallSession, EndReason, TurnRecord  # noqa: E402
from orchestrator.silero import WINDOW_MS, new_vad  # noqa: E402
from tests.speech import silence_pcm16, speech_pcm16  # noqa: E402

STT_MS = 120.0
LLM_TTFT_MS = 250.0
TOKENS_PER_S = 60.0
TTS_TTFB_MS = 120.0
SILENCE_TIMEOUT_MS = 700
REPLY = "Of course, I can do that. For how many people would you like the table tonight?"
UTTERANCES = [
    "Hello, I would like to book a table for tonight.",
    "We are four people, around nine please.",
    "Perfect, thank you very much.",
]


def first_sentence_wait_ms() -> float:
    """Time the scripted LLM needs after its first token until the first sentence is cut."""
    tokens = re.findall(r"\S+\s*", REPLY)
    splitter = SentenceSplitter()
    for i, token in enumerate(tokens):
        if splitter.push(token):
            return i * 1000.0 / TOKENS_PER_S
    return (len(tokens) - 1) * 1000.0 / TOKENS_PER_S


def expected_v2v_ms() -> float:
    silence = math.ceil(SILENCE_TIMEOUT_MS / WINDOW_MS) * WINDOW_MS
    return silence + STT_MS + LLM_TTFT_MS + first_sentence_wait_ms() + TTS_TTFB_MS


class PhoneTransport:
    """Encodes every frame to µ-law like the Twilio/Telnyx serializers; drops the bytes."""

    sample_rate = 8000

    def __init__(self) -> None:
        self.frames = 0
        self.closed = ""

    async def send_audio(self, frame: bytes) -> None:
        pcm16_to_ulaw(frame)
        self.frames += 1

    async def clear_audio(self) -> None:
        pass

    async def send_event(self, event: dict[str, Any]) -> None:
        pass

    async def close(self, reason: str) -> None:
        self.closed = reason


@dataclass(slots=True, kw_only=True)
class Recorder:
    turns: list[TurnRecord] = field(default_factory=list)
    ended: list[dict[str, Any]] = field(default_factory=list)

    async def call_started(self, config: CallConfig) -> None:
        pass

    async def turn_recorded(self, turn: TurnRecord) -> None:
        self.turns.append(turn)

    async def heartbeat(self) -> None:
        pass

    async def call_ended(self, *, reason: EndReason, error: str, metrics: dict[str, Any]) -> None:
        self.ended.append({"reason": reason, "error": error, "metrics": metrics})

    def assistant_turns(self) -> int:
        return sum(1 for t in self.turns if t.role == "assistant")


def ulaw_frames(pcm16_8k: bytes) -> list[bytes]:
    size = frame_bytes(8000)
    pcm16_8k += b"\x00" * (-len(pcm16_8k) % size)
    return [pcm16_to_ulaw(pcm16_8k[i : i + size]) for i in range(0, len(pcm16_8k), size)]


async def one_call(index: int, turns: int, clips: list[list[bytes]], silence: bytes) -> Recorder:
    config = CallConfig(
        call_id=f"bench-{index}",
        channel="twilio",
        language="en-US",
        silence_timeout_ms=SILENCE_TIMEOUT_MS,
        idle_timeout_s=60,
        playout_lead_ms=160,
    )
    engines = Engines(
        stt=ScriptedSTT(delay_ms=STT_MS, text="a table for four"),
        llm=ScriptedLLM(ttft_ms=LLM_TTFT_MS, tokens_per_s=TOKENS_PER_S, reply=REPLY),
        tts=ScriptedTTS(ttfb_ms=TTS_TTFB_MS, ms_per_char=20, chunk_ms=100, realtime=2),
    )
    recorder = Recorder()
    session = CallSession(config, engines=engines, transport=PhoneTransport(), recorder=recorder)
    task = asyncio.create_task(session.run())
    inbound = StreamResampler(8000, 16000)  # one per call and direction

    loop_start = time.monotonic()
    frame_no = 0

    async def send(ulaw: bytes) -> None:
        nonlocal frame_no
        # Frames arrive on the carrier's wall-clock schedule, not after a sleep each.
        frame_no += 1
        delay = loop_start + frame_no * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        session.push_audio(inbound.process(ulaw_to_pcm16(ulaw)))

    await asyncio.sleep(random.random())  # calls do not start in lockstep
    loop_start = time.monotonic()
    for turn in range(turns):
        for frame in clips[turn % len(clips)]:
            await send(frame)
        # keep streaming silence (as a carrier does) until the agent has answered
        while recorder.assistant_turns() <= turn and not task.done():
            await send(silence)
        for _ in range(25):
            await send(silence)
    session.stop(EndReason.CALLER_HANGUP)
    await task
    return recorder


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def run(n: int, turns: int) -> dict[str, float]:
    clips = [ulaw_frames(speech_pcm16(text, rate=8000)) for text in UTTERANCES]
    silence = ulaw_frames(silence_pcm16(20, rate=8000))[0]
    # A running server has the shared Silero model loaded; measure steady state, not the
    # model load (~90 ms CPU) at t=0.
    await new_vad()
    cpu0, wall0 = time.process_time(), time.monotonic()
    recorders = await asyncio.gather(*(one_call(i, turns, clips, silence) for i in range(n)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    call_minutes = sum(r.ended[0]["metrics"]["duration_s"] for r in recorders) / 60.0
    expected = expected_v2v_ms()
    v2v = [
        t.metrics.voice_to_voice_ms
        for r in recorders
        for t in r.turns
        if t.role == "assistant" and t.metrics and t.metrics.voice_to_voice_ms is not None
    ]
    overhead = [v - expected for v in v2v]
    silence = math.ceil(SILENCE_TIMEOUT_MS / WINDOW_MS) * WINDOW_MS
    pipeline = [
        t.metrics.voice_to_voice_ms - t.metrics.endpointing_ms - (expected - silence)
        for r in recorders
        for t in r.turns
        if t.role == "assistant"
        and t.metrics
        and t.metrics.voice_to_voice_ms is not None
        and t.metrics.endpointing_ms is not None
    ]
    endpointing = [
        t.metrics.endpointing_ms - SILENCE_TIMEOUT_MS
        for r in recorders
        for t in r.turns
        if t.role == "assistant" and t.metrics and t.metrics.endpointing_ms is not None
    ]
    # Audio health (orchestrator/audio_health.py) as each call stored it.
    health = [r.ended[0]["metrics"].get("audio_health") or {} for r in recorders]
    lags = [h["loop_lag_p99_ms"] for h in health if h.get("loop_lag_p99_ms") is not None]
    return {
        "sessions": n,
        "turns": len(v2v),
        "v2v_p50_ms": percentile(v2v, 50),
        "overhead_p50_ms": percentile(overhead, 50),
        "overhead_p95_ms": percentile(overhead, 95),
        "pipeline_p50_ms": percentile(pipeline, 50),
        "pipeline_p95_ms": percentile(pipeline, 95),
        "endpoint_xs_p50": percentile(endpointing, 50),
        "cpu_s_call_min": cpu / call_minutes,
        "wall_s": wall,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "late_frames": sum(int(h.get("late_frames") or 0) for h in health),
        "agent_gap_max": max(
            (float(h.get("max_agent_gap_ms") or 0.0) for h in health), default=0.0
        ),
        "lag_p99_max": max(lags, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    print(
        f"expected v2v from the script: {expected_v2v_ms():.0f} ms "
        f"(silence {SILENCE_TIMEOUT_MS} ms, STT {STT_MS:.0f}, TTFT {LLM_TTFT_MS:.0f} "
        f"+ first sentence {first_sentence_wait_ms():.0f}, TTS TTFB {TTS_TTFB_MS:.0f})"
    )
    header = (
        "sessions",
        "turns",
        "v2v_p50_ms",
        "overhead_p50_ms",
        "overhead_p95_ms",
        "pipeline_p50_ms",
        "pipeline_p95_ms",
        "endpoint_xs_p50",
        "cpu_s_call_min",
        "wall_s",
        "maxrss_mb",
        "late_frames",  # summed over the calls
        "agent_gap_max",  # ms, the worst call
        "lag_p99_max",  # ms, the worst call's loop-lag p99
    )
    print(" ".join(f"{h:>12}" for h in header))
    for n in args.n:
        result = asyncio.run(run(n, args.turns))
        print(
            " ".join(
                f"{result[h]:>12.1f}" if isinstance(result[h], float) else f"{result[h]:>12}"
                for h in header
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
