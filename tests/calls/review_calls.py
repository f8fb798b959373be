"""Calls to review, shared by the review page's tests (test_call_review.py and the Chromium
ones in test_review_browser.py): turns at known offsets from the call's start."""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone

from calls import selectors, services
from calls.models import Call

# The greeting, the caller, a tool the LLM called, the reply and an interrupted one:
# (offset s, role, text, metrics, interrupted, tool)
REPLY_METRICS = {
    "endpointing_ms": 250.0, "eot_reason": "model", "eot_score": 0.91, "eot_wait_ms": 250.0,
    "stt_ms": 180.0, "llm_ttft_ms": 420.0, "llm_first_sentence_ms": 560.0, "tts_ttfb_ms": 210.0,
    "voice_to_voice_ms": 1300.0, "engines": {"stt": "local", "llm": "groq", "tts": "local"},
    "fallbacks": [],
}  # fmt: skip
TURNS: list[tuple[float, str, str, dict[str, Any], bool, dict[str, Any] | None]] = [
    (0.8, "assistant", "Hello, this is Casa Lola. How can I help?", {"tts_ttfb_ms": 310.0},
     False, None),
    (3.5, "user", "I would like a table for four tomorrow at nine.", {}, False, None),
    (6.1, "tool", "", {}, False, {
        "name": "book_table", "arguments": {"party_size": 4, "time": "21:00"},
        "result": '{"booked": true, "table": 12}', "status": "ok", "latency_ms": 212.0,
    }),
    (6.6, "assistant", "Booked: a table for four tomorrow at nine.", REPLY_METRICS, False, None),
    (65.0, "user", "Can I also bring a dog?", {}, False, None),
    (67.0, "assistant", "Dogs are welcome on the", {**REPLY_METRICS, "voice_to_voice_ms": 1200.0,
     "llm_first_sentence_ms": None}, True, None),
]  # fmt: skip


def review_call(profile: Any, *, external_id: str = "CA-review", end: bool = True) -> Call:
    """A Twilio call with the turns above; ended (with figures and an analysis) unless
    ``end`` is false."""
    call = services.call_start(profile=profile, channel="twilio", external_id=external_id)
    start = timezone.now() - datetime.timedelta(minutes=5)
    config = selectors.call_config_for(profile=profile, channel="twilio", call_id=str(call.pk))
    Call.objects.filter(pk=call.pk).update(
        started_at=start, config_snapshot=selectors.config_snapshot(config)
    )
    for sequence, (offset, role, text, metrics, interrupted, tool) in enumerate(TURNS, 1):
        at = start + datetime.timedelta(seconds=offset)
        services.turn_record(
            call_id=call.pk, role=role, text=text, started_at=at,
            ended_at=at + datetime.timedelta(seconds=2), sequence=sequence,
            interrupted=interrupted, metrics=metrics, tool=tool,
        )  # fmt: skip
    if end:
        services.call_end(
            call_id=call.pk, reason="caller_hangup",
            metrics={
                "duration_s": 70.2, "turns": 5, "voice_to_voice_p50_ms": 900.0,
                "audio_health": {"late_frames": 0, "inbound_gaps": 0, "max_agent_gap_ms": 20.0},
            },
        )  # fmt: skip
        services.call_set_extraction(
            call_id=call.pk, status="done",
            data={"summary": "Booked a table for four.", "intent": "book_table",
                  "sentiment": "positive", "extracted_entities": ["four", "nine"],
                  "next_action": "none"},
        )  # fmt: skip
    return Call.objects.get(pk=call.pk)
