"""What a scenario is, as data: the YAML document (and the admin's JSON) parsed into typed
steps and checks, with every mistake reported at its path.

One document is one scenario::

    name: Booking happy path          # model fields
    slug: booking-happy-path
    profile: demo
    tags: [offline]
    enabled: true
    channel: twilio                   # the rest is the stored ``spec`` (telnyx, browser)
    voice: joe
    line_noise_dbfs: -60
    timeout_s: 90
    caller:
      script:
        - wait_for_agent: true
        - say: I would like to book a table for two.
        - wait_for_agent: true
        - hang_up: true
    assertions:
      - transcript_contains: {side: agent, text: [table, book]}
      - end_reason: caller_hangup

docs/scenarios.md lists every step and check. Plain Python: the runner, the admin and the
management commands all parse through :func:`parse_document` / :func:`parse_spec`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.contracts import EndReason

# The document keys that are model fields; every other key is the stored spec.
MODEL_KEYS = ("name", "slug", "profile", "tags", "enabled")
SPEC_KEYS = (
    "description",
    "channel",
    "voice",
    "line_noise_dbfs",
    "timeout_s",
    "caller",
    "assertions",
)
SIDES = ("caller", "agent", "any")
CHANNELS = ("twilio", "telnyx", "browser")
KEYPADLESS = ("browser",)  # the simulator page has no keypad: its socket takes no DTMF
SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")
DTMF_DIGITS = re.compile(r"^[0-9*#A-Da-d]+$")


class SpecError(ValueError):
    """Everything wrong with a document, one line per mistake, each led by its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# --- caller steps -----------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Say:
    """Speak: text parts, with pauses (seconds) between parts inside the same line."""

    parts: list[str | float]

    @property
    def text(self) -> str:
        return " ".join(p for p in self.parts if isinstance(p, str))


@dataclass(slots=True, kw_only=True)
class Pause:
    seconds: float


@dataclass(slots=True, kw_only=True)
class WaitForAgent:
    """Line silence until the agent has spoken and gone quiet for ``quiet_s`` (or
    ``timeout_s``). The quiet is longer than a pause between two sentences of one answer,
    which a loaded local TTS can stretch past half a second."""

    timeout_s: float = 30.0
    quiet_s: float = 1.5


@dataclass(slots=True, kw_only=True)
class OverAgent:
    """Speak ``after_s`` after the agent's current utterance started: a barge-in, or (for a
    backchannel) a word the agent should talk through."""

    text: str
    after_s: float
    backchannel: bool = False


@dataclass(slots=True, kw_only=True)
class Dtmf:
    digits: str
    gap_s: float = 0.3


@dataclass(slots=True, kw_only=True)
class HangUp:
    pass


@dataclass(slots=True, kw_only=True)
class WaitForEnd:
    """Line silence until the server ends the call (agent hang-up, idle timeout...)."""

    timeout_s: float = 60.0


Step = Say | Pause | WaitForAgent | OverAgent | Dtmf | HangUp | WaitForEnd


@dataclass(slots=True, kw_only=True)
class Persona:
    """A caller played by an LLM engine of the profile list (scenarios/persona.py)."""

    goal: str
    facts: list[str] = field(default_factory=list)
    personality: str = ""
    engine: str = "local"
    model: str = ""
    max_turns: int = 6


@dataclass(slots=True, kw_only=True)
class Check:
    """One assertion: its kind (``transcript_contains``...) and its normalized options."""

    kind: str
    options: dict[str, Any]
    label: str  # how reports name it: ``transcript_contains agent ['table']``


@dataclass(slots=True, kw_only=True)
class ScenarioSpec:
    name: str
    slug: str
    profile: str
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    description: str = ""
    channel: str = "twilio"
    voice: str = ""  # "" = by the profile's language: piper (English) or espeak-ng
    line_noise_dbfs: float | None = -60.0
    timeout_s: float = 120.0
    script: list[Step] = field(default_factory=list)
    persona: Persona | None = None  # instead of a script
    checks: list[Check] = field(default_factory=list)


# --- parsing ----------------------------------------------------------------------------------


