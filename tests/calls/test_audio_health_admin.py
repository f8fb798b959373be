"""A call whose agent audio stalled is stored with its audio-health figures and found by
the admin's "audio stuttered" filter; the figures reach Prometheus once, at call end."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from django.urls import reverse
from prometheus_client import REGISTRY

from bench.scripted_engines import ScriptedLLM, ScriptedSTT, ScriptedTTS
from calls import services
from calls.models import Call
from calls.recorder import DjangoCallRecorder
from orchestrator.engines import Engines
from orchestrator.session import CallSession, EndReason
from tests.orchestrator.conftest import BASE_CONFIG
from tests.orchestrator.test_audio_health import GREETING, StallingTransport

pytestmark = pytest.mark.django_db(transaction=True)

CLEAN = {
    "late_frames": 0, "max_agent_gap_ms": 0.8, "inbound_jitter_p95_ms": 2.0,
    "inbound_jitter_max_ms": 9.0, "inbound_gaps": 0, "inbound_missing_ms": 0.0,
    "loop_lag_p99_ms": 3.0,
}  # fmt: skip


async def _call_with_a_stalled_send(call_id: str) -> None:
    """A real session and the Django recorder; the transport blocks 300 ms once."""
    transport = StallingTransport(stall_at=8, stall_s=0.3)
    session = CallSession(
        replace(BASE_CONFIG, call_id=call_id, greeting=GREETING),
        engines=Engines(
            stt=ScriptedSTT(delay_ms=20, text="hi"),
            llm=ScriptedLLM(ttft_ms=30, tokens_per_s=200, reply="Sure."),
            tts=ScriptedTTS(ttfb_ms=20, ms_per_char=8, chunk_ms=40, realtime=0),
        ),
        transport=transport,
        recorder=DjangoCallRecorder(call_id=call_id, channel="browser"),
    )
    task = asyncio.create_task(session.run())
    async with asyncio.timeout(20):
        while len(transport.frames) <= 20 or transport.states()[-1] != "listening":
            await asyncio.sleep(0.01)
        session.stop(EndReason.CALLER_HANGUP)
        await task


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_the_stuttering_call_is_stored_shown_and_found_by_the_filter(staff_client, profile):
    stalled = services.call_start(profile=profile, channel="browser", external_id="stutter-1")
    clean = services.call_start(profile=profile, channel="browser", external_id="clean-1")
    unmeasured = services.call_start(profile=profile, channel="browser", external_id="old-1")
    services.call_end(call_id=clean.pk, reason="caller_hangup", metrics={"audio_health": CLEAN})
    services.call_end(call_id=unmeasured.pk, reason="caller_hangup")
    observed = _sample("voiceapp_call_late_frames_count")

    asyncio.run(_call_with_a_stalled_send(str(stalled.pk)))

    stalled.refresh_from_db()
    health = stalled.metrics["audio_health"]
    assert health["late_frames"] >= 1 and health["max_agent_gap_ms"] >= 290.0
    assert stalled.audio_issues is not None and stalled.audio_issues >= 1
    assert Call.objects.get(pk=clean.pk).audio_issues == 0
    assert Call.objects.get(pk=unmeasured.pk).audio_issues is None
    assert _sample("voiceapp_call_late_frames_count") == observed + 1  # once per call
    assert _sample("voiceapp_call_max_agent_gap_seconds_count") >= 1

    def listed(value: str) -> set[str]:
        response = staff_client.get("/admin/calls/call/", {"audio_stuttered": value})
        assert response.status_code == 200
        page = response.content.decode()
        return {ext for ext in ("stutter-1", "clean-1", "old-1") if ext in page}

    assert listed("yes") == {"stutter-1"}
    assert listed("no") == {"clean-1"}
    assert listed("unknown") == {"old-1"}

    detail = staff_client.get(reverse("admin:calls_call_change", args=[stalled.pk])).content
    assert b"stuttered" in detail and b"late frame" in detail
    assert b"longest gap within a sentence" in detail
    clean_page = staff_client.get(reverse("admin:calls_call_change", args=[clean.pk])).content
    assert b"clean" in clean_page and b"0 late frames" in clean_page


def test_metrics_from_a_late_session_still_set_audio_issues(profile):
    """The carrier's hang-up webhook ended the call first; the session's summary, written
    after, still makes the call findable."""
    call = services.call_start(profile=profile, channel="twilio", external_id="CA-late")
    services.call_end(call_id=call.pk, reason="caller_hangup")
    stutter = {**CLEAN, "late_frames": 3, "inbound_gaps": 2}
    services.call_end(call_id=call.pk, reason="error", metrics={"audio_health": stutter})
    assert Call.objects.get(pk=call.pk).audio_issues == 5
