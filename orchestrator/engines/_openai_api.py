"""Engines over the OpenAI HTTP API shape, shared by ``groq.py`` and ``openai_compat.py``.

Both vendors ship Stainless-generated SDKs with the same client surface and the same
exception hierarchy (``APIStatusError``/``APIConnectionError``/``APITimeoutError``), so
the engine logic lives here once and each vendor module only builds its client.

Retries: the SDK's own retries are disabled (``max_retries=0``, it would honour a
``retry-after`` of up to 60 s). Instead a request is retried at most ``attempts - 1``
times, after a short pause, and only for connection errors and 5xx *before anything was
returned* — a timeout or a 429 is handed to the fallback chain instead of the same vendor.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from orchestrator.audio import StreamResampler
from orchestrator.engines import EngineError
from orchestrator.engines._pcm import language_code, wav_bytes
from orchestrator.tools import ToolCall

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.2
# OpenAI's ``response_format="pcm"`` is 24 kHz mono PCM16 little-endian.
OPENAI_PCM_RATE = 24000


@dataclass(slots=True, kw_only=True)
class ApiClient:
    """A vendor's async SDK client plus what is needed to map its errors."""

    vendor: str
    client: object  # groq.AsyncGroq | openai.AsyncOpenAI
    sdk: types.ModuleType  # the SDK package, for its exception classes
    transport_errors: tuple[type[BaseException], ...]  # raw httpx errors escaping a stream
    timeout_s: float
    attempts: int = 2

    async def aclose(self) -> None:
        await self.client.close()


def map_error(api: ApiClient, exc: BaseException) -> tuple[EngineError, bool]:
    """Map an SDK/transport exception to ``(EngineError, retry_same_vendor)``."""
    sdk = api.sdk
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        retryable = status in (408, 409, 429) or status >= 500
        return (
            EngineError(
                _vendor_message(exc),
                vendor=api.vendor,
                status=status,
                retryable=retryable,
                code=_vendor_code(exc),
            ),
            status >= 500,
        )
    if isinstance(exc, sdk.APITimeoutError | TimeoutError):
        message = f"no response within {api.timeout_s:g} s"
        return EngineError(message, vendor=api.vendor, retryable=True), False
    if isinstance(exc, (sdk.APIConnectionError, *api.transport_errors)):
        message = f"connection failed: {exc.__cause__ or exc}"
        return EngineError(message, vendor=api.vendor, retryable=True), True
    if isinstance(exc, sdk.APIError):  # an error event inside a stream
        error = EngineError(
            _vendor_message(exc), vendor=api.vendor, retryable=True, code=_vendor_code(exc)
        )
        return error, False
    if isinstance(exc, ValueError):  # malformed JSON in an SSE event or a response
        message = f"malformed response: {exc}"
        return EngineError(message, vendor=api.vendor, retryable=True), False
    raise TypeError(f"not a vendor error: {exc!r}") from exc


def _vendor_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", "") or exc)


