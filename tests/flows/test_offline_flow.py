"""The seeded demo flow on the offline LLM, keyless: a scripted caller with real speech
(through the real VAD and session) books by phone while the real local model answers by
grammar (tests/flows/offline_caller.py; the caller's words reach the session as a perfect
transcriber would hear them, so this measures the flow on the LLM, not Whisper).

Only what holds on any CPU is asserted. The model's choices are its own (and sampled):
the measured completion rate is in docs/flows.md (``bench/offline_flow.py``), and a test
asserting a whole booking would fail on some runs. What every run shows: the flow is
followed (transitions are taken as tool turns, only functions the flow offers are called),
whatever was collected passed its schema and was said by the caller, a booking (when made)
holds the caller's values, and the call ends (the harness hangs up after its lines at the
latest). The engine timeout is raised: on a loaded CI machine a slow turn must not end the
call as busy, which would measure the machine, not the flow.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from calls.selectors import call_config_for
from calls.services import profile_ensure_demo_flow
from orchestrator.engines import local as local_engines
from orchestrator.session import EndReason
from tests.flows.offline_caller import book_by_phone
from tests.speech import have_speech_tools

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed"),
    pytest.mark.skipif(
        not local_engines.LLM_WEIGHTS[local_engines.LLM].installed(),
        reason="the local LLM is not installed",
    ),
]

FLOW_FUNCTIONS = {"wants_booking", "set_booking_details", "confirmed", "change_details",
                  "demo_booking", "booked", "end_call", "speak_to_person", "fallback",
                  "transfer_call"}  # fmt: skip
STAYS = {"demo_booking", "end_call", "transfer_call"}  # they do not move the call on
# The caller says "four" and "nine" (a small model may take either for the party size).
SAID_NUMBERS = {4, 9}
SAID_WORDS = {"four", "people", "friday", "nine", "evening", "lola", "name"}


# transaction=True: sync_to_async writes on another thread's connection, outside a test
# transaction, and the profile would outlive the test (an active profile in other tests).
@pytest.mark.django_db(transaction=True)
async def test_the_demo_flow_runs_keyless_on_the_local_model(settings):
    settings.GROQ_API_KEY = ""  # "auto" engines resolve to local, whatever the environment
    settings.OPENAI_API_KEY = ""
    from asgiref.sync import sync_to_async

    profile = await sync_to_async(profile_ensure_demo_flow)()
    config = await sync_to_async(call_config_for)(profile=profile, channel="twilio")
    assert config.llm[0].engine == "local" and config.flow is not None
    # Greedy decoding: the same choices on every run of one machine (the profile's 0.3
    # samples; bench/offline_flow.py measures that).
    config = replace(config, call_id="offline-flow-test", engine_timeout_s=60.0, temperature=0.0)

    # Three caller turns at most: the opening, all four details, and "yes" if asked.
    result = await book_by_phone(config, max_caller_turns=3, timeout_s=240, all_at_once=True)
    print(f"\npath {' -> '.join(result.path)}; tools {result.tools}; {result.seconds:.0f} s")

    ended = (EndReason.CALLER_HANGUP, EndReason.AGENT_HANGUP, EndReason.TRANSFERRED)
    assert result.end_reason in ended, result.said
    # "I would like to book a table" takes greet's transition: every run seen so far, at
    # the profile's temperature too (docs/flows.md); what comes after is the model's.
    assert result.path[:2] == ["greet", "collect"], (result.path, result.said)
    # Transitions are tool turns, and only the flow's functions were called.
    assert {name for name, _, _ in result.tools} <= FLOW_FUNCTIONS, result.tools
    moves = [n for n, _, status in result.tools if status == "ok" and n not in STAYS]
    assert len(result.path) == 1 + len(moves), (result.path, result.tools)
    # Whatever was collected (or booked) passed its schema and is what the caller said.
    for values in (result.flow.get("values", {}), result.booked or {}):
        assert values.get("party_size", 4) in SAID_NUMBERS, values
        for key in ("day", "name"):
            assert set(re.findall(r"\w+", values.get(key, "friday").lower())) & SAID_WORDS, values
