"""Speech and language engines behind three small Protocols.

One module per vendor (``groq.py``, ``openai_compat.py``, ``azure.py``, ``local.py``);
adding a vendor means adding one module and one line to ``_FACTORIES``.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from orchestrator.config import EngineCredentials, EngineSpec


class EngineError(Exception):
    """Any engine failure, mapped from the vendor's own exception types.

    ``retryable`` is true for connection errors, timeouts, 429 and 5xx: the failures a
    fallback engine may take over. A bad key (401/403) or a bad request is not.
    """

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        status: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.vendor = vendor
        self.status = status
        self.retryable = retryable

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"{self.vendor}{status}: {self.args[0]}"


@runtime_checkable
class SpeechToText(Protocol):
    name: str

    async def transcribe(self, pcm16: bytes, *, sample_rate: int, language: str) -> str:
        """Transcribe one whole utterance of mono PCM16 audio."""
        ...


@runtime_checkable
class LanguageModel(Protocol):
    name: str

    def stream(
        self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int
    ) -> AsyncIterator[str]:
        """Yield text deltas of the reply to OpenAI-style ``messages``."""
        ...


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

    async def aclose(self) -> None:
        for engine in (self.stt, self.llm, self.tts):
            close = getattr(engine, "aclose", None)
            if close is not None:
                await close()


EngineFactory = Callable[[str, EngineSpec, EngineCredentials], object]

# registry name -> module defining ``create(role, spec, credentials)``
_FACTORIES: dict[str, str] = {}


def register(name: str, module: str) -> None:
    _FACTORIES[name] = module


def create_engine(role: str, spec: EngineSpec, credentials: EngineCredentials) -> object:
    """Build one engine for ``role`` (stt, llm or tts) from its registry module."""
    try:
        module_name = _FACTORIES[spec.engine]
    except KeyError:
        raise EngineError(
            f"unknown engine {spec.engine!r} (known: {', '.join(sorted(_FACTORIES))})",
            vendor=spec.engine,
        ) from None
    module = importlib.import_module(module_name)
    return module.create(role, spec, credentials)
