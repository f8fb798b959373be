"""Groq and OpenAI-compatible engines, real SDKs against the local fake vendor."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError, create_engine
from orchestrator.tools import ToolCall
from tests.engines.conftest import credentials_for
from tests.fake_vendor import FakeVendor, Reply

VENDORS = ["groq", "openai"]
MESSAGES = [
    {"role": "system", "content": "You are a receptionist."},
    {"role": "user", "content": "Hola"},
]


def llm(engine: str, vendor: FakeVendor, config: CallConfig):
    return create_engine(
        "llm", EngineSpec(engine=engine, model="test-llm"), credentials_for(vendor), config=config
    )


def stt(engine: str, vendor: FakeVendor, config: CallConfig):
    return create_engine(
        "stt",
        EngineSpec(engine=engine, model="test-whisper"),
        credentials_for(vendor),
        config=config,
    )


async def collect(stream) -> list:
    return [item async for item in stream]


async def test_it_streams_chat_deltas_from_sse(engine_name, vendor, config):
    vendor.script("chat", Reply.chat_stream(["Buenos", " días", ", ¿en qué le ayudo?"]))
    engine = llm(engine_name, vendor, config)

    deltas = await collect(engine.stream(MESSAGES, temperature=0.3, max_tokens=50))
    await engine.aclose()

    assert deltas == ["Buenos", " días", ", ¿en qué le ayudo?"]
    assert engine.name == engine_name
    (request,) = vendor.calls("chat")
    assert request.json["model"] == "test-llm"
    assert request.json["stream"] is True
    assert request.json["messages"] == MESSAGES
    assert request.json["temperature"] == 0.3
    assert request.json["max_tokens"] == 50
    key = "gsk-test" if engine_name == "groq" else "sk-test"
    assert request.headers["authorization"] == f"Bearer {key}"


BOOK_TABLE = {
    "type": "function",
    "function": {
        "name": "book_table",
        "description": "Book a table.",
        "parameters": {"type": "object", "properties": {"party_size": {"type": "integer"}}},
    },
}


async def test_it_assembles_streamed_tool_call_deltas_into_whole_calls(engine_name, vendor, config):
    arguments = {"party_size": 4, "day": "Friday", "name": "John Smith"}
    vendor.script(
        "chat",
        Reply.tool_call_stream(
            [("book_table", arguments), ("end_call", {})], text=["Let me", " book that."]
        ),
    )
    engine = llm(engine_name, vendor, config)
    assert engine.supports_tools

    items = await collect(
        engine.stream(MESSAGES, temperature=0.3, max_tokens=50, tools=[BOOK_TABLE])
    )
    await engine.aclose()

    assert items[:2] == ["Let me", " book that."]
    booking, end = items[2:]
    assert isinstance(booking, ToolCall) and isinstance(end, ToolCall)
    assert (booking.id, booking.name) == ("call_fake_0", "book_table")
    assert booking.parsed_arguments() == arguments
    assert end.name == "end_call" and end.parsed_arguments() == {}
    (request,) = vendor.calls("chat")
    assert request.json["tools"] == [BOOK_TABLE]
    assert request.json["tool_choice"] == "auto"


async def test_a_botched_tool_call_is_reported_with_the_vendor_code(engine_name, vendor, config):
    # Groq's answer when the model wrote a malformed tool call.
    body = {"error": {"message": "Failed to call a function. Please adjust your prompt.",
                      "type": "invalid_request_error", "code": "tool_use_failed"}}  # fmt: skip
    vendor.script("chat", Reply(status=400, json_body=body))
    engine = llm(engine_name, vendor, config)

    with pytest.raises(EngineError) as failure:
        await collect(engine.stream(MESSAGES, temperature=0.3, max_tokens=50, tools=[BOOK_TABLE]))
    await engine.aclose()

    assert failure.value.code == "tool_use_failed" and failure.value.status == 400
    assert not failure.value.retryable


async def test_it_sends_tool_results_back_in_the_openai_shape(engine_name, vendor, config):
    vendor.script("chat", Reply.chat_stream(["Booked."]))
    engine = llm(engine_name, vendor, config)
    call = ToolCall(id="call_1", name="book_table", arguments='{"party_size": 4}')
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [call.as_message()]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"booked": true}'},
    ]

    assert await collect(
        engine.stream(messages, temperature=0.3, max_tokens=50, tools=[BOOK_TABLE])
    ) == ["Booked."]
    await engine.aclose()
    (request,) = vendor.calls("chat")
    assert request.json["messages"][2]["tool_calls"][0]["function"]["name"] == "book_table"
    assert request.json["messages"][3] == messages[3]


async def test_it_uploads_the_utterance_as_an_in_memory_wav(engine_name, vendor, config):
    vendor.script("transcriptions", Reply.transcription(" Quiero una cita. "))
    engine = stt(engine_name, vendor, config)
    pcm = np.arange(-8000, 8000, dtype="<i2").tobytes()

    text = await engine.transcribe(pcm, sample_rate=8000, language="es-ES")
    await engine.aclose()

    assert text == "Quiero una cita."
    (request,) = vendor.calls("transcriptions")
    assert request.form["model"] == "test-whisper"
    assert request.form["language"] == "es"
    with wave.open(io.BytesIO(request.files["file"])) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.readframes(wav.getnframes()) == pcm


async def test_it_maps_401_to_a_non_retryable_error_with_the_vendor_message(
    engine_name, vendor, config
):
    vendor.default["chat"] = Reply.error(401, "Invalid API Key")
    engine = llm(engine_name, vendor, config)

    with pytest.raises(EngineError) as raised:
        await collect(engine.stream(MESSAGES, temperature=0.3, max_tokens=50))
    await engine.aclose()

    error = raised.value
    assert (error.vendor, error.status, error.retryable) == (engine_name, 401, False)
    assert "Invalid API Key" in str(error)
    assert len(vendor.calls("chat")) == 1


async def test_it_hands_a_429_to_the_fallback_without_retrying_the_same_vendor(
    engine_name, vendor, config
):
    vendor.default["transcriptions"] = Reply.error(429, "Rate limit reached")
    engine = stt(engine_name, vendor, config)

    with pytest.raises(EngineError) as raised:
        await engine.transcribe(b"\x00\x00" * 1600, sample_rate=16000, language="es-ES")
    await engine.aclose()

    assert (raised.value.status, raised.value.retryable) == (429, True)
    assert "Rate limit reached" in str(raised.value)
    assert len(vendor.calls("transcriptions")) == 1


async def test_it_retries_a_500_once_before_anything_was_returned(engine_name, vendor, config):
    vendor.script("chat", Reply.error(500), Reply.chat_stream(["Hola"]))
    engine = llm(engine_name, vendor, config)

    deltas = await collect(engine.stream(MESSAGES, temperature=0.3, max_tokens=50))
    await engine.aclose()

    assert deltas == ["Hola"]
    assert len(vendor.calls("chat")) == 2


async def test_it_gives_up_after_a_bounded_number_of_500s(engine_name, vendor, config):
    vendor.default["transcriptions"] = Reply.error(503, "over capacity")
    engine = stt(engine_name, vendor, config)

    with pytest.raises(EngineError) as raised:
        await engine.transcribe(b"\x00\x00" * 1600, sample_rate=16000, language="es-ES")
    await engine.aclose()

    assert (raised.value.status, raised.value.retryable) == (503, True)
    assert len(vendor.calls("transcriptions")) == 2


async def test_it_times_out_a_slow_response(engine_name, vendor, config):
    vendor.script("chat", Reply.chat_stream(["late"], delay_s=config.engine_timeout_s + 2))
    engine = llm(engine_name, vendor, config)

    with pytest.raises(EngineError) as raised:
        await collect(engine.stream(MESSAGES, temperature=0.3, max_tokens=50))
    await engine.aclose()

    assert (raised.value.status, raised.value.retryable) == (None, True)
    assert "no response" in str(raised.value)
    assert len(vendor.calls("chat")) == 1  # a timeout goes to the fallback, not a retry


async def test_it_fails_a_stream_that_stalls_without_retrying_after_the_first_delta(
    engine_name, vendor, config
):
    vendor.script(
        "chat", Reply.chat_stream(["Hola", " qué tal"], stall_s=config.engine_timeout_s + 2)
    )
    engine = llm(engine_name, vendor, config)
    received = []

    with pytest.raises(EngineError) as raised:
        async for delta in engine.stream(MESSAGES, temperature=0.3, max_tokens=50):
            received.append(delta)
    await engine.aclose()

    assert received == ["Hola"]
    assert raised.value.retryable
    assert len(vendor.calls("chat")) == 1


async def test_it_reports_a_malformed_stream(engine_name, vendor, config):
    vendor.script("chat", Reply.malformed_stream(after=["Hola"]))
    engine = llm(engine_name, vendor, config)
    received = []

    with pytest.raises(EngineError) as raised:
        async for delta in engine.stream(MESSAGES, temperature=0.3, max_tokens=50):
            received.append(delta)
    await engine.aclose()

    assert received == ["Hola"]
    assert raised.value.vendor == engine_name
    assert "malformed" in str(raised.value)
    assert len(vendor.calls("chat")) == 1


async def test_warmup_opens_the_connection_and_survives_a_failure(engine_name, vendor, config):
    vendor.script("models", Reply.error(500))
    engine = llm(engine_name, vendor, config)

    await engine.warmup()
    await engine.aclose()

    assert len(vendor.calls("models")) == 1


async def test_openai_tts_streams_pcm_resampled_to_the_channel_rate(vendor, config):
    seconds = 0.5
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(int(24000 * seconds)) / 24000)).astype("<i2")
    vendor.script("speech", Reply.speech(tone.tobytes(), chunk_delay_s=0.01))
    engine = create_engine(
        "tts",
        EngineSpec(engine="openai", model="test-tts", voice="alloy"),
        credentials_for(vendor),
        config=config,
    )

    chunks = await collect(engine.synthesize("Hola", sample_rate=8000, language="es-ES"))
    await engine.aclose()

    assert len(chunks) > 1  # yielded as it arrived, not after the whole body
    samples = len(b"".join(chunks)) // 2
    assert abs(samples - 8000 * seconds) <= 16
    (request,) = vendor.calls("speech")
    assert request.json == {
        "model": "test-tts",
        "voice": "alloy",
        "input": "Hola",
        "response_format": "pcm",
    }


async def test_openai_compatible_server_needs_no_key_when_a_base_url_is_set(vendor, config):
    credentials = EngineCredentials(openai_base_url=vendor.openai_base_url)
    engine = create_engine(
        "llm", EngineSpec(engine="openai", model="llama3"), credentials, config=config
    )

    deltas = await collect(engine.stream(MESSAGES, temperature=0.3, max_tokens=50))
    await engine.aclose()

    assert "".join(deltas) == "Hello from the fake."


async def test_profile_base_url_wins_over_the_credentials_one(vendor, backup_vendor, config):
    spec = EngineSpec(engine="openai", model="llama3", base_url=backup_vendor.openai_base_url)
    engine = create_engine("llm", spec, credentials_for(vendor), config=config)

    await collect(engine.stream(MESSAGES, temperature=0.3, max_tokens=50))
    await engine.aclose()

    assert (len(vendor.calls("chat")), len(backup_vendor.calls("chat"))) == (0, 1)


@pytest.mark.parametrize(
    ("spec", "credentials", "message"),
    [
        (EngineSpec(engine="groq", model="m"), EngineCredentials(), "GROQ_API_KEY"),
        (EngineSpec(engine="openai", model="m"), EngineCredentials(), "OPENAI_API_KEY"),
        (EngineSpec(engine="azure", voice="v"), EngineCredentials(), "AZURE_SPEECH_KEY"),
    ],
)
def test_it_refuses_to_build_a_cloud_engine_without_its_key(spec, credentials, message):
    role = "tts" if spec.engine == "azure" else "llm"
    with pytest.raises(EngineError, match=message):
        create_engine(role, spec, credentials)


def test_groq_llm_model_comes_from_the_env_when_the_profile_has_none(monkeypatch):
    credentials = EngineCredentials(groq_api_key="gsk-test")
    monkeypatch.setenv("GROQ_LLM_MODEL", "llama-from-env")
    assert create_engine("llm", EngineSpec(engine="groq"), credentials).model == "llama-from-env"
    monkeypatch.delenv("GROQ_LLM_MODEL")
    with pytest.raises(EngineError, match="GROQ_LLM_MODEL"):
        create_engine("llm", EngineSpec(engine="groq"), credentials)


def test_groq_stt_defaults_to_whisper_large_v3_turbo(monkeypatch):
    monkeypatch.delenv("GROQ_STT_MODEL", raising=False)
    engine = create_engine("stt", EngineSpec(engine="groq"), EngineCredentials(groq_api_key="k"))
    assert engine.model == "whisper-large-v3-turbo"


def test_it_rejects_an_unknown_engine_name():
    with pytest.raises(EngineError, match="unknown engine"):
        create_engine("llm", EngineSpec(engine="nope"), EngineCredentials())


@pytest.fixture(params=VENDORS)
def engine_name(request) -> str:
    return request.param
