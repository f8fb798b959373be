"""Speech and language engines behind three small Protocols.

One module per vendor (``groq.py``, ``openai_compat.py``, ``azure.py``, ``local.py``);
adding a vendor means adding one module and one ``register(...)`` line below.
Each module defines ``create(role, spec, credentials, *, config)`` (``config`` may be left
out by factories that need no per-call settings); engines may also have
``async warmup()`` (called at call start) and ``async aclose()``. See docs/engines.md.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines.errors import EngineError
from orchestrator.engines.fallback import chain

__all__ = [
    "EngineError",
    "Engines",
    "build_engines",
    "create_engine",
    "register",
    "supports_tools",
]


@runtime_checkable
class SpeechToText(Protocol):
    name: str

    async def transcribe(
        self, pcm16: bytes, *, sample_rate: int, language: str, prompt: str = ""
    ) -> str:
        """Transcribe one whole utterance of mono PCM16 audio. ``prompt``: text that
        primes the spelling (Whisper's prompt; engines without one ignore it)."""
        ...


@runtime_checkable
class LanguageModel(Protocol):
    name: str

    def stream(
        self, messages: list[dict[str, Any]], *, temperature: float, max_tokens: int
    ) -> AsyncIterator[str]:
        """Yield text deltas of the reply to OpenAI-style ``messages``.

        Engines that can call tools set ``supports_tools = True`` and accept a
        ``tools=[...]`` keyword (OpenAI ``tools`` entries); they then also yield
        :class:`orchestrator.tools.ToolCall` items, each once complete. ``tools`` is only
        passed to such engines (supports_tools below). An engine that calls tools by a
        grammar (``calls_tools_by_grammar``: the local model in a flow) also accepts
        ``tool_choice="required"``: an answer must call one of ``tools``."""
        ...


def supports_tools(engine: object) -> bool:
    """Whether ``engine`` (or a fallback chain's first engine) can call tools."""
    return bool(getattr(engine, "supports_tools", False))


@runtime_checkable
class TextToSpeech(Protocol):
    name: str

    def synthesize(self, text: str, *, sample_rate: int, language: str) -> AsyncIterator[bytes]:
        """Yield mono PCM16 chunks at ``sample_rate`` as soon as they are produced."""
        ...


@dataclass(slots=True, kw_only=True)
class Engines:
    """The three engines one call uses (each may be a fallback chain)."""

    stt: SpeechToText
    llm: LanguageModel
    tts: TextToSpeech

    async def warmup(self) -> None:
        """Load models / open connections at call start, all three concurrently."""
        warmups = [
            engine.warmup()
            for engine in (self.stt, self.llm, self.tts)
            if hasattr(engine, "warmup")
        ]
        await asyncio.gather(*warmups)

    async def aclose(self) -> None:
        for engine in (self.stt, self.llm, self.tts):
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()


# registry name -> module defining ``create(role, spec, credentials[, *, config])``
_FACTORIES: dict[str, str] = {}


def register(name: str, module: str) -> None:
    _FACTORIES[name] = module


def create_engine(
    role: str,
    spec: EngineSpec,
    credentials: EngineCredentials,
    *,
    config: CallConfig | None = None,
) -> object:
    """Build one engine for ``role`` (stt, llm or tts) from its registry module.

    ``config`` supplies the per-call settings engines need (``engine_timeout_s``,
    ``channel``, ``language``, ``voice_pacing_ms``, ``extra``); defaults when omitted.
    Raises :class:`EngineError` at build time when a key or model is missing."""
    try:
        module_name = _FACTORIES[spec.engine]
    except KeyError:
        raise EngineError(
            f"unknown engine {spec.engine!r} (known: {', '.join(sorted(_FACTORIES))})",
            vendor=spec.engine,
        ) from None
    module = importlib.import_module(module_name)
    if "config" not in inspect.signature(module.create).parameters:
        return module.create(role, spec, credentials)  # a factory that needs no call settings
    return module.create(role, spec, credentials, config=config or CallConfig())


def build_engines(config: CallConfig, credentials: EngineCredentials) -> Engines:
    """The engines of one call: each role's chain from the profile, wrapped in a
    fallback chain only when it lists more than one engine."""
    built: dict[str, object] = {}
    for role, specs in (("stt", config.stt), ("llm", config.llm), ("tts", config.tts)):
        if not specs:
            raise EngineError(f"no {role} engine configured", vendor="config")
        engines = [create_engine(role, spec, credentials, config=config) for spec in specs]
        built[role] = engines[0] if len(engines) == 1 else chain(role, engines)
    return Engines(stt=built["stt"], llm=built["llm"], tts=built["tts"])


register("groq", "orchestrator.engines.groq")
register("openai", "orchestrator.engines.openai_compat")
register("azure", "orchestrator.engines.azure")
register("local", "orchestrator.engines.local")
