"""The runner against the real server (daphne, Twilio's wire, the session, the recorder,
the database) with the scripted engines: fast and deterministic words, real audio paths."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command
from django.urls import reverse

from scenarios.junit import junit_xml
from scenarios.models import ScenarioResult
from scenarios.runner import Job, run_batch
from scenarios.services import scenario_import, yaml_documents
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


PASS_YAML = """\
name: Table for two
slug: table-for-two
profile: scripted
voice: espeak
caller:
  script:
    - wait_for_agent: true
    - say: A table for two, please.
    - wait_for_agent: true
assertions:
  - transcript_contains: {side: agent, text: what time}
  - end_reason: caller_hangup
"""
FAIL_YAML = PASS_YAML.replace("table-for-two", "wants-pizza").replace("what time", "pizza")


def test_the_command_prints_a_table_writes_junit_and_exits_non_zero_on_a_failure(
    scripted_server, settings, tmp_path
):
    server, target = scripted_server
    settings.TWILIO_AUTH_TOKEN, settings.PUBLIC_BASE_URL = target.auth_token, server.base
    scripted_profile(slug="scripted")
    scenario_import(documents=yaml_documents(PASS_YAML + "---\n" + FAIL_YAML))
    out, junit = io.StringIO(), tmp_path / "scenarios.xml"

    with pytest.raises(CommandError) as raised:
        call_command(
            "run_scenarios", "--profile", "scripted", "--base-url", server.base,
            "--parallel", "2", "--junit", str(junit), stdout=out,
        )  # fmt: skip

    assert raised.value.returncode == 1
    text = out.getvalue()
    print(text)  # the example table of docs/scenarios.md
    assert "2/2 " in text and "scenario" in text and "status" in text
    assert "scripted/table-for-two" in text and "scripted/wants-pizza" in text
    assert "1 passed, 1 failed" in text
    assert "FAILED transcript_contains side=agent 'pizza': none of ['pizza'] in the agent" in text
    root = ET.parse(junit).getroot()
    assert root.find(".//testcase[@name='wants-pizza']/failure") is not None
    results = {r.scenario.slug: r for r in ScenarioResult.objects.select_related("scenario")}
    assert results["table-for-two"].status == "passed"
    assert results["wants-pizza"].status == "failed" and results["wants-pizza"].call_id


def test_the_admin_action_runs_the_scenario_through_celery_and_keeps_the_result(
    scripted_server, settings, staff_client
):
    server, target = scripted_server
    settings.TWILIO_AUTH_TOKEN, settings.PUBLIC_BASE_URL = target.auth_token, server.base
    scripted_profile(slug="scripted")
    (scenario,) = scenario_import(documents=yaml_documents(PASS_YAML))

    response = staff_client.post(
        reverse("admin:scenarios_scenario_changelist"),
        {"action": "run_selected", "_selected_action": [scenario.pk]},
        follow=True,
    )

    assert b"1 scenario(s) queued to run against" in response.content
    result = ScenarioResult.objects.get()  # the eager task ran it on commit
    assert result.status == "passed", (result.error, result.checks)
    assert result.scenario == scenario and result.call is not None
    page = staff_client.get(reverse("admin:scenarios_scenarioresult_changelist"))
    assert reverse("admin:calls_call_change", args=[result.call_id]).encode() in page.content


async def test_a_persona_caller_says_its_lines_until_it_hangs_up(scripted_server):
    _, target = scripted_server
    await database_sync_to_async(scripted_profile)(slug="scripted")
    persona = {
        "goal": "Book a table for two.",
        "facts": {"name": "Anna Lee"},
        # The persona's LLM, scripted: one line, then it hangs up.
        "engine": "scripted",
        "model": "ttft_ms=20;tokens_per_s=500;replies=A table for two, please.||[HANG UP]",
    }
    spec = parse_document(
        {
            "name": "Persona",
            "slug": "persona",
            "profile": "scripted",
            "voice": "espeak",
            "timeout_s": 60,
            "caller": {"persona": persona},
            "assertions": [
                {"turns": {"side": "caller", "min": 1, "max": 1}},
                {"transcript_contains": {"side": "agent", "text": "what time"}},
                {"end_reason": "caller_hangup"},
            ],
        }
    )

    (result,) = await run_batch([Job(spec=spec, language="en-US")], target)

    assert result.status == "passed", (result.error, result.checks, result.notes)


async def test_a_call_the_server_ends_as_busy_is_placed_again_and_said_so(scripted_server):
    _, target = scripted_server
    # The STT answers as a local model whose queue is full: the server's overload ending.
    await database_sync_to_async(scripted_profile)(
        slug="overloaded", stt_model="delay_ms=30;overloaded=1"
    )
    busy = job("busy", "overloaded", [{"end_reason": "caller_hangup"}])

    (result,) = await run_batch([busy], target, busy_retries=1)

    assert result.status == "error" and result.busy
    assert "busy" in result.error and "run fewer scenarios in parallel" in result.error
    assert len(result.notes) >= 1 and result.notes[0].startswith("attempt 1 ended busy")
