"""Offline engines on real espeak-ng speech. Model-loading tests are marked slow but run
in the default suite; each model is loaded once per process and shared."""

from __future__ import annotations

import re

import numpy as np
import pytest

from orchestrator.config import CallConfig, EngineCredentials, EngineSpec
from orchestrator.engines import EngineError, create_engine
from orchestrator.engines import local as local_engines
from orchestrator.engines.local import chat_prompt, espeak_voice, split_example, usable_or_fallback
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16
from tests.transcripts import assert_heard

pytestmark = pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng/sox not installed")

NO_KEYS = EngineCredentials()


def local(role: str, language: str = "en-US", **spec: str):
    return create_engine(
        role, EngineSpec(engine="local", **spec), NO_KEYS, config=CallConfig(language=language)
    )


def voiced_seconds(pcm: bytes, rate: int) -> float:
    """Duration of 20 ms frames louder than -40 dBFS."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    frame = rate // 50
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    loud = np.sqrt((frames**2).mean(axis=1)) > 0.01
    return float(loud.sum()) / 50


# Transcripts differ across CPUs (tests/transcripts.py): each test bounds the word error
# rate and asserts only words that every machine seen so far decodes.


@pytest.mark.slow
async def test_local_stt_transcribes_english_speech():
    said = "I would like to book an appointment for Monday morning"
    pcm = silence_pcm16(300) + speech_pcm16(said)
    engine = local("stt")

    text = await engine.transcribe(pcm, sample_rate=16000, language="en-US")

    # Seen: "I would like to welcome an appointment for Monday morning." (1 error in 10)
    assert_heard(
        text, said, max_wer=0.4, at_least=2, of=frozenset({"appointment", "monday", "morning"})
    )


@pytest.mark.slow
async def test_local_stt_transcribes_spanish_phone_audio_with_the_multilingual_model():
    said = "Quiero pedir una cita para el lunes"
    pcm = speech_pcm16(said, rate=8000, voice="es")
    engine = local("stt", "es-ES")

    text = await engine.transcribe(pcm, sample_rate=8000, language="es-ES")

    # Seen on different CPUs: "Quiero venir una cita para el lunes", "... una tita para el
    # lunes", "... una cita para el rume": 2 of 7 words wrong. Spanish words at all mean the
    # multilingual model decoded Spanish: tiny.en hears "I'm going to go to the next one."
    assert_heard(
        text, said, max_wer=0.45, at_least=3, of=frozenset({"quiero", "una", "para", "el"})
    )


@pytest.mark.slow
async def test_local_english_tts_is_piper_speech_at_the_channel_rate():
    engine = local("tts")
    await engine.warmup()

    chunks = [
        c
        async for c in engine.synthesize(
            "Hello, thanks for calling. How can I help you today?",
            sample_rate=8000,
            language="en-US",
        )
    ]

    audio = b"".join(chunks)
    assert len(audio) % 2 == 0
    assert 1.5 < len(audio) / 2 / 8000 < 8
    assert voiced_seconds(audio, 8000) > 1.0


async def test_local_spanish_tts_is_espeak_speech_streamed_at_the_channel_rate():
    engine = local("tts", "es-ES")

    chunks = [
        c
        async for c in engine.synthesize(
            "Hola, gracias por llamar. ¿En qué puedo ayudarle hoy?",
            sample_rate=16000,
            language="es-ES",
        )
    ]

    assert len(chunks) > 1  # yielded while espeak-ng was still writing
    audio = b"".join(chunks)
    assert 1.5 < len(audio) / 2 / 16000 < 8
    assert voiced_seconds(audio, 16000) > 1.0


async def test_local_tts_stops_espeak_when_the_consumer_stops_early():
    engine = local("tts", "es-ES")
    stream = engine.synthesize(
        "Una frase bastante larga. " * 20, sample_rate=8000, language="es-ES"
    )

    first = await anext(stream)
    await stream.aclose()  # barge-in

    assert first


@pytest.mark.slow
async def test_local_llm_streams_non_empty_text():
    engine = local("llm", "es-ES")
    messages = [
        {
            "role": "system",
            "content": "Eres la recepcionista de una clínica dental. Responde breve.",
        },
        {"role": "user", "content": "Hola, ¿puedo pedir cita para mañana?"},
    ]

    deltas = [d async for d in engine.stream(messages, temperature=0.2, max_tokens=40)]

    reply = "".join(deltas).lower()
    assert any(ch.isalnum() for ch in reply)
    # In the profile's language: Spanish function words, whatever the exact wording.
    words = set(re.findall(r"[^\W\d_]+", reply))
    spanish = {"de", "el", "la", "para", "que", "en", "cita", "puedo", "claro", "sí", "qué"}
    assert words & spanish, reply


@pytest.mark.slow
async def test_local_llm_is_free_again_after_a_reply_is_cut_short():
    engine = local("llm")
    messages = [{"role": "user", "content": "Tell me a long story about a dentist."}]

    stream = engine.stream(messages, temperature=0.2, max_tokens=200)
    assert await anext(stream)
    await stream.aclose()  # barge-in: the generation thread stops, the model is released

    again = [d async for d in engine.stream(messages, temperature=0.2, max_tokens=5)]
    assert again


async def test_an_empty_completion_becomes_the_fallback_sentence():
    async def deltas(*items):
        for item in items:
            yield item

    assert [d async for d in usable_or_fallback(deltas("\n", " ", "..."), "Perdona")] == ["Perdona"]
    assert [d async for d in usable_or_fallback(deltas(" ", " ¿Sí", "?"), "Perdona")] == [
        "¿Sí",
        "?",
    ]


def test_the_prompt_is_chatml_ending_with_the_assistant_turn_open():
    prompt = chat_prompt(
        [
            {"role": "system", "content": "Eres amable."},
            {"role": "user", "content": "Hola\n  buenas"},
            {"role": "assistant", "content": "Dígame."},
            {"role": "user", "content": "Una cita"},
        ],
        rule="Responde siempre en español.",
    )

    assert prompt == (
        "<|im_start|>system\nEres amable.\nResponde siempre en español.<|im_end|>\n"
        "<|im_start|>user\nHola buenas<|im_end|>\n"
        "<|im_start|>assistant\nDígame.<|im_end|>\n"
        "<|im_start|>user\nUna cita<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


TOOL_HISTORY = [
    {"role": "system", "content": "Be kind."},
    {"role": "user", "content": "Is there a table for two?"},
    # An assistant turn that only calls a tool: no content key at all, or None.
    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c2"}]},
    {"role": "tool", "tool_call_id": "c1", "content": '{"free": true}'},
    # Text and a tool call together: the text stays.
    {"role": "assistant", "content": "Let me check.", "tool_calls": [{"id": "c3"}]},
    {"role": "tool", "tool_call_id": "c3", "content": "ok"},
    {"role": "assistant", "content": "Yes, we have one."},
]


def test_the_prompt_keeps_only_text_of_tool_call_messages():
    prompt = chat_prompt(TOOL_HISTORY)

    assert prompt == (
        "<|im_start|>system\nBe kind.<|im_end|>\n"
        "<|im_start|>user\nIs there a table for two?<|im_end|>\n"
        "<|im_start|>assistant\nLet me check.<|im_end|>\n"
        "<|im_start|>assistant\nYes, we have one.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert "tool" not in prompt.replace("<|im_start|>", "")


def test_an_example_exchange_ending_the_system_prompt_becomes_chat_turns():
    system = "Be brief.\nExample:\nCaller: A table for two.\nYou: Sure. At what time?"

    assert split_example(system) == (
        "Be brief.",
        [
            {"role": "user", "content": "A table for two."},
            {"role": "assistant", "content": "Sure. At what time?"},
        ],
    )
    # Not an exchange (prose after the header): the text stays as written.
    prose = "Be brief.\nExample:\nsay hello first."
    assert split_example(prose) == (prose, [])
    assert split_example("Ejemplo:\nCliente: Hola.\nTú: ¡Hola!")[1][1]["content"] == "¡Hola!"


def test_a_profile_asking_for_a_model_that_is_not_installed_fails_at_build(monkeypatch):
    monkeypatch.setattr(local_engines.GGUFWeights, "installed", lambda self: False)

    with pytest.raises(EngineError, match="requirements-qwen-1.5b.txt"):
        local("llm", model="qwen2.5-1.5b")


def test_an_unknown_local_llm_model_name_falls_back_to_the_default(caplog):
    engine = local("llm", model="llama-3.3-70b-versatile")  # an "auto" profile's cloud model

    assert engine.model == local_engines.LLM
    assert "ignoring model" in caplog.text


def _default_weights_installed() -> bool:
    return local_engines.LLM_WEIGHTS[local_engines.LLM].installed()


@pytest.mark.slow
@pytest.mark.skipif(not _default_weights_installed(), reason="local LLM weights not installed")
def test_our_chatml_is_what_the_gguf_chat_template_renders():
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model = local_engines.MODELS[local_engines.LLM].get()
    formatter = Jinja2ChatFormatter(
        template=model.metadata["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token=""
    )
    kept = [
        {"role": m["role"], "content": " ".join(m["content"].split())}
        for m in TOOL_HISTORY
        if m["role"] in ("system", "user", "assistant") and m.get("content")
    ]

    rendered = formatter(messages=kept).prompt

    assert rendered == chat_prompt(TOOL_HISTORY)


@pytest.mark.parametrize(
    ("language", "voice", "expected"),
    [
        ("es-ES", "", "es"),
        ("es-MX", "", "es-419"),
        ("en-US", "", "en-us"),
        ("fr-FR", "", "fr-fr"),
        ("de-AT", "", "de"),
        ("es-ES", "espeak:es+f3", "es+f3"),
    ],
)
def test_espeak_voice_follows_the_language_tag(language, voice, expected):
    assert espeak_voice(language, voice) == expected


def test_local_engines_ignore_cloud_model_and_voice_names():
    """An "auto" profile resolved to local keeps e.g. an Azure voice: still works offline."""
    assert local("stt", model="whisper-large-v3-turbo").model == ""
    assert local("tts", voice="es-ES-ElviraNeural").voice == ""
    assert local("tts", voice="espeak:es-419").voice == "espeak:es-419"


def test_joining_weights_leaves_no_partial_file_when_it_fails(tmp_path):
    from orchestrator.engines.errors import EngineError
    from orchestrator.engines.local import join_verified

    parts = []
    for i in range(2):
        part = tmp_path / f"part{i}"
        part.write_bytes(bytes([i]) * 1000)
        parts.append(part)
    target = tmp_path / "cache" / "model.gguf"

    with pytest.raises(EngineError, match="sha256 mismatch"):
        join_verified(parts, target, "0" * 64, "test model")

    assert not target.exists()
    assert not list(target.parent.glob("*.tmp"))
    import hashlib

    good = hashlib.sha256(b"\x00" * 1000 + b"\x01" * 1000).hexdigest()
    assert join_verified(parts, target, good, "test model") == target
    assert target.read_bytes() == b"\x00" * 1000 + b"\x01" * 1000
    assert (target.parent / "model.gguf.sha256").read_text().strip() == good