def _vendor_code(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return error["code"]
    return str(getattr(exc, "code", "") or "")


def _caught(api: ApiClient) -> tuple[type[BaseException], ...]:
    return (api.sdk.APIError, TimeoutError, ValueError, *api.transport_errors)


async def _pause_before_retry(api: ApiClient, role: str, error: EngineError, attempt: int) -> None:
    log.warning(
        "%s %s failed (%s); retry %d/%d", api.vendor, role, error, attempt, api.attempts - 1
    )
    await asyncio.sleep(RETRY_PAUSE_S)


class WhisperSTT:
    """``POST /audio/transcriptions`` with the utterance as an in-memory WAV."""

    def __init__(self, *, name: str, api: ApiClient, model: str) -> None:
        self.name = name
        self.model = model
        self._api = api

    async def transcribe(
        self, pcm16: bytes, *, sample_rate: int, language: str, prompt: str = ""
    ) -> str:
        if not pcm16:
            return ""
        extra = {"prompt": prompt} if prompt else {}
        upload = ("utterance.wav", wav_bytes(pcm16, sample_rate), "audio/wav")
        api = self._api
        for attempt in range(1, api.attempts + 1):
            try:
                async with asyncio.timeout(api.timeout_s):
                    result = await api.client.audio.transcriptions.create(
                        model=self.model,
                        file=upload,
                        language=language_code(language),
                        temperature=0.0,
                        response_format="json",
                        **extra,
                    )
                return (result.text or "").strip()
            except _caught(api) as exc:
                error, retry_same = map_error(api, exc)
                if not retry_same or attempt == api.attempts:
                    raise error from exc
                await _pause_before_retry(api, "stt", error, attempt)
        raise AssertionError("unreachable")

    async def warmup(self) -> None:
        await _warmup(self._api)

    async def aclose(self) -> None:
        await self._api.aclose()


class ChatLLM:
    """Streaming ``POST /chat/completions``; yields text deltas and, when ``tools`` are
    given, :class:`ToolCall` items.

    ``timeout_s`` bounds the wait for the response headers and for each next event, so
    a server that stalls mid-answer fails the turn instead of hanging it.

    Tool calls arrive as deltas keyed by ``index`` (the id and name in the first, the
    JSON arguments in pieces after); each is yielded whole once the stream ends, after
    any text, so the reply loop never acts on half an argument list.
    """

    supports_tools = True

    def __init__(self, *, name: str, api: ApiClient, model: str) -> None:
        self.name = name
        self.model = model
        self._api = api

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float,
        max_tokens: int,
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[str | ToolCall]:
        api = self._api
        for attempt in range(1, api.attempts + 1):
            delivered = False
            try:
                once = self._stream_once(messages, temperature, max_tokens, tools)
                async with aclosing(once) as deltas:
                    async for delta in deltas:
                        delivered = True
                        yield delta
                return
            except _caught(api) as exc:
                error, retry_same = map_error(api, exc)
                if delivered or not retry_same or attempt == api.attempts:
                    raise error from exc
                await _pause_before_retry(api, "llm", error, attempt)

    async def _stream_once(
        self,
        messages: list[dict[str, Any]],
        temperature: float,
        max_tokens: int,
        tools: list[dict[str, Any]] | None,
    ) -> AsyncIterator[str | ToolCall]:
        api = self._api
        extra: dict[str, Any] = {"tools": tools, "tool_choice": "auto"} if tools else {}
        async with asyncio.timeout(api.timeout_s):
            stream = await api.client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=temperature,
                max_tokens=max_tokens,
                stream=True,
                **extra,
            )
        calls: dict[int, ToolCall] = {}
        try:
            events = aiter(stream)
            while True:
                try:
                    async with asyncio.timeout(api.timeout_s):
                        chunk = await anext(events)
                except StopAsyncIteration:
                    break
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    yield delta.content
                for part in getattr(delta, "tool_calls", None) or ():
                    _add_tool_delta(calls, part)
        finally:
            await stream.close()
        for index in sorted(calls):
            yield calls[index]

    async def warmup(self) -> None:
        await _warmup(self._api)

    async def aclose(self) -> None:
        await self._api.aclose()


def _add_tool_delta(calls: dict[int, ToolCall], part: Any) -> None:
    """Fold one streamed ``tool_calls`` delta into the call it continues."""
    index = part.index if part.index is not None else len(calls)
    call = calls.setdefault(index, ToolCall(id="", name=""))
    if part.id:
        call.id = part.id
    function = part.function
    if function is not None:
        if function.name:
            call.name += function.name
        if function.arguments:
            call.arguments += function.arguments
    if not call.id:
        call.id = f"call_{index}"


class SpeechTTS:
    """``POST /audio/speech`` with ``response_format="pcm"`` (24 kHz PCM16), streamed."""

    def __init__(self, *, name: str, api: ApiClient, model: str, voice: str) -> None:
        self.name = name
        self.model = model
        self.voice = voice
        self._api = api

    async def synthesize(
        self, text: str, *, sample_rate: int, language: str
    ) -> AsyncIterator[bytes]:
        api = self._api
        resampler = StreamResampler(OPENAI_PCM_RATE, sample_rate)
        # No retry: the first chunk may already be playing when a later read fails.
        try:
            async with asyncio.timeout(api.timeout_s):
                response_cm = api.client.audio.speech.with_streaming_response.create(
                    model=self.model, voice=self.voice, input=text, response_format="pcm"
                )
                response = await response_cm.__aenter__()
            try:
                chunks = aiter(response.iter_bytes(4096))
                while True:
                    try:
                        async with asyncio.timeout(api.timeout_s):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    if out := resampler.process(chunk):
                        yield out
            finally:
                await response_cm.__aexit__(None, None, None)
        except _caught(api) as exc:
            raise map_error(api, exc)[0] from exc
        if tail := resampler.flush():
            yield tail

    async def warmup(self) -> None:
        await _warmup(self._api)

    async def aclose(self) -> None:
        await self._api.aclose()


async def _warmup(api: ApiClient) -> None:
    """Open the HTTPS connection at call start (``GET /models``), so the first turn skips
    the TCP/TLS handshake. Best effort: a failure here is logged, and the real request
    reports the error to the session/fallback chain."""
    try:
        async with asyncio.timeout(api.timeout_s):
            await api.client.models.list()
    except _caught(api) as exc:
        log.warning("%s warmup failed: %s", api.vendor, map_error(api, exc)[0])
