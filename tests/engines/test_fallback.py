"""Fallback chains: real SDK engines against two fake vendors, plus the local espeak TTS."""

from __future__ import annotations

import pytest

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError, build_engines, create_engine, register
from orchestrator.engines.fallback import FallbackLLM, FallbackSTT, chain
from tests.engines.conftest import TEST_TIMEOUT_S
from tests.fake_vendor import FakeVendor, Reply
from tests.speech import have_speech_tools

MESSAGES = [{"role": "user", "content": "Hola"}]


def two_vendor_credentials(primary: FakeVendor, backup: FakeVendor) -> EngineCredentials:
    """Groq at ``primary``, OpenAI-compatible at ``backup``."""
    return EngineCredentials(
        groq_api_key="gsk-test",
        groq_base_url=primary.groq_base_url,
        openai_api_key="sk-test",
        openai_base_url=backup.openai_base_url,
    )


def llm_chain(primary: FakeVendor, backup: FakeVendor, config: CallConfig) -> FallbackLLM:
    credentials = two_vendor_credentials(primary, backup)
    return chain(
        "llm",
        [
            create_engine("llm", EngineSpec(engine=name, model="m"), credentials, config=config)
            for name in ("groq", "openai")
        ],
    )


async def test_the_second_engine_serves_the_turn_when_the_first_returns_500(
    vendor, backup_vendor, config
):
    vendor.default["chat"] = Reply.error(500, "upstream exploded")
    backup_vendor.script("chat", Reply.chat_stream(["Le", " atiendo", " yo."]))
    engines = llm_chain(vendor, backup_vendor, config)

    deltas = [d async for d in engines.stream(MESSAGES, temperature=0.5, max_tokens=40)]
    await engines.aclose()

    assert "".join(deltas) == "Le atiendo yo."
    assert engines.name == "openai"
    assert len(engines.last_fallbacks) == 1
    assert engines.last_fallbacks[0].startswith("groq -> openai: groq 500")


async def test_stt_falls_back_on_a_timeout_and_reports_who_served(vendor, backup_vendor, config):
    vendor.default["transcriptions"] = Reply.transcription("late", delay_s=TEST_TIMEOUT_S + 2)
    backup_vendor.script("transcriptions", Reply.transcription("quiero una cita"))
    credentials = two_vendor_credentials(vendor, backup_vendor)
    engines = FallbackSTT(
        "stt",
        [
            create_engine("stt", EngineSpec(engine="groq"), credentials, config=config),
            create_engine(
                "stt", EngineSpec(engine="openai", model="w"), credentials, config=config
            ),
        ],
    )

    text = await engines.transcribe(b"\x00\x00" * 1600, sample_rate=16000, language="es-ES")
    await engines.aclose()

    assert text == "quiero una cita"
    assert engines.name == "openai"
    assert "no response" in engines.last_fallbacks[0]


async def test_the_error_propagates_when_every_engine_fails(vendor, backup_vendor, config):
    vendor.default["chat"] = Reply.error(502)
    backup_vendor.default["chat"] = Reply.error(503, "backup down too")
    engines = llm_chain(vendor, backup_vendor, config)

    with pytest.raises(EngineError) as raised:
        [d async for d in engines.stream(MESSAGES, temperature=0.5, max_tokens=40)]
    await engines.aclose()

    assert (raised.value.vendor, raised.value.status) == ("openai", 503)
    assert engines.name == "openai"


async def test_a_bad_key_does_not_fall_back(vendor, backup_vendor, config):
    vendor.default["chat"] = Reply.error(401, "Invalid API Key")
    engines = llm_chain(vendor, backup_vendor, config)

    with pytest.raises(EngineError) as raised:
        [d async for d in engines.stream(MESSAGES, temperature=0.5, max_tokens=40)]
    await engines.aclose()

    assert raised.value.status == 401
    assert backup_vendor.calls("chat") == []


async def test_no_fallback_once_the_first_delta_was_delivered(vendor, backup_vendor, config):
    vendor.script("chat", Reply.chat_stream(["Hola", " y"], stall_s=TEST_TIMEOUT_S + 2))
    engines = llm_chain(vendor, backup_vendor, config)
    received = []

    with pytest.raises(EngineError):
        async for delta in engines.stream(MESSAGES, temperature=0.5, max_tokens=40):
            received.append(delta)
    await engines.aclose()

    assert received == ["Hola"]
    assert engines.name == "groq"
    assert backup_vendor.calls("chat") == []


@pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng/sox not installed")
async def test_tts_falls_back_to_the_local_engine(vendor, config):
    vendor.default["speech"] = Reply.error(500)
    credentials = EngineCredentials(
        openai_api_key="sk-test", openai_base_url=vendor.openai_base_url
    )
    engines = build_engines(
        CallConfig(
            language="es-ES",
            engine_timeout_s=config.engine_timeout_s,
            stt=(EngineSpec(engine="local"),),
            llm=(EngineSpec(engine="local"),),
            tts=(
                EngineSpec(engine="openai", model="tts", voice="alloy"),
                EngineSpec(engine="local"),
            ),
        ),
        credentials,
    )

    audio = b"".join(
        [c async for c in engines.tts.synthesize("Hola", sample_rate=8000, language="es-ES")]
    )
    await engines.aclose()

    assert len(audio) > 8000  # > 0.5 s of 8 kHz speech
    assert engines.tts.name == "local"
    assert engines.tts.last_fallbacks[0].startswith("openai -> local")


def test_build_engines_wraps_only_roles_with_several_engines(vendor):
    config = CallConfig(
        stt=(EngineSpec(engine="local"),),
        llm=(EngineSpec(engine="groq", model="m"), EngineSpec(engine="local")),
        tts=(EngineSpec(engine="local"),),
    )

    engines = build_engines(config, EngineCredentials(groq_api_key="gsk-test"))

    assert not isinstance(engines.stt, FallbackSTT)
    assert isinstance(engines.llm, FallbackLLM)
    assert [e.name for e in engines.llm.engines] == ["groq", "local"]
    assert engines.llm.name == "groq"


def test_build_engines_fails_fast_when_a_listed_vendor_has_no_key():
    config = CallConfig(llm=(EngineSpec(engine="local"), EngineSpec(engine="groq", model="m")))
    with pytest.raises(EngineError, match="GROQ_API_KEY"):
        build_engines(config, EngineCredentials())


async def test_registry_accepts_factories_without_call_settings():
    """``bench.scripted_engines.create(role, spec, credentials)`` takes no ``config``."""
    register("scripted", "bench.scripted_engines")
    config = CallConfig(
        stt=(
            EngineSpec(engine="scripted", model="fail=1;name=first"),
            EngineSpec(engine="scripted", model="delay_ms=1;text=hola;name=second"),
        ),
        llm=(EngineSpec(engine="local"),),
        tts=(EngineSpec(engine="local"),),
    )
    engines = build_engines(config, EngineCredentials())

    text = await engines.stt.transcribe(b"\x00\x00" * 160, sample_rate=8000, language="es-ES")

    assert (text, engines.stt.name) == ("hola", "second")
    assert engines.stt.last_fallbacks == ["first -> second: scripted 500: scripted STT failure"]
