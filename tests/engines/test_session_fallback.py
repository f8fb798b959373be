"""One owner for timeouts: a hanging primary engine times out by itself and its fallback
serves the turn; the session's own step timeout is only a backstop above the chain."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.config import EngineSpec
from orchestrator.engines import create_engine
from orchestrator.engines.fallback import chain
from orchestrator.session import EndReason
from tests.engines.conftest import TEST_TIMEOUT_S
from tests.engines.test_fallback import two_vendor_credentials
from tests.fake_vendor import Reply
from tests.orchestrator.conftest import BASE_CONFIG, Harness
from tests.speech import have_speech_tools

pytestmark = pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox needed")


async def test_a_hanging_primary_llm_hands_the_turn_to_its_fallback(vendor, backup_vendor) -> None:
    # The primary accepts the request and never sends a byte (a hung upstream).
    vendor.default["chat"] = Reply.chat_stream(["late"], delay_s=TEST_TIMEOUT_S * 3)
    backup_vendor.script("chat", Reply.chat_stream(["The backup ", "answers."]))
    credentials = two_vendor_credentials(vendor, backup_vendor)
    config = replace(BASE_CONFIG, engine_timeout_s=TEST_TIMEOUT_S)
    llm = chain(
        "llm",
        [
            create_engine("llm", EngineSpec(engine=name, model="m"), credentials, config=config)
            for name in ("groq", "openai")
        ],
    )
    h = Harness(config=config, llm=llm)
    h.start()
    h.say()
    await h.until(lambda: len(h.recorder.by_role("assistant")) == 1, timeout=20)
    assert await h.finish() is EndReason.CALLER_HANGUP
    await llm.aclose()

    (agent,) = h.recorder.by_role("assistant")
    assert agent.text == "The backup answers."
    assert agent.metrics.engines["llm"] == "openai"
    assert agent.metrics.fallbacks and agent.metrics.fallbacks[0].startswith("llm: groq -> openai")
    assert h.recorder.unanswered == []
