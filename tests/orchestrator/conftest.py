"""Recording transport/recorder and a session harness for orchestrator tests.

Mocks only at the network edge: scripted engines (``bench.scripted_engines``), a
transport that records what would go on the wire, a recorder that records reports.
Audio goes through the real Silero VAD.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from bench.scripted_engines import ScriptedLLM, ScriptedSTT, ScriptedTTS
from orchestrator.audio import frame_bytes
from orchestrator.config import CallConfig
from orchestrator.engines import Engines
from orchestrator.session import CallSession, EndReason, TurnRecord
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16

pytestmark = pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox needed")


class RecordingTransport:
    """Records frames, clears, events and close, in one ordered ``log``."""

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self.frames: list[bytes] = []
        self.events: list[dict[str, Any]] = []
        self.clears = 0
        self.closed: str | None = None
        self.log: list[tuple[str, Any]] = []
        self.on_audio: Callable[[int], None] | None = None  # called with the frame index

    async def send_audio(self, frame: bytes) -> None:
        assert len(frame) == frame_bytes(self.sample_rate), "one 20 ms frame at a time"
        assert self.closed is None, "audio after close"
        if self.on_audio is not None:
            self.on_audio(len(self.frames))
        self.frames.append(frame)
        self.log.append(("audio", len(self.frames)))

    async def clear_audio(self) -> None:
        self.clears += 1
        self.log.append(("clear", None))

    async def send_event(self, event: dict[str, Any]) -> None:
        assert "type" in event
        self.events.append(event)
        self.log.append(("event", event))

    async def close(self, reason: str) -> None:
        self.closed = reason
        self.log.append(("close", reason))

    def states(self) -> list[str]:
        return [e["state"] for e in self.events if e["type"] == "state"]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


class RecordingRecorder:
    def __init__(self) -> None:
        self.started: list[CallConfig] = []
        self.turns: list[TurnRecord] = []
        self.heartbeats = 0
        self.ended: list[dict[str, Any]] = []
        self.unanswered: list[tuple[int, str]] = []  # (sequence, reason)

    async def call_started(self, config: CallConfig) -> None:
        self.started.append(config)

    async def turn_recorded(self, turn: TurnRecord) -> None:
        self.turns.append(turn)

    async def turn_unanswered(self, *, sequence: int, reason: str) -> None:
        self.unanswered.append((sequence, reason))

    async def heartbeat(self) -> None:
        self.heartbeats += 1

    async def call_ended(
        self, *, reason: EndReason, error: str, metrics: dict[str, Any], transferred_to: str = ""
    ) -> None:
        self.ended.append(
            {"reason": reason, "error": error, "metrics": metrics, "transferred_to": transferred_to}
        )

    def by_role(self, role: str) -> list[TurnRecord]:
        return [t for t in self.turns if t.role == role]


BASE_CONFIG = CallConfig(
    call_id="test-call",
    language="en-US",
    system_prompt="You are a test agent.",
    greeting="",
    # Most tests are about the session, not end of turn: a plain silence timer (the
    # smart mode has its own tests, tests/orchestrator/test_turn_taking.py).
    turn_detection="silence",
    silence_timeout_ms=400,
    idle_timeout_s=30.0,
    playout_lead_ms=60,
    engine_timeout_s=2.0,
    idle_reprompt="Are you still there?",
    goodbye_message="Goodbye.",
    apology_message="Sorry, something went wrong.",
)


class Harness:
    def __init__(
        self,
        *,
        config: CallConfig | None = None,
        stt: ScriptedSTT | None = None,
        llm: ScriptedLLM | None = None,
        tts: ScriptedTTS | None = None,
        sample_rate: int = 16000,
        recorder: RecordingRecorder | None = None,
        turn_model: Any = None,
        transport: RecordingTransport | None = None,
    ) -> None:
        self.config = config or BASE_CONFIG
        self.stt = stt or ScriptedSTT(delay_ms=20, text="I would like a table")
        self.llm = llm or ScriptedLLM(ttft_ms=30, tokens_per_s=200, reply="Sure. For how many?")
        # Fast synthesis, short audio: tests run in seconds, pacing stays real.
        self.tts = tts or ScriptedTTS(ttfb_ms=20, ms_per_char=8, chunk_ms=40, realtime=0)
        self.transport = transport or RecordingTransport(sample_rate)
        self.recorder = recorder or RecordingRecorder()
        self.session = CallSession(
            self.config,
            engines=Engines(stt=self.stt, llm=self.llm, tts=self.tts),
            transport=self.transport,
            recorder=self.recorder,
            turn_model=turn_model,
        )
        self.task: asyncio.Task[EndReason] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.session.run())

    def say(self, text: str = "I would like to book a table for two people.") -> None:
        """Real speech then enough silence to end the turn (faster than real time)."""
        self.session.push_audio(silence_pcm16(200) + speech_pcm16(text) + silence_pcm16(800))

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.task is not None and self.task.done():
                    self.task.result()  # surface a crash instead of waiting out the timeout
                    raise AssertionError("session ended while waiting")
                await asyncio.sleep(0.005)

    async def finish(
        self, reason: EndReason = EndReason.CALLER_HANGUP, timeout: float = 10.0
    ) -> EndReason:
        assert self.task is not None
        self.session.stop(reason)
        async with asyncio.timeout(timeout):
            return await self.task

    async def result(self, timeout: float = 10.0) -> EndReason:
        assert self.task is not None
        async with asyncio.timeout(timeout):
            return await self.task


@pytest.fixture
async def make_harness() -> AsyncIterator[Callable[..., Harness]]:
    created: list[Harness] = []

    def make(**kwargs: Any) -> Harness:
        overrides = kwargs.pop("overrides", None)
        if overrides:
            kwargs["config"] = replace(kwargs.get("config") or BASE_CONFIG, **overrides)
        harness = Harness(**kwargs)
        created.append(harness)
        return harness

    yield make
    for harness in created:
        if harness.task is not None and not harness.task.done():
            harness.task.cancel()
            await asyncio.wait([harness.task], timeout=10)


# The root conftest's autouse fixtures configure Django (global-stop state in Redis).
# The call engine is tested without Django: these same-named fixtures replace them
# for tests under tests/orchestrator/ so `pytest -p no:django` works here.
@pytest.fixture(scope="session")
def redis_key_prefix() -> str:
    return ""


@pytest.fixture
def calls_not_globally_stopped() -> None:
    return None


@pytest.fixture(scope="session")
def release_leftover_db_sessions() -> None:
    return None
