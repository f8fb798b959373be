"""The runner against the real server (daphne, Twilio's wire, the session, the recorder,
the database) with the scripted engines: fast and deterministic words, real audio paths."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from channels.db import database_sync_to_async

from scenarios.junit import junit_xml
from scenarios.runner import Job, run_batch
from scenarios.spec import parse_document
from tests.scripted import scripted_profile
from tests.speech import have_speech_tools

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

SCRIPT = [
    {"wait_for_agent": True},
    {"say": "I would like a table for two, please."},
    {"wait_for_agent": True},
    {"hang_up": True},
]


def job(slug: str, profile: str, assertions: list[dict], script: list[dict] = SCRIPT) -> Job:
    spec = parse_document(
        {
            "name": slug.title(),
            "slug": slug,
            "profile": profile,
            "voice": "espeak",  # the scripted STT ignores the words: the fastest voice
            "timeout_s": 60,
            "caller": {"script": script},
            "assertions": assertions,
        }
    )
    return Job(spec=spec, language="en-US")


async def test_a_passing_a_failing_and_a_crashed_scenario_are_told_apart(scripted_server):
    _, target = scripted_server
    await database_sync_to_async(scripted_profile)(slug="scripted")
    await database_sync_to_async(scripted_profile)(
        slug="broken", llm_model="ttft_ms=60;fail=1", greeting="Hello."
    )
    passing = job(
        "passing",
        "scripted",
        [
            {"transcript_contains": {"side": "agent", "text": ["what time", "never said"]}},
            {"transcript_contains": {"side": "caller", "text": "table for two"}},
            {"transcript_regex": {"side": "agent", "pattern": r"casa \w+"}},
            {"transcript_not_contains": {"side": "agent", "text": "sorry"}},
            {"end_reason": "caller_hangup"},
            {"turns": {"side": "caller", "min": 1, "max": 1}},
            {"voice_to_voice": {"p50_ms": 10000, "max_ms": 10000}},
            {"no_false_interruption": True},
            {"max_call_seconds": 60},
            {"llm_judge": "The agent is polite."},
        ],
    )
    failing = job(
        "failing",
        "scripted",
        [
            {"end_reason": "caller_hangup"},
            {"transcript_contains": {"side": "agent", "text": "pizza"}},
            {"turns": {"side": "agent", "max": 1}},
        ],
    )
    crashed = job("crashed", "broken", [{"end_reason": "caller_hangup"}])

    seen = []
    results = await run_batch(
        [passing, failing, crashed], target, parallel=3, on_result=seen.append
    )

    assert len(seen) == 3
    ok, bad, crash = results
    assert ok.status == "passed", (ok.error, [c for c in ok.checks if c.status != "passed"])
    assert ok.call_id and ok.call_duration_s and ok.call_duration_s > 1
    contains, judge, v2v = ok.checks[0], ok.checks[-1], ok.checks[6]
    assert "what time" in contains.message
    assert contains.evidence["text"].startswith("Of course")
    assert judge.status == "skipped" and "GROQ_API_KEY" in judge.message
    assert v2v.evidence["max_ms"] > 0

    assert bad.status == "failed"
    failed = bad.failed_checks
    assert [c.check.split()[0] for c in failed] == ["transcript_contains", "turns"]
    assert failed[0].message == "none of ['pizza'] in the agent transcript"
    assert any("Of course" in line for line in failed[0].evidence["transcript"])
    assert failed[1].message == "agent turns 2 > max 1"
    assert bad.checks[0].status == "passed"  # the end reason held

    assert crash.status == "error"
    assert crash.checks == []
    assert "ended in error" in crash.error and "scripted LLM failure" in crash.error

    root = ET.fromstring(junit_xml(results))
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites["scenarios.scripted"].get("tests") == "2"
    assert suites["scenarios.scripted"].get("failures") == "1"
    assert suites["scenarios.broken"].get("errors") == "1"
    failure = root.find(".//testcase[@name='failing']/failure")
    assert failure is not None and "pizza" in failure.get("message", "")
    assert root.find(".//testcase[@name='passing']/failure") is None
    assert root.find(".//testcase[@name='crashed']/error") is not None
