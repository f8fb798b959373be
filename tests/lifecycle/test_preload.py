"""Start-up preload: the local models of the active profiles are loaded and warm before
the first call, and readiness says so."""

from __future__ import annotations

import pytest

from calls import preload
from orchestrator.engines.local import LLM, MODELS
from tests.speech import have_speech_tools

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox needed"),
]


@pytest.fixture
def fresh_preload(monkeypatch):
    monkeypatch.setattr(preload, "STATE", preload.PreloadState())
    monkeypatch.setattr(preload, "_thread", None)
    yield preload.STATE


def test_the_demo_profiles_models_are_warm_and_readiness_waits_for_them(
    transactional_db, fresh_preload
):
    from calls.services import profile_ensure_demo

    profile_ensure_demo()  # English, all-local engines
    thread = preload.start_in_background()
    ready, detail = preload.readiness()
    if fresh_preload.status == "loading":
        assert not ready and "loading" in detail
    thread.join(timeout=300)

    assert fresh_preload.status == "ready", fresh_preload.error
    assert preload.readiness()[0]
    for key in ("whisper-tiny.en", "piper-joe", LLM):
        assert MODELS[key].loaded and MODELS[key].warmed, key
    assert any(
        m.startswith("stt local") and "tiny.en" in m for m in fresh_preload.models
    ), fresh_preload.models
    assert preload.start_in_background() is thread  # once per process


@pytest.mark.django_db
def test_readiness_is_503_while_the_models_load(client, settings, fresh_preload):
    settings.PRELOAD_ENGINES = True
    fresh_preload.status, fresh_preload.started_at = "loading", 0.0
    response = client.get("/health/ready/")
    assert response.status_code == 503
    assert "loading local models" in response.json()["checks"]["engines"]["error"]

    fresh_preload.status, fresh_preload.seconds = "ready", 3.2
    assert client.get("/health/ready/").status_code == 200
