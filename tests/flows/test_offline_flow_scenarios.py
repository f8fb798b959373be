"""The demo booking flow keyless, as a caller meets it: the shipped ``flow`` scenarios of
``demo-flow`` (English) and ``demo-flow-es`` (Spanish) placed over Twilio's wire protocol
against a server the runner starts on the offline engines (Whisper hears piper's /
the Spanish voice's speech, the local 0.5B follows the flow guided by the caller's words,
the booking is made, the read-back and the goodbye are the flow's lines, the agent hangs
up). The issue's "the demo flow on the offline engines completes the booking for a
scripted caller, as a shipped scenario".

About 2 minutes here (server start and models ~15-50 s, each call ~30-45 s). Bounded
like the other offline scenario test, so CI cannot hang on it.
"""

from __future__ import annotations

import asyncio

import pytest

from calls.services import profile_ensure_demo_flow, profile_ensure_demo_flow_es
from scenarios import report, selectors, services
from scenarios.local_server import LocalServer
from scenarios.runner import run_batch
from tests.scenarios.test_shipped_offline import NEEDS_OFFLINE_ENGINES, OFFLINE_SERVER

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_OFFLINE_ENGINES]
OVERALL_TIMEOUT_S = 480.0


def test_the_keyless_demo_flow_completes_a_booking_in_english_and_in_spanish():
    profile_ensure_demo_flow()
    profile_ensure_demo_flow_es()
    services.scenarios_load_shipped(profiles=["demo-flow", "demo-flow-es"])
    scenarios = [
        *selectors.scenarios_matching(profile="demo-flow", tags=["flow"]),
        *selectors.scenarios_matching(profile="demo-flow-es", tags=["flow"]),
    ]
    assert {s.slug for s in scenarios} == {"booking-flow", "reserva-flujo"}
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
