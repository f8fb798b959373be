"""Azure Speech TTS: SSML building, format mapping, error mapping; live only with a key."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError, create_engine
from orchestrator.engines.azure import build_ssml, cancellation_error, output_format

SSML = "{http://www.w3.org/2001/10/synthesis}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
CREDENTIALS = EngineCredentials(azure_speech_key="k", azure_speech_region="westeurope")


def test_ssml_escapes_the_text_and_carries_language_voice_and_rate():
    text = 'Tom & Jerry <b>"hola"</b> </voice></speak><speak> \x07fin'

    ssml = build_ssml(text, language="es-ES", voice="es-ES-ElviraNeural", rate="-10%")

    root = ET.fromstring(ssml)  # well-formed despite the hostile text
    assert root.get(XML_LANG) == "es-ES"
    voice = root.find(f"{SSML}voice")
    assert voice.get("name") == "es-ES-ElviraNeural"
    prosody = voice.find(f"{SSML}prosody")
    assert prosody.get("rate") == "-10%"
    assert prosody.text == 'Tom & Jerry <b>"hola"</b> </voice></speak><speak> fin'


def test_ssml_quotes_a_hostile_voice_name_and_adds_sentence_pauses():
    ssml = build_ssml("Hola.", language="es-MX", voice='x" onload="y', pause_ms=300)

    root = ET.fromstring(ssml)
    voice = root.find(f"{SSML}voice")
    assert voice.get("name") == 'x" onload="y'
    silence = voice.find("{https://www.w3.org/2001/mstts}silence")
    assert (silence.get("type"), silence.get("value")) == ("Sentenceboundary", "300ms")
    assert voice.find(f"{SSML}prosody") is None  # no rate configured


@pytest.mark.parametrize(
    ("language", "rate"), [('es"ES', ""), ("es-ES", "fast; drop"), ("es-ES", "+10%%")]
)
def test_ssml_rejects_invalid_language_or_rate(language, rate):
    with pytest.raises(EngineError):
        build_ssml("Hola", language=language, voice="v", rate=rate)


@pytest.mark.parametrize(
    ("channel_rate", "native", "format_name"),
    [
        (16000, 16000, "Raw16Khz16BitMonoPcm"),  # browser / simulator
        (8000, 8000, "Raw8Khz16BitMonoPcm"),  # phone: PCM16, the carrier encodes µ-law
        (24000, 24000, "Raw24Khz16BitMonoPcm"),
        (12000, 16000, "Raw16Khz16BitMonoPcm"),  # resampled down from the next rate
        (96000, 48000, "Raw48Khz16BitMonoPcm"),
    ],
)
def test_output_format_maps_the_channel_rate(channel_rate, native, format_name):
    assert output_format(channel_rate) == (native, format_name)


def test_every_mapped_format_exists_in_the_sdk():
    speechsdk = pytest.importorskip("azure.cognitiveservices.speech")
    for rate in (8000, 16000, 22050, 24000, 44100, 48000):
        assert hasattr(speechsdk.SpeechSynthesisOutputFormat, output_format(rate)[1])


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("AuthenticationFailure", 401, False),
        ("TooManyRequests", 429, True),
        ("ConnectionFailure", None, True),
        ("ServiceTimeout", 408, True),
        ("ServiceError", 500, True),
        ("BadRequest", 400, False),
    ],
)
def test_cancellations_map_to_engine_errors(code, status, retryable):
    result = SimpleNamespace(
        cancellation_details=SimpleNamespace(
            error_code=SimpleNamespace(name=code), error_details=f"details of {code}"
        )
    )

    error = cancellation_error(result)

    assert (error.vendor, error.status, error.retryable) == ("azure", status, retryable)
    assert f"details of {code}" in str(error)


def test_it_is_built_for_the_transport_rate_with_the_profile_rate_and_pacing():
    config = CallConfig(
        channel="twilio", output_rate=8000, voice_pacing_ms=200, extra={"tts_rate": "+5%"}
    )

    engine = create_engine(
        "tts", EngineSpec(engine="azure", voice="es-ES-ElviraNeural"), CREDENTIALS, config=config
    )

    assert (engine.channel_rate, engine.rate, engine.pause_ms) == (8000, "+5%", 200)


@pytest.mark.parametrize(
    ("spec", "credentials", "config", "message"),
    [
        (EngineSpec(engine="azure"), CREDENTIALS, CallConfig(), "voice"),
        (
            EngineSpec(engine="azure", voice="v"),
            EngineCredentials(azure_speech_key="k"),
            CallConfig(),
            "AZURE_SPEECH_REGION",
        ),
        (
            EngineSpec(engine="azure", voice="v"),
            CREDENTIALS,
            CallConfig(extra={"tts_rate": "<fast>"}),
            "tts_rate",
        ),
    ],
)
def test_it_refuses_an_incomplete_profile_at_build_time(
    spec, credentials, config, message, monkeypatch
):
    monkeypatch.delenv("AZURE_SPEECH_VOICE", raising=False)
    with pytest.raises(EngineError, match=message):
        create_engine("tts", spec, credentials, config=config)


def test_a_fallback_spec_without_voice_takes_the_env_voice(monkeypatch):
    monkeypatch.setenv("AZURE_SPEECH_VOICE", "es-ES-AlvaroNeural")
    engine = create_engine("tts", EngineSpec(engine="azure"), CREDENTIALS)
    assert engine.voice == "es-ES-AlvaroNeural"


@pytest.mark.skipif(not os.environ.get("AZURE_SPEECH_KEY"), reason="AZURE_SPEECH_KEY not set")
@pytest.mark.parametrize("sample_rate", [16000, 8000])
async def test_live_azure_streams_speech(sample_rate):
    credentials = EngineCredentials(
        azure_speech_key=os.environ["AZURE_SPEECH_KEY"],
        azure_speech_region=os.environ.get("AZURE_SPEECH_REGION", ""),
        azure_speech_endpoint=os.environ.get("AZURE_SPEECH_ENDPOINT", ""),
    )
    voice = os.environ.get("AZURE_SPEECH_VOICE", "es-ES-ElviraNeural")
    engine = create_engine(
        "tts",
        EngineSpec(engine="azure", voice=voice),
        credentials,
        config=CallConfig(output_rate=sample_rate),
    )
    await engine.warmup()

    chunks = [
        c
        async for c in engine.synthesize(
            "Hola, ¿en qué puedo ayudarle hoy?", sample_rate=sample_rate, language="es-ES"
        )
    ]
    await engine.aclose()

    assert len(b"".join(chunks)) > sample_rate  # more than half a second of audio
