"""The demo booking flow keyless, as a caller meets it: the shipped offline ``flow``
scenario of ``demo-flow`` placed over Twilio's wire protocol against a server the runner
starts on the offline engines (Whisper hears piper's speech, the local 0.5B follows the
flow guided by the caller's words, the booking is made, the read-back and the goodbye are
the flow's lines, the agent hangs up). The issue's "the demo flow on the offline engines
completes the booking for a scripted caller, as a shipped scenario". (The Spanish one is
tagged ``cloud``: keyless, Whisper base mishears the synthetic Spanish caller.)

About 1.5 minutes here (server start and models ~15-50 s, the call ~50 s). Bounded like
the other offline scenario test, so CI cannot hang on it.
"""

from __future__ import annotations

import asyncio

import pytest

from calls.services import profile_ensure_demo_flow
from scenarios import report, selectors, services
from scenarios.local_server import LocalServer
from scenarios.runner import run_batch
from tests.scenarios.test_shipped_offline import NEEDS_OFFLINE_ENGINES, OFFLINE_SERVER

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_OFFLINE_ENGINES]
OVERALL_TIMEOUT_S = 420.0


def test_the_keyless_demo_flow_completes_a_booking_for_a_scripted_caller():
    profile_ensure_demo_flow()
    services.scenarios_load_shipped(profiles=["demo-flow"])
    scenarios = selectors.scenarios_matching(profile="demo-flow", tags=["flow", "offline"])
    assert [s.slug for s in scenarios] == ["booking-flow"]
    jobs = [services.scenario_job(scenario=s) for s in scenarios]

    server = LocalServer(settings_module="voiceapp.settings", env=OFFLINE_SERVER).start(
        timeout_s=300
    )
    try:

        async def batch():
            async with asyncio.timeout(OVERALL_TIMEOUT_S):
                # One call at a time, a busy end placed again up to twice (as the other offline
                # scenario test: a loaded CI machine, not the agent).
                return await run_batch(jobs, server.target, parallel=1, busy_retries=2)

        try:
            results = asyncio.run(batch())
        except TimeoutError:
            pytest.fail(f"not done within {OVERALL_TIMEOUT_S:g} s:\n{server.output()[-3000:]}")
    finally:
        server.stop()
    print("\n" + report.summary_table(results))
    assert all(r.status == "passed" for r in results), report.problems(results) + (
        "\n" + server.output()[-3000:]
    )
