"""Scripted STT/LLM/TTS with fixed latencies: the network edge for tests and benchmarks.

They live in ``bench/``, never in the product package. Use them directly::

    Engines(stt=ScriptedSTT(delay_ms=50, text="hola"), llm=ScriptedLLM(...), tts=ScriptedTTS(...))

or through the registry: ``orchestrator.engines.register("scripted", "bench.scripted_engines")``
and an ``EngineSpec(engine="scripted", model="<options>")`` where ``<options>`` is a
``;``-separated ``key=value`` list of the constructor's keyword arguments, e.g.
``model="delay_ms=50;text=hola"`` (STT), ``model="ttft_ms=200;tokens_per_s=40;reply=Hola. ¿Qué tal?"``
(LLM), ``model="ttfb_ms=80;ms_per_char=50"`` (TTS); ``fail=1`` gives the failing mode.
Options not given take the module-level ``DEFAULTS`` for that role.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from orchestrator.config import EngineCredentials, EngineSpec
from orchestrator.engines import EngineError
from orchestrator.tools import ToolCall

DEFAULTS: dict[str, dict[str, Any]] = {
    "stt": {"delay_ms": 50.0, "text": "hello, I would like to book a table"},
    "llm": {
        "ttft_ms": 150.0,
        "tokens_per_s": 50.0,
        "reply": "Of course. For how many people would you like the table?",
    },
    "tts": {"ttfb_ms": 80.0, "ms_per_char": 60.0, "chunk_ms": 100.0, "realtime": 1.0},
}


class ScriptedSTT:
    """Returns ``text`` (or the next of ``texts``) after ``delay_ms``."""

    def __init__(
        self,
        *,
        delay_ms: float = 50.0,
        text: str = "hello",
        texts: list[str] | None = None,
        fail: bool = False,
        hang: bool = False,
        overloaded: bool = False,
        name: str = "scripted-stt",
    ) -> None:
        self.name = name
        self.delay_ms = float(delay_ms)
        self.texts = list(texts) if texts else [text]
        self.fail = fail
        self.hang = hang  # never answer: exercises the session's engine timeout
        self.overloaded = overloaded  # fail as a local model whose queue is full
        self.calls: list[int] = []  # bytes of audio per request

    async def transcribe(
        self, pcm16: bytes, *, sample_rate: int, language: str, prompt: str = ""
    ) -> str:
        self.calls.append(len(pcm16))
        await asyncio.sleep(self.delay_ms / 1000.0)
        if self.hang:
            await asyncio.Event().wait()
        if self.overloaded:
            raise EngineError(
                "scripted STT busy: waited in the queue", vendor="scripted", overloaded=True
            )
        if self.fail:
            raise EngineError("scripted STT failure", vendor="scripted", status=500, retryable=True)
        return self.texts[min(len(self.calls) - 1, len(self.texts) - 1)]


TOOL_DIRECTIVE = re.compile(r"\[\[([A-Za-z][\w-]*)\s*(\{.*?\})?\]\]")


class ScriptedLLM:
    """Streams ``reply`` (or the next of ``replies``) word by word: the first token after
    ``ttft_ms``, then ``tokens_per_s``. Records the messages of every request.

    A reply may call tools: ``"Let me check. [[check_table {\"party_size\": 4}]]"`` says
    "Let me check." and then yields a :class:`ToolCall` (only when the request offered
    tools, as a real LLM would). Through the registry, ``replies=one||two`` scripts
    successive requests (a tool round is a request)."""

    supports_tools = True

    def __init__(
        self,
        *,
        ttft_ms: float = 150.0,
        tokens_per_s: float = 50.0,
        reply: str = "Of course.",
        replies: list[str] | None = None,
        fail: bool = False,
        name: str = "scripted-llm",
    ) -> None:
        self.name = name
        self.ttft_ms = float(ttft_ms)
        self.tokens_per_s = float(tokens_per_s)
        self.replies = list(replies) if replies is not None else [reply]
        self.fail = fail
        self.requests: list[list[dict[str, Any]]] = []
        self.offered: list[list[str]] = []  # tool names offered to each request
        self.finished = 0  # streams that yielded their last token

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float,
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str = "",  # (a grammar engine's, from the flow guide: not scripted)
    ) -> AsyncIterator[str | ToolCall]:
        self.requests.append([dict(m) for m in messages])
        self.offered.append([t["function"]["name"] for t in tools or ()])
        reply = self.replies[min(len(self.requests) - 1, len(self.replies) - 1)]
        await asyncio.sleep(self.ttft_ms / 1000.0)
        if self.fail:
            raise EngineError("scripted LLM failure: invalid key", vendor="scripted", status=401)
        calls = [
            ToolCall(id=f"call_{len(self.requests)}_{i}", name=m[1], arguments=m[2] or "{}")
            for i, m in enumerate(TOOL_DIRECTIVE.finditer(reply))
        ]
        tokens = re.findall(r"\S+\s*", TOOL_DIRECTIVE.sub("", reply).strip())
        for i, token in enumerate(tokens):
            if i:
                await asyncio.sleep(1.0 / self.tokens_per_s)
            yield token
        if tools:
            for call in calls:
                yield call
        self.finished += 1


class ScriptedTTS:
    """PCM16 at the requested rate: ``ms_per_char`` of audio per character of text, the
    first chunk after ``ttfb_ms``, then ``chunk_ms`` chunks at ``realtime`` x real time
    (0 = as fast as possible). ``signal`` is ``tone`` (440 Hz) or ``noise``."""

    def __init__(
        self,
        *,
        ttfb_ms: float = 80.0,
        ms_per_char: float = 60.0,
        chunk_ms: float = 100.0,
        realtime: float = 1.0,
        signal: str = "tone",
        fail: bool = False,
        name: str = "scripted-tts",
    ) -> None:
        self.name = name
        self.ttfb_ms = float(ttfb_ms)
        self.ms_per_char = float(ms_per_char)
        self.chunk_ms = float(chunk_ms)
        self.realtime = float(realtime)
        self.signal = signal
        self.fail = fail
        self.texts: list[str] = []
        self._rng = np.random.default_rng(0)

    def audio_ms(self, text: str) -> float:
        return max(self.chunk_ms, len(text) * self.ms_per_char)

    async def synthesize(
        self, text: str, *, sample_rate: int, language: str
    ) -> AsyncIterator[bytes]:
        self.texts.append(text)
        await asyncio.sleep(self.ttfb_ms / 1000.0)
        if self.fail:
            raise EngineError("scripted TTS failure", vendor="scripted", status=503, retryable=True)
        total = int(self.audio_ms(text) * sample_rate / 1000)
        step = max(1, int(self.chunk_ms * sample_rate / 1000))
        for start in range(0, total, step):
            n = min(step, total - start)
            if start and self.realtime > 0:
                await asyncio.sleep(self.chunk_ms / 1000.0 / self.realtime)
            yield self._pcm(start, n, sample_rate)

    def _pcm(self, start: int, n: int, rate: int) -> bytes:
        if self.signal == "noise":
            samples = self._rng.normal(0, 3000, n)
        else:
            t = (np.arange(start, start + n)) / rate
            samples = 6000 * np.sin(2 * np.pi * 440.0 * t)
        return samples.astype("<i2").tobytes()


def parse_options(text: str) -> dict[str, Any]:
    """``"a=1;b=x"`` -> ``{"a": 1.0, "b": "x"}`` (numbers as float, 1/0 flags for ``fail``)."""
    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, _, value = part.partition("=")
        key = key.strip()
        if key in {"fail", "hang", "overloaded"}:
            options[key] = value.strip() not in {"", "0", "false", "False"}
            continue
        try:
            options[key] = float(value)
        except ValueError:
            options[key] = value
    return options


def create(role: str, spec: EngineSpec, credentials: EngineCredentials) -> object:
    options = {**DEFAULTS.get(role, {}), **parse_options(spec.model)}
    if role == "stt":
        return ScriptedSTT(**options)
    if role == "llm":
        if isinstance(options.get("replies"), str):
            options["replies"] = options["replies"].split("||")
        return ScriptedLLM(**options)
    if role == "tts":
        return ScriptedTTS(**options)
    raise EngineError(f"unknown role {role!r}", vendor="scripted")