class _Errors:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")

    def number(
        self, path: str, value: Any, *, low: float | None = None, high: float | None = None
    ) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(path, f"must be a number, got {value!r}")
            return 0.0
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            self.add(path, f"must be {bounds}, got {value!r}")
        return float(value)

    def text(self, path: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            self.add(path, f"must be non-empty text, got {value!r}")
            return ""
        return value

    def texts(self, path: str, value: Any) -> list[str]:
        """A word or phrase, or a list of them (any of them matches)."""
        items = value if isinstance(value, list) else [value]
        if not items:
            self.add(path, "must list at least one text")
        return [
            self.text(f"{path}[{i}]" if isinstance(value, list) else path, v)
            for i, v in enumerate(items)
        ]

    def mapping(self, path: str, value: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping with {', '.join(allowed)}, got {value!r}")
            return {}
        for key in value:
            if key not in allowed:
                self.add(f"{path}.{key}", f"unknown key (expected one of {', '.join(allowed)})")
        return value


def parse_document(document: Any) -> ScenarioSpec:
    """A whole scenario (YAML document): model fields and spec. Raises :class:`SpecError`."""
    errors = _Errors()
    doc = errors.mapping("scenario", document, MODEL_KEYS + SPEC_KEYS)
    name = errors.text("name", doc.get("name"))
    slug = str(doc.get("slug") or "")
    if not SLUG.match(slug):
        errors.add("slug", f"must be letters, digits, - and _, got {doc.get('slug')!r}")
    profile = errors.text("profile", doc.get("profile"))
    tags = doc.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and SLUG.match(t) for t in tags):
        errors.add("tags", f"must be a list of words (letters, digits, - and _), got {tags!r}")
        tags = []
    enabled = doc.get("enabled", True)
    if not isinstance(enabled, bool):
        errors.add("enabled", f"must be true or false, got {enabled!r}")
    spec = _parse_spec_into(errors, {k: v for k, v in doc.items() if k in SPEC_KEYS})
    if errors.lines:
        raise SpecError(errors.lines)
    spec.name, spec.slug, spec.profile, spec.tags, spec.enabled = (
        name, slug, profile, list(tags), bool(enabled)
    )  # fmt: skip
    return spec


def parse_spec(spec: Any, **model_fields: Any) -> ScenarioSpec:
    """The stored spec (the JSON field) with the model's fields around it."""
    errors = _Errors()
    mapping = errors.mapping("spec", spec, SPEC_KEYS)
    parsed = _parse_spec_into(errors, mapping)
    if errors.lines:
        raise SpecError(errors.lines)
    for key, value in model_fields.items():
        setattr(parsed, key, value)
    return parsed


def split_document(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model fields, spec) of a parsed-clean document."""
    return (
        {k: document[k] for k in MODEL_KEYS if k in document},
        {k: document[k] for k in SPEC_KEYS if k in document},
    )


def _parse_spec_into(errors: _Errors, spec: dict[str, Any]) -> ScenarioSpec:
    parsed = ScenarioSpec(name="", slug="", profile="")
    parsed.description = str(spec.get("description", ""))
    channel = spec.get("channel", "twilio")
    if channel not in CHANNELS:
        errors.add("channel", f"unknown channel {channel!r} ({', '.join(CHANNELS)})")
    parsed.channel = str(channel)
    voice = spec.get("voice", "")
    if not isinstance(voice, str) or not (voice in ("", "joe") or voice.startswith("espeak")):
        errors.add("voice", f"must be joe (piper), espeak or espeak:<voice>, got {voice!r}")
    parsed.voice = voice if isinstance(voice, str) else ""
    noise = spec.get("line_noise_dbfs", -60.0)
    parsed.line_noise_dbfs = (
        None if noise is None else errors.number("line_noise_dbfs", noise, low=-100, high=-10)
    )
    parsed.timeout_s = errors.number("timeout_s", spec.get("timeout_s", 120), low=5, high=1800)
    caller = errors.mapping("caller", spec.get("caller"), ("script", "persona"))
    if "persona" in caller and "script" in caller:
        errors.add("caller", "a script or a persona, not both")
    elif "persona" in caller:
        parsed.persona = _persona(errors, "caller.persona", caller["persona"])
    elif "script" not in caller and isinstance(spec.get("caller"), dict):
        errors.add("caller", "needs a script (a list of steps) or a persona")
    script = caller.get("script", [])
    if not isinstance(script, list) or ("script" in caller and not script):
        errors.add("caller.script", "must be a non-empty list of steps")
        script = []
    steps = [(i, _parse_step(errors, f"caller.script[{i}]", raw)) for i, raw in enumerate(script)]
    parsed.script = [step for _, step in steps if step is not None]
    for i, step in steps:
        if isinstance(step, Dtmf) and channel in KEYPADLESS:
            errors.add(f"caller.script[{i}].dtmf", f"the {channel} channel has no keypad (DTMF)")
    assertions = spec.get("assertions", [])
    if not isinstance(assertions, list):
        errors.add("assertions", "must be a list")
        assertions = []
    checks = [(i, _parse_check(errors, f"assertions[{i}]", r)) for i, r in enumerate(assertions)]
    parsed.checks = [check for _, check in checks if check is not None]
    for i, check in checks:
        if check is not None and check.kind == "dtmf_received" and channel in KEYPADLESS:
            errors.add(f"assertions[{i}].dtmf_received", f"the {channel} channel has no keypad")
    return parsed


def _persona(errors: _Errors, path: str, value: Any) -> Persona:
    keys = ("goal", "facts", "personality", "engine", "model", "max_turns")
    opts = errors.mapping(path, value, keys)
    facts = opts.get("facts", [])
    if isinstance(facts, dict):  # {name: Anna Lee, party: 2} reads as "name: Anna Lee"
        facts = [f"{k}: {v}" for k, v in facts.items()]
    if not isinstance(facts, list) or not all(isinstance(f, str | int | float) for f in facts):
        errors.add(f"{path}.facts", f"must be a list or a mapping of facts, got {facts!r}")
        facts = []
    turns = opts.get("max_turns", 6)
    if isinstance(turns, bool) or not isinstance(turns, int) or not 1 <= turns <= 30:
        errors.add(f"{path}.max_turns", f"must be a whole number from 1 to 30, got {turns!r}")
        turns = 6
    engine = opts.get("engine", "local")
    if not isinstance(engine, str) or not SLUG.match(engine):
        errors.add(
            f"{path}.engine", f"must be an engine name (local, groq, openai), got {engine!r}"
        )
        engine = "local"
    return Persona(
        goal=errors.text(f"{path}.goal", opts.get("goal")),
        facts=[str(f) for f in facts],
        personality=str(opts.get("personality", "")),
        engine=engine,
        model=str(opts.get("model", "")),
        max_turns=turns,
    )


def _one_key(errors: _Errors, path: str, raw: Any, known: dict[str, Any]) -> tuple[str, Any] | None:
    if not isinstance(raw, dict) or len(raw) != 1:
        errors.add(path, f"must be a mapping with one key ({', '.join(known)}), got {raw!r}")
        return None
    key, value = next(iter(raw.items()))
    if key not in known:
        errors.add(
            path, f"unknown {path.split('[')[0].split('.')[-1]} {key!r} ({', '.join(known)})"
        )
        return None
    return key, value


def _timeout(errors: _Errors, path: str, value: Any, default: float) -> float:
    if value is True:
        return default
    if isinstance(value, dict):
        opts = errors.mapping(path, value, ("timeout_s",))
        return errors.number(f"{path}.timeout_s", opts.get("timeout_s", default), low=0.1)
    return errors.number(path, value, low=0.1)


def _wait_for_agent(errors: _Errors, path: str, value: Any) -> WaitForAgent:
    if isinstance(value, dict):
        opts = errors.mapping(path, value, ("timeout_s", "quiet_s"))
        return WaitForAgent(
            timeout_s=errors.number(f"{path}.timeout_s", opts.get("timeout_s", 30.0), low=0.1),
            quiet_s=errors.number(f"{path}.quiet_s", opts.get("quiet_s", 1.5), low=0.1, high=30),
        )
    return WaitForAgent(timeout_s=_timeout(errors, path, value, 30.0))


def _say(errors: _Errors, path: str, value: Any) -> Say:
    parts = value if isinstance(value, list) else [value]
    out: list[str | float] = []
    for i, part in enumerate(parts):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if isinstance(part, str):
            out.append(errors.text(where, part))
        else:
            out.append(errors.number(where, part, low=0, high=30))
    if not any(isinstance(p, str) for p in out):
        errors.add(path, "must say some text (pauses are numbers between text parts)")
    return Say(parts=out)


def _over(errors: _Errors, path: str, value: Any, *, backchannel: bool) -> OverAgent:
    if isinstance(value, str) and backchannel:
        return OverAgent(text=errors.text(path, value), after_s=1.0, backchannel=True)
    opts = errors.mapping(path, value, ("text", "after_s"))
    after = errors.number(f"{path}.after_s", opts.get("after_s", 1.0), low=0, high=60)
    return OverAgent(
        text=errors.text(f"{path}.text", opts.get("text")), after_s=after, backchannel=backchannel
    )


def _dtmf(errors: _Errors, path: str, value: Any) -> Dtmf:
    opts = value if isinstance(value, dict) else {"digits": value}
    opts = errors.mapping(path, opts, ("digits", "gap_s"))
    digits = str(opts.get("digits", "")) if isinstance(opts.get("digits"), str | int) else ""
    if not DTMF_DIGITS.match(digits):
        errors.add(path, f"digits must be 0-9, *, #, A-D, got {opts.get('digits')!r}")
    return Dtmf(
        digits=digits,
        gap_s=errors.number(f"{path}.gap_s", opts.get("gap_s", 0.3), low=0.05, high=5),
    )


def _hang_up(errors: _Errors, path: str, value: Any) -> HangUp:
    if value is not True:
        errors.add(path, f"must be true, got {value!r}")
    return HangUp()


_STEPS: dict[str, Callable[[_Errors, str, Any], Step]] = {
    "say": _say,
    "pause": lambda e, p, v: Pause(seconds=e.number(p, v, low=0, high=600)),
    "wait_for_agent": _wait_for_agent,
    "say_over_agent": lambda e, p, v: _over(e, p, v, backchannel=False),
    "backchannel": lambda e, p, v: _over(e, p, v, backchannel=True),
    "dtmf": _dtmf,
    "hang_up": _hang_up,
    "wait_for_end": lambda e, p, v: WaitForEnd(timeout_s=_timeout(e, p, v, 60.0)),
}


def _parse_step(errors: _Errors, path: str, raw: Any) -> Step | None:
    picked = _one_key(errors, path, raw, _STEPS)
    return None if picked is None else _STEPS[picked[0]](errors, f"{path}.{picked[0]}", picked[1])


# --- assertions -------------------------------------------------------------------------------


def _side(errors: _Errors, path: str, opts: dict[str, Any]) -> str:
    side = opts.get("side", "any")
    if side not in SIDES:
        errors.add(f"{path}.side", f"must be one of {', '.join(SIDES)}, got {side!r}")
    return str(side)


def _transcript(errors: _Errors, path: str, value: Any) -> dict[str, Any]:
    opts = {"text": value} if isinstance(value, str | list) else value
    opts = errors.mapping(path, opts, ("side", "text"))
    return {
        "side": _side(errors, path, opts),
        "text": errors.texts(f"{path}.text", opts.get("text")),
    }


def _regex(errors: _Errors, path: str, value: Any) -> dict[str, Any]:
    opts = {"pattern": value} if isinstance(value, str) else value
    opts = errors.mapping(path, opts, ("side", "pattern"))
    pattern = errors.text(f"{path}.pattern", opts.get("pattern"))
    try:
        re.compile(pattern)
    except re.error as exc:
        errors.add(f"{path}.pattern", f"not a valid regular expression: {exc}")
    return {"side": _side(errors, path, opts), "pattern": pattern}


def _tool(errors: _Errors, path: str, value: Any) -> dict[str, Any]:
    opts = {"name": value} if isinstance(value, str) else value
    opts = errors.mapping(path, opts, ("name", "arguments"))
    arguments = opts.get("arguments", {})
    if not isinstance(arguments, dict):
        errors.add(
            f"{path}.arguments", f"must be a mapping of expected arguments, got {arguments!r}"
        )
    return {"name": errors.text(f"{path}.name", opts.get("name")), "arguments": arguments}


def _extraction(errors: _Errors, path: str, value: Any) -> dict[str, Any]:
    opts = {"field": value} if isinstance(value, str) else value
    opts = errors.mapping(path, opts, ("field", "equals", "contains"))
    out = {"field": errors.text(f"{path}.field", opts.get("field"))}
    if "equals" in opts:
        out["equals"] = opts["equals"]
    if "contains" in opts:
        out["contains"] = errors.text(f"{path}.contains", opts["contains"])
    return out


def _end_reason(errors: _Errors, path: str, value: Any) -> dict[str, Any]:
    reasons = value if isinstance(value, list) else [value]
    known = {r.value for r in EndReason}
    for reason in reasons:
        if reason not in known:
            errors.add(path, f"unknown end reason {reason!r} ({', '.join(sorted(known))})")
    return {"any_of": list(reasons)}


def _bounds(errors: _Errors, path: str, value: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    opts = errors.mapping(path, value, keys)
    out: dict[str, Any] = {}
    for key in keys:
        if key in opts and key != "side":
            out[key] = errors.number(f"{path}.{key}", opts[key], low=0)
    if not out:
        errors.add(path, f"needs at least one of {', '.join(k for k in keys if k != 'side')}")
    if "side" in keys:
        out["side"] = _side(errors, path, opts)
    return out


def _flag(errors: _Errors, path: str, value: Any) -> dict[str, Any]:
    if value is not True:
        errors.add(path, f"must be true, got {value!r}")
    return {}


def _dtmf_received(errors: _Errors, path: str, value: Any) -> dict[str, Any]:
    digits = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not DTMF_DIGITS.match(digits):
        errors.add(path, f"must be the digits the call should have received, got {value!r}")
    return {"digits": digits}


def _judge(errors: _Errors, path: str, value: Any) -> dict[str, Any]:
    opts = {"rubric": value} if isinstance(value, str) else value
    opts = errors.mapping(path, opts, ("rubric",))
    return {"rubric": errors.text(f"{path}.rubric", opts.get("rubric"))}


_CHECKS: dict[str, Callable[[_Errors, str, Any], dict[str, Any]]] = {
    "transcript_contains": _transcript,
    "transcript_not_contains": _transcript,
    "transcript_regex": _regex,
    "tool_called": _tool,
    "extraction": _extraction,
    "end_reason": _end_reason,
    "turns": lambda e, p, v: _bounds(e, p, v, ("side", "min", "max")),
    "voice_to_voice": lambda e, p, v: _bounds(e, p, v, ("p50_ms", "p95_ms", "max_ms")),
    "interruptions": lambda e, p, v: _bounds(e, p, v, ("min", "max")),
    "no_false_interruption": _flag,
    "max_call_seconds": lambda e, p, v: {"seconds": e.number(p, v, low=0)},
    "dtmf_received": _dtmf_received,
    "llm_judge": _judge,
}


def _parse_check(errors: _Errors, path: str, raw: Any) -> Check | None:
    picked = _one_key(errors, path, raw, _CHECKS)
    if picked is None:
        return None
    kind, value = picked
    options = _CHECKS[kind](errors, f"{path}.{kind}", value)
    return Check(kind=kind, options=options, label=_label(kind, options))


def _label(kind: str, options: dict[str, Any]) -> str:
    """How reports name a check: ``turns side=agent min=2``, ``end_reason caller_hangup``."""
    shown = []
    for key, value in options.items():
        if key == "side" and value == "any":
            continue
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        shown.append(f"{value!r}" if key in ("text", "pattern", "rubric") else f"{key}={value}")
        if key in ("any_of", "digits", "seconds", "field"):
            shown[-1] = str(value)
    return " ".join([kind, *shown])
