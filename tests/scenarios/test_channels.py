"""The runner on the Telnyx and browser channels, against the real server with the
scripted engines: Telnyx's signed webhooks and Call Control (served by the runner's own
Telnyx), the simulator socket with a staff session; a scenario passes, a failing assertion
fails, and a Telnyx scenario is skipped, with the reason, where the server does not trust
the runner's Telnyx."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from calls.models import Call, Channel, EndReason
from scenarios.batch import target_for
from scenarios.dialing import telnyx_setup_hint
from scenarios.runner import Job, run_batch
from scenarios.spec import parse_document
from scenarios.telnyx_api import TelnyxRig
from tests.scripted import scripted_profile
from tests.speech import have_speech_tools

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

NUMBER = "+34910000777"  # Telnyx picks the profile by the number called
SCRIPT = [
    {"wait_for_agent": True},
    {"say": "I would like a table for two, please."},
    {"wait_for_agent": True},
    {"hang_up": True},
]
PASSING = [
    {"transcript_contains": {"side": "agent", "text": "what time"}},
    {"transcript_contains": {"side": "caller", "text": "table for two"}},
    {"turns": {"side": "caller", "min": 1, "max": 1}},
    {"end_reason": "caller_hangup"},
]
FAILING = [
    {"end_reason": "caller_hangup"},
    {"transcript_contains": {"side": "agent", "text": "pizza"}},
]


def job(slug: str, channel: str, assertions: list[dict], script: list[dict] = SCRIPT) -> Job:
    spec = parse_document(
        {
            "name": slug.title(),
            "slug": slug,
            "profile": "scripted",
            "channel": channel,
            "voice": "espeak",  # the scripted STT ignores the words: the fastest voice
            "timeout_s": 60,
            "caller": {"script": script},
            "assertions": assertions,
        }
    )
    return Job(spec=spec, language="en-US")


def stored(call_id: str | None) -> Call:
    return Call.objects.get(pk=call_id)


async def test_a_telnyx_call_is_answered_through_call_control_and_judged(scripted_server):
    _, target = scripted_server
    await database_sync_to_async(scripted_profile)(phone_numbers=NUMBER)
    keys = [{"wait_for_agent": True}, {"dtmf": "12#"}, *SCRIPT[2:]]
    passing = job("telnyx-passing", "telnyx", PASSING)
    pressing = job("telnyx-keys", "telnyx", [{"dtmf_received": "12#"}, *FAILING[:1]], keys)
    failing = job("telnyx-failing", "telnyx", FAILING)

    ok, keyed, bad = await run_batch([passing, pressing, failing], target, parallel=3)

    assert ok.status == "passed", (ok.error, [c for c in ok.checks if c.status != "passed"])
    call = await database_sync_to_async(stored)(ok.call_id)
    assert call.channel == Channel.TELNYX and call.to_number == NUMBER
    assert ok.call_sid == call.external_id and ok.call_sid.startswith("v3:")
    assert target.telnyx.commands(ok.call_sid) == ["answer"]  # the caller hung up
    assert keyed.status == "passed", (keyed.error, keyed.checks)

    assert bad.status == "failed"
    assert [c.message for c in bad.failed_checks] == ["none of ['pizza'] in the agent transcript"]


async def test_the_server_hanging_up_a_telnyx_call_goes_through_call_control(scripted_server):
    _, target = scripted_server
    await database_sync_to_async(scripted_profile)(phone_numbers=NUMBER, idle_timeout_s=2)
    silent = job(
        "telnyx-idle",
        "telnyx",
        [{"end_reason": "idle_timeout"}, {"turns": {"side": "caller", "max": 0}}],
        [{"wait_for_agent": True}, {"wait_for_end": {"timeout_s": 30}}],
    )

    (result,) = await run_batch([silent], target)

    assert result.status == "passed", (result.error, result.checks, result.notes)
    assert target.telnyx.commands(result.call_sid)[-1] == "hangup"


async def test_a_browser_call_goes_through_the_simulator_socket_and_is_judged(scripted_server):
    _, target = scripted_server
    await database_sync_to_async(scripted_profile)()
    passing = job("browser-passing", "browser", PASSING)
    failing = job("browser-failing", "browser", FAILING)

    ok, bad = await run_batch([passing, failing], target, parallel=2)

    assert ok.status == "passed", (ok.error, [c for c in ok.checks if c.status != "passed"])
    call = await database_sync_to_async(stored)(ok.call_id)
    assert call.channel == Channel.BROWSER and ok.call_sid == call.external_id
    assert call.end_reason == EndReason.CALLER_HANGUP

    assert bad.status == "failed"
    assert [c.message for c in bad.failed_checks] == ["none of ['pizza'] in the agent transcript"]


async def test_a_telnyx_scenario_is_skipped_with_the_setup_where_the_server_lacks_the_rig(
    scripted_server, monkeypatch
):
    server, _ = scripted_server
    await database_sync_to_async(scripted_profile)(phone_numbers=NUMBER)
    monkeypatch.delenv("SCENARIO_TELNYX_SEED", raising=False)
    theirs = target_for(server.base)  # --base-url, without the runner's Telnyx
    assert theirs.telnyx is None

    (result,) = await run_batch([job("telnyx-elsewhere", "telnyx", PASSING)], theirs)

    assert result.status == "skipped" and result.call_id is None
    assert "trusts the runner's Telnyx" in result.error
    for setting in ("SCENARIO_TELNYX_SEED=", "TELNYX_PUBLIC_KEY=", "TELNYX_API_BASE_URL="):
        assert setting in result.error
    assert not await database_sync_to_async(Call.objects.exists)()


def test_the_telnyx_setup_a_skip_prints_configures_both_ends():
    reason = telnyx_setup_hint("http://voice.example.com")
    env = dict(word.split("=", 1) for word in reason.replace(",", " ").split() if "=" in word)

    rig = TelnyxRig.from_env(env)

    assert rig is not None and rig.port == int(env["SCENARIO_TELNYX_PORT"])
    assert rig.server_env() == {k: env[k] for k in rig.server_env()}
    assert TelnyxRig.from_env({"SCENARIO_TELNYX_SEED": env["SCENARIO_TELNYX_SEED"]}) is None
