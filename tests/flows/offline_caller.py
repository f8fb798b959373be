"""A scripted caller booking through the demo flow on the offline LLM (no key, no server).

A real :class:`CallSession` with the seeded profile's config and flow, the real local LLM
answering by grammar (engines/local_tools.py), real speech through the real VAD; the
caller's words reach the session through :class:`HeardSTT` (what the caller said, as a
perfect transcriber would hear it: the LLM is what is measured, not Whisper) and the
agent's words are synthesized by the fast scripted TTS.

The caller answers what the agent asks (people, day, time, name, "is that right?"), so a
model that asks in another order still gets its answers. Used by the end-to-end test
(tests/flows/test_offline_flow.py) and by ``bench/offline_flow.py`` for the reliability
figures in docs/flows.md.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

from bench.scripted_engines import ScriptedTTS
from orchestrator.config import CallConfig, EngineCredentials
from orchestrator.engines import Engines, create_engine
from orchestrator.session import CallSession, EndReason
from tests.orchestrator.conftest import RecordingRecorder, RecordingTransport
from tests.speech import silence_pcm16, speech_pcm16

# The caller's details and the lines that give them.
DETAILS = {"party_size": 4, "day": "Friday", "time": "nine", "name": "Lola"}
OPENING = "Hi, I would like to book a table, please."
LINES = {
    "party_size": "Four people.",
    "day": "On Friday.",
    "time": "At nine in the evening.",
    "name": "My name is Lola.",
}
YES = "Yes, that is right."
ALL_AT_ONCE = "Four people on Friday at nine in the evening, my name is Lola."
# What an agent's question asks for, by its words (English demo).
ASKS = [
    ("party_size", re.compile(r"how many|people|guests|party|number of", re.I)),
    ("day", re.compile(r"\bday\b|which day|what day|\bdate\b|\bwhen\b", re.I)),
    ("time", re.compile(r"\btime\b|what time|\bhour\b", re.I)),
    ("name", re.compile(r"\bname\b", re.I)),
]
CONFIRMING = re.compile(r"\bright\b|\bcorrect\b|confirm|is that ok|shall i book", re.I)


class CarrierTransport(RecordingTransport):
    """A carrier that can transfer (the demo flow's transfer node ends the call so)."""

    def __init__(self) -> None:
        super().__init__(16000)
        self.transfers: list[str] = []

    async def transfer(self, destination: str) -> None:
        self.transfers.append(destination)


class HeardSTT:
    """Hears exactly what the caller said last (see the module docstring)."""

    name = "heard"

    def __init__(self) -> None:
        self.current = ""

    async def transcribe(
        self, pcm16: bytes, *, sample_rate: int, language: str, prompt: str = ""
    ) -> str:
        return self.current


@dataclass(slots=True, kw_only=True)
class FlowCallResult:
    end_reason: EndReason | None
    flow: dict[str, Any]
    said: list[tuple[str, str]] = field(default_factory=list)  # (who, text) in order
    tools: list[tuple[str, Any, str]] = field(default_factory=list)  # (name, args, status)
    seconds: float = 0.0

    @property
    def path(self) -> list[str]:
        return [step["node"] for step in self.flow.get("path", [])]

    @property
    def booked(self) -> dict[str, Any] | None:
        """The arguments of the demo booking that succeeded, if one did."""
        for name, arguments, status in self.tools:
            if name == "demo_booking" and status == "ok":
                return arguments
        return None


def next_line(agent_text: str, given: set[str], *, all_at_once: bool = False) -> str:
    """What the caller says to the agent's last words: what it asks for (or the first
    detail not given yet), or every detail at once the first time with ``all_at_once``."""
    if CONFIRMING.search(agent_text) and len(given) == len(LINES):
        return YES
    if all_at_once and not given:
        given.update(LINES)
        return ALL_AT_ONCE
    asked = [key for key, pattern in ASKS if pattern.search(agent_text) and key not in given]
    missing = [key for key in LINES if key not in given]
    key = (asked or missing or [None])[0]
    if key is None:
        return YES
    given.add(key)
    return LINES[key]


def offline_config(config: CallConfig) -> CallConfig:
    """The profile's config for a session without a carrier: a plain silence timer (no
    turn model to load) and no barge-in (the caller waits for the agent)."""
    return replace(config, turn_detection="silence", silence_timeout_ms=500,
                   barge_in_enabled=False, call_id=config.call_id or "offline-flow")  # fmt: skip


async def book_by_phone(
    config: CallConfig,
    *,
    max_caller_turns: int = 10,
    timeout_s: float = 240.0,
    all_at_once: bool = False,
) -> FlowCallResult:
    """One call: the caller opens with a booking request, then answers what is asked (all
    four details in its second line with ``all_at_once``), until the agent hangs up,
    ``max_caller_turns`` are said, or ``timeout_s`` passes."""
    config = offline_config(config)
    stt = HeardSTT()
    llm = create_engine("llm", config.llm[0], EngineCredentials(), config=config)
    # As the server does at start-up (calls/preload.py): the model loaded and the role
    # prompt evaluated before the first caller's turn.
    await llm.warmup()
    tts = ScriptedTTS(ttfb_ms=20, ms_per_char=8, chunk_ms=40, realtime=0)
    recorder = RecordingRecorder()
    transport = CarrierTransport()
    session = CallSession(config, engines=Engines(stt=stt, llm=llm, tts=tts),
                          transport=transport, recorder=recorder)  # fmt: skip
    started = time.monotonic()
    task = asyncio.create_task(session.run())
    given: set[str] = set()
    reason: EndReason | None = None
    try:
        async with asyncio.timeout(timeout_s):
            line = OPENING
            for _ in range(max_caller_turns):
                agent_turns = await _agent_done(recorder, task, len(recorder.by_role("assistant")))
                if task.done():
                    break
                if line is None:
                    agent_said = recorder.by_role("assistant")[-1].text
                    line = next_line(agent_said, given, all_at_once=all_at_once)
                stt.current = line
                session.push_audio(silence_pcm16(200) + speech_pcm16(line) + silence_pcm16(900))
                line = None
                await _wait_for(lambda n=agent_turns: len(recorder.by_role("assistant")) > n
                                or task.done())  # fmt: skip
            if not task.done():
                session.stop(EndReason.CALLER_HANGUP)
            reason = await task
    except TimeoutError:
        task.cancel()
        await asyncio.wait([task], timeout=10)
    said = [(t.role, t.text) for t in recorder.turns if t.role in ("user", "assistant")]
    tools = [(t.tool.name, t.tool.arguments, t.tool.status) for t in recorder.turns
             if t.role == "tool" and t.tool is not None]  # fmt: skip
    ended = recorder.ended[0]["metrics"] if recorder.ended else {}
    return FlowCallResult(end_reason=reason, flow=ended.get("flow") or {}, said=said,
                          tools=tools, seconds=time.monotonic() - started)  # fmt: skip


async def _agent_done(recorder: RecordingRecorder, task: asyncio.Task, at_least: int) -> int:
    """Wait until the agent has said something (at least ``at_least`` turns) and is quiet."""
    await _wait_for(lambda: len(recorder.by_role("assistant")) >= max(at_least, 1) or task.done())
    return len(recorder.by_role("assistant"))


async def _wait_for(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.05)
