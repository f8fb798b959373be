"""Scenario documents: what is accepted, and every mistake refused at its path."""

from __future__ import annotations

import pytest

from scenarios.spec import Dtmf, OverAgent, Say, SpecError, WaitForAgent, parse_document, parse_spec

VALID = {
    "name": "Booking",
    "slug": "booking",
    "profile": "demo",
    "tags": ["offline"],
    "caller": {
        "script": [
            {"wait_for_agent": True},
            {"say": ["I would like a table", 1.2, "for two"]},
            {"backchannel": "mm-hmm"},
            {"say_over_agent": {"text": "Stop, wait.", "after_s": 0.8}},
            {"dtmf": "12#"},
            {"pause": 2},
            {"wait_for_end": {"timeout_s": 30}},
        ]
    },
    "assertions": [
        {"transcript_contains": "table"},
        {"end_reason": ["caller_hangup", "agent_hangup"]},
        {"turns": {"side": "caller", "min": 1}},
        {"voice_to_voice": {"p95_ms": 3000}},
    ],
}


def errors_of(document: dict) -> list[str]:
    with pytest.raises(SpecError) as raised:
        parse_document(document)
    return raised.value.errors


def test_it_parses_every_step_of_a_valid_scenario():
    spec = parse_document(VALID)
    assert spec.tags == ["offline"] and spec.channel == "twilio" and spec.line_noise_dbfs == -60
    assert spec.script[1] == Say(parts=["I would like a table", 1.2, "for two"])
    assert spec.script[2] == OverAgent(text="mm-hmm", after_s=1.0, backchannel=True)
    assert spec.script[3] == OverAgent(text="Stop, wait.", after_s=0.8, backchannel=False)
    assert spec.script[4] == Dtmf(digits="12#")
    assert spec.script[0] == WaitForAgent(timeout_s=30.0)
    assert [c.kind for c in spec.checks] == [
        "transcript_contains", "end_reason", "turns", "voice_to_voice",
    ]  # fmt: skip
    assert spec.checks[0].options == {"side": "any", "text": ["table"]}


def test_it_refuses_invalid_specs_with_specific_errors():
    document = {
        **VALID,
        "slug": "no spaces allowed",
        "channel": "fax",
        "voice": "alloy",
        "caller": {
            "script": [
                {"say": ""},
                {"dance": True},
                {"dtmf": "12x"},
                {"backchannel": {"text": "mm", "after_s": "soon"}},
                {"wait_for_agent": True, "say": "two keys"},
            ]
        },
        "assertions": [
            {"end_reason": "hung_up"},
            {"transcript_regex": {"side": "agent", "pattern": "("}},
            {"turns": {"side": "robot"}},
            {"voice_to_voice": {"p99_ms": 1}},
            {"extraction": {"field": "party_size", "equal": 2}},
        ],
    }
    errors = errors_of(document)
    expected = [
        "slug: must be letters, digits, - and _, got 'no spaces allowed'",
        "channel: unknown channel 'fax' (twilio, telnyx, browser)",
        "voice: must be joe (piper), espeak or espeak:<voice>, got 'alloy'",
        "caller.script[0].say: must be non-empty text, got ''",
        "caller.script[1]: unknown script 'dance' (say, pause, wait_for_agent, say_over_agent, "
        "backchannel, dtmf, hang_up, wait_for_end)",
        "caller.script[2].dtmf: digits must be 0-9, *, #, A-D, got '12x'",
        "caller.script[3].backchannel.after_s: must be a number, got 'soon'",
        "assertions[0].end_reason: unknown end reason 'hung_up'",
        "assertions[1].transcript_regex.pattern: not a valid regular expression",
        "assertions[2].turns.side: must be one of caller, agent, any, got 'robot'",
        "assertions[2].turns: needs at least one of min, max",
        "assertions[3].voice_to_voice.p99_ms: unknown key",
        "assertions[4].extraction.equal: unknown key",
    ]
    for line in expected:
        assert any(error.startswith(line) for error in errors), (line, errors)
    assert any(e.startswith("caller.script[4]: must be a mapping with one key") for e in errors)


@pytest.mark.parametrize("channel", ["twilio", "telnyx", "browser"])
def test_every_channel_is_accepted_with_a_script_that_fits_it(channel):
    script = [s for s in VALID["caller"]["script"] if "dtmf" not in s or channel != "browser"]
    spec = parse_document({**VALID, "channel": channel, "caller": {"script": script}})
    assert spec.channel == channel
    assert any(isinstance(step, Dtmf) for step in spec.script) == (channel != "browser")


def test_a_browser_scenario_with_key_presses_is_refused_at_each_of_them():
    document = {
        **VALID,
        "channel": "browser",
        "assertions": [{"end_reason": "caller_hangup"}, {"dtmf_received": "12#"}],
    }
    assert errors_of(document) == [
        "caller.script[4].dtmf: the browser channel has no keypad (DTMF)",
        "assertions[1].dtmf_received: the browser channel has no keypad",
    ]


def test_key_presses_are_fine_on_telnyx():
    document = {**VALID, "channel": "telnyx", "assertions": [{"dtmf_received": "12#"}]}
    assert parse_document(document).checks[0].options == {"digits": "12#"}


def test_a_persona_caller_is_parsed_and_its_mistakes_refused():
    spec = parse_document(
        {
            **VALID,
            "caller": {
                "persona": {
                    "goal": "Book a table for two on Saturday",
                    "facts": {"name": "Anna Lee", "party": 2},
                    "engine": "groq",
                    "max_turns": 4,
                }
            },
        }
    )
    assert spec.script == [] and spec.persona is not None
    assert spec.persona.facts == ["name: Anna Lee", "party: 2"] and spec.persona.max_turns == 4
    errors = errors_of(
        {**VALID, "caller": {"persona": {"goal": "", "max_turns": 0, "mood": "grumpy"}}}
    )
    assert any(
        e.startswith("caller.persona.mood: unknown key (expected one of goal") for e in errors
    )
    assert "caller.persona.goal: must be non-empty text, got ''" in errors
    assert "caller.persona.max_turns: must be a whole number from 1 to 30, got 0" in errors
    both = {"script": [{"hang_up": True}], "persona": {"goal": "x"}}
    assert "caller: a script or a persona, not both" in errors_of({**VALID, "caller": both})


def test_the_stored_spec_is_validated_without_the_model_fields():
    assert parse_spec({"caller": {"script": [{"hang_up": True}]}}).script
    with pytest.raises(SpecError, match="caller: must be a mapping"):
        parse_spec({"assertions": []})


def test_every_shipped_scenario_is_valid_and_tagged_offline_or_cloud():
    from scenarios.services import SHIPPED, yaml_documents

    files = sorted(SHIPPED.glob("*/*.yaml"))
    # The seeded demo profiles (seed_demo): the receptionists and their flow versions.
    assert {f.parent.name for f in files} == {"demo", "demo-es", "demo-flow", "demo-flow-es"}
    for path in files:
        for document in yaml_documents(path.read_text(), source=path.name):
            spec = parse_document(document)
            assert spec.profile == path.parent.name, path
            assert {"offline", "cloud"} & set(spec.tags), path
