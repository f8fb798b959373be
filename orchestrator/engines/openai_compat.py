"""Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server) via the ``openai`` SDK.

LLM (streaming chat completions), STT (``/audio/transcriptions``) and TTS
(``/audio/speech`` with ``response_format="pcm"``, 24 kHz) where the server has them.
The server is ``EngineSpec.base_url``, else ``EngineCredentials.openai_base_url``, else
api.openai.com. Models come from the profile, else ``OPENAI_LLM_MODEL`` /
``OPENAI_STT_MODEL`` / ``OPENAI_TTS_MODEL`` (and ``OPENAI_TTS_VOICE``).
"""

from __future__ import annotations

import os

import httpx2
import openai

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError
from orchestrator.engines._openai_api import ApiClient, ChatLLM, SpeechTTS, WhisperSTT

# Self-hosted servers usually ignore the key, but the SDK refuses an empty one.
UNUSED_KEY = "not-needed"

_MODEL_ENV = {"stt": "OPENAI_STT_MODEL", "llm": "OPENAI_LLM_MODEL", "tts": "OPENAI_TTS_MODEL"}


def create(
    role: str, spec: EngineSpec, credentials: EngineCredentials, *, config: CallConfig | None = None
) -> WhisperSTT | ChatLLM | SpeechTTS:
    config = config or CallConfig()
    if role not in _MODEL_ENV:
        raise EngineError(f"openai has no {role!r} engine", vendor="openai")
    base_url = spec.base_url or credentials.openai_base_url
    if not credentials.openai_api_key and not base_url:
        raise EngineError("OPENAI_API_KEY is not set (and no OPENAI_BASE_URL)", vendor="openai")
    model = spec.model or os.environ.get(_MODEL_ENV[role], "")
    if not model:
        raise EngineError(
            f"no {role} model: set {_MODEL_ENV[role]} or the profile's model", vendor="openai"
        )
    api = ApiClient(
        vendor="openai",
        client=openai.AsyncOpenAI(
            api_key=credentials.openai_api_key or UNUSED_KEY,
            base_url=base_url or None,
            timeout=config.engine_timeout_s,
            max_retries=0,
        ),
        sdk=openai,
        transport_errors=(httpx2.TransportError,),
        timeout_s=config.engine_timeout_s,
    )
    if role == "stt":
        return WhisperSTT(name="openai", api=api, model=model)
    if role == "llm":
        return ChatLLM(name="openai", api=api, model=model)
    voice = spec.voice or os.environ.get("OPENAI_TTS_VOICE", "")
    if not voice:
        raise EngineError(
            "no tts voice: set OPENAI_TTS_VOICE or the profile's voice", vendor="openai"
        )
    return SpeechTTS(name="openai", api=api, model=model, voice=voice)
