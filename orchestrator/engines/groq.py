"""Groq: Whisper speech-to-text and streaming chat completions (``groq`` async SDK).

Models come from the profile (``EngineSpec.model``), else from ``GROQ_STT_MODEL`` /
``GROQ_LLM_MODEL``; the key only from ``EngineCredentials.groq_api_key``.
"""

from __future__ import annotations

import os

import groq
import httpx

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError
from orchestrator.engines._openai_api import ApiClient, ChatLLM, WhisperSTT

DEFAULT_STT_MODEL = "whisper-large-v3-turbo"


def create(
    role: str, spec: EngineSpec, credentials: EngineCredentials, *, config: CallConfig | None = None
) -> WhisperSTT | ChatLLM:
    config = config or CallConfig()
    if not credentials.groq_api_key:
        raise EngineError("GROQ_API_KEY is not set", vendor="groq")
    if role == "stt":
        model = spec.model or os.environ.get("GROQ_STT_MODEL") or DEFAULT_STT_MODEL
        return WhisperSTT(name="groq", api=_client(credentials, config), model=model)
    if role == "llm":
        model = spec.model or os.environ.get("GROQ_LLM_MODEL", "")
        if not model:
            raise EngineError(
                "no LLM model: set GROQ_LLM_MODEL or the profile's model", vendor="groq"
            )
        return ChatLLM(name="groq", api=_client(credentials, config), model=model)
    raise EngineError(f"groq has no {role!r} engine (stt and llm only)", vendor="groq")


def _client(credentials: EngineCredentials, config: CallConfig) -> ApiClient:
    client = groq.AsyncGroq(
        api_key=credentials.groq_api_key,
        base_url=credentials.groq_base_url or None,
        timeout=config.engine_timeout_s,
        max_retries=0,
    )
    return ApiClient(
        vendor="groq",
        client=client,
        sdk=groq,
        transport_errors=(httpx.TransportError,),
        timeout_s=config.engine_timeout_s,
    )
