"""Smoke run of the load harness (bench/load.py): two Twilio-protocol calls, one turn each,
against a real daphne server with the scripted engines. Keeps the harness working; the
figures it prints are not asserted (no timed assertions: the sweep is run by hand)."""

from __future__ import annotations

import secrets

import pytest
from channels.db import database_sync_to_async as sync_to_async

from bench.load import PROFILE_SLUG, UTTERANCES, Clips, Endpoint, Script, run_calls, summarize
from calls.models import AgentProfile
from tests.server_process import DaphneServer
from tests.speech import have_speech_tools

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

# Short scripted latencies: the smoke run checks the plumbing, not the numbers.
SCRIPT = Script(
    stt_ms=30, llm_ttft_ms=60, tokens_per_s=200, tts_ttfb_ms=20, ms_per_char=10, tts_realtime=4
)


@pytest.fixture
def twilio_server():
    token = secrets.token_hex(16)
    server = DaphneServer(
        TWILIO_AUTH_TOKEN=token, TWILIO_ACCOUNT_SID="", TELEPHONY_ALLOW_UNSIGNED="false"
    )
    # Webhook signatures are checked against the public URL: here, the server itself.
    server.env["PUBLIC_BASE_URL"] = server.base
    server.start()
    yield server, token
    server.stop()


async def test_two_signed_twilio_calls_get_agent_audio_and_a_voice_to_voice_figure(twilio_server):
    server, token = twilio_server
    await sync_to_async(AgentProfile.objects.create)(slug=PROFILE_SLUG, **SCRIPT.profile_fields())

    results = await run_calls(
        Endpoint(base=server.base, auth_token=token),
        n=2,
        turns=1,
        clips=Clips.build(UTTERANCES[:1]),
        ramp_s=0.2,
    )

    for call in results:
        assert call.errors == [], server.output()[-3000:]
        assert call.greeting is not None and call.greeting.frames > 0
        assert len(call.replies) == 1
        assert call.replies[0].frames > 0
        assert call.replies[0].v2v_ms() is not None
    row = summarize(2, results, SCRIPT, turns=1)
    assert row["turns_measured"] == 2
    assert row["calls_with_agent_audio"] == 2
    assert row["errors"] == 0
