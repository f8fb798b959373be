"""Profiles wired to the scripted engines of bench/ (fixed latencies, scripted words)."""

from __future__ import annotations

from calls.models import AgentProfile
from orchestrator.engines import register

register("scripted", "bench.scripted_engines")


def scripted_profile(
    *,
    slug: str = "scripted",
    heard: str = "I would like a table for two",
    reply: str = "Of course. For what time would you like it?",
    greeting: str = "Hello, Casa Lola here.",
    **fields: object,
) -> AgentProfile:
    values: dict[str, object] = {
        "name": slug.title(),
        "language": "en-US",
        "greeting": greeting,
        "stt_engine": "scripted",
        "stt_model": f"delay_ms=30;text={heard}",
        "llm_engine": "scripted",
        "llm_model": f"ttft_ms=60;tokens_per_s=200;reply={reply}",
        "tts_engine": "scripted",
        "tts_model": "ttfb_ms=20;ms_per_char=15",
        "silence_timeout_ms": 500,
        "idle_timeout_s": 30,
    }
    values.update(fields)
    # Created without full_clean: "scripted" is a test engine, not one of the admin's choices.
    return AgentProfile.objects.create(slug=slug, **values)
