"""Ordered fallback chains: the next engine serves the turn when the current one fails
with a retryable :class:`EngineError` (connection error, timeout, 429, 5xx) before it
delivered anything of the turn.

``name`` is the engine that served the last request (the session stores it in the turn
metrics) and ``last_fallbacks`` describes the switches made during that request.
A stream is never switched once its first delta/chunk was yielded: that text or audio
may already be playing. When every engine failed, the last error propagates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any

from orchestrator.engines.errors import EngineError
from orchestrator.tools import ToolCall

log = logging.getLogger(__name__)


class _Chain:
    def __init__(self, role: str, engines: Sequence[object]) -> None:
        if not engines:
            raise ValueError("a fallback chain needs at least one engine")
        self.role = role
        self.engines = tuple(engines)
        self.name: str = self.engines[0].name
        self.last_fallbacks: list[str] = []

    @property
    def runs_locally(self) -> bool:
        """A local model is in the chain: a timeout may be our own CPU, not a vendor."""
        return any(getattr(engine, "runs_locally", False) for engine in self.engines)

    def _switch(self, index: int, error: EngineError) -> None:
        """Record that engine ``index`` failed with ``error``; re-raise if it was the last
        one or the error is not one another engine could fix."""
        failed = self.engines[index]
        self.name = failed.name
        if not error.retryable or index == len(self.engines) - 1:
            raise error
        following = self.engines[index + 1].name
        log.warning(
            "%s %s failed (%s); falling back to %s", self.role, failed.name, error, following
        )
        self.last_fallbacks.append(f"{failed.name} -> {following}: {error}")

    async def _stream(self, open_stream: Callable[[object], AsyncIterator]) -> AsyncIterator:
        self.last_fallbacks = []
        for index, engine in enumerate(self.engines):
            delivered = False
            try:
                async with aclosing(open_stream(engine)) as items:
                    async for item in items:
                        if not delivered:
                            delivered = True
                            self.name = engine.name
                        yield item
                self.name = engine.name
                return
            except EngineError as error:
                if delivered:
                    raise
                self._switch(index, error)

    async def warmup(self) -> None:
        """Warm every engine of the chain so a fallback does not start cold."""
        warmups = [engine.warmup() for engine in self.engines if hasattr(engine, "warmup")]
        await asyncio.gather(*warmups)

    async def aclose(self) -> None:
        for engine in self.engines:
            if hasattr(engine, "aclose"):
                await engine.aclose()


class FallbackSTT(_Chain):
    async def transcribe(
        self, pcm16: bytes, *, sample_rate: int, language: str, prompt: str = ""
    ) -> str:
        self.last_fallbacks = []
        for index, engine in enumerate(self.engines):
            try:
                text = await engine.transcribe(
                    pcm16, sample_rate=sample_rate, language=language, prompt=prompt
                )
            except EngineError as error:
                self._switch(index, error)
                continue
            self.name = engine.name
            return text
        raise AssertionError("unreachable: _switch raises on the last engine")


class FallbackLLM(_Chain):
    @property
    def supports_tools(self) -> bool:
        # The primary decides what the session offers; a fallback engine without tools
        # serves the turn with text only (it is not passed them).
        return bool(getattr(self.engines[0], "supports_tools", False))

    @property
    def calls_tools_by_grammar(self) -> bool:
        # A local primary follows a flow by grammar (engines/local_tools.py) in a chain too.
        return bool(getattr(self.engines[0], "calls_tools_by_grammar", False))

    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float,
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str = "",
    ) -> AsyncIterator[str | ToolCall]:
        def open_stream(engine: object) -> AsyncIterator[str | ToolCall]:
            by_grammar = getattr(engine, "calls_tools_by_grammar", False)
            calls = getattr(engine, "supports_tools", False) or by_grammar
            extra: dict[str, Any] = {"tools": tools} if tools and calls else {}
            if extra and tool_choice and by_grammar:
                extra["tool_choice"] = tool_choice  # the guide's (reply.py), for grammar only
            return engine.stream(
                messages, temperature=temperature, max_tokens=max_tokens, **extra
            )

        return self._stream(open_stream)


class FallbackTTS(_Chain):
    def synthesize(self, text: str, *, sample_rate: int, language: str) -> AsyncIterator[bytes]:
        return self._stream(
            lambda engine: engine.synthesize(text, sample_rate=sample_rate, language=language)
        )


CHAINS: dict[str, type[_Chain]] = {"stt": FallbackSTT, "llm": FallbackLLM, "tts": FallbackTTS}


def chain(role: str, engines: Sequence[object]) -> _Chain:
    return CHAINS[role](role, engines)
