"""Assertions on the stored call: each check gives passed, failed or skipped, a message that
says why, and the evidence (the turn that matched or the figure measured).

Pure functions of a :class:`StoredCall`: they are tested without a server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from scenarios.spec import Check
from scenarios.stored_call import StoredCall, StoredTurn

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
ROLES = {"caller": ("user",), "agent": ("assistant",), "any": ("user", "assistant")}


@dataclass(slots=True, kw_only=True)
class CheckResult:
    check: str  # the check's label
    status: str  # passed | failed | skipped
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Judge = Callable[[str, StoredCall], Awaitable[CheckResult]]


async def evaluate(
    checks: list[Check], call: StoredCall, *, judge: Judge | None
) -> list[CheckResult]:
    """Every check against ``call``; ``judge`` runs LLM-judge rubrics (None: skipped)."""
    results = []
    for check in checks:
        if check.kind == "llm_judge":
            if judge is None:
                results.append(
                    CheckResult(
                        check=check.label,
                        status=SKIPPED,
                        message="no cloud LLM key (GROQ_API_KEY) is set: the rubric was not judged",
                    )
                )
            else:
                result = await judge(check.options["rubric"], call)
                result.check = check.label
                results.append(result)
            continue
        status, message, evidence = _CHECKS[check.kind](check.options, call)
        results.append(
            CheckResult(check=check.label, status=status, message=message, evidence=evidence)
        )
    return results


Outcome = tuple[str, str, dict[str, Any]]


def _verdict(ok: bool, passed: str, failed: str, evidence: dict[str, Any]) -> Outcome:
    return (PASSED, passed, evidence) if ok else (FAILED, failed, evidence)


def _turns(call: StoredCall, side: str) -> list[StoredTurn]:
    return [t for t in call.turns if t.role in ROLES[side]]


def _quote(turn: StoredTurn) -> str:
    who = "caller" if turn.role == "user" else "agent"
    return f"turn {turn.sequence} ({who}): {turn.text!r}"


def _transcript(call: StoredCall, side: str) -> list[str]:
    return [_quote(t) for t in _turns(call, side)]


def _contains(options: dict[str, Any], call: StoredCall) -> Outcome:
    side, wanted = options["side"], options["text"]
    for turn in _turns(call, side):
        for text in wanted:
            if text.lower() in turn.text.lower():
                return (
                    PASSED,
                    f"{text!r} said in {_quote(turn)}",
                    {"turn": turn.sequence, "text": turn.text},
                )
    return (
        FAILED,
        f"none of {wanted!r} in the {side} transcript",
        {"transcript": _transcript(call, side)},
    )


def _not_contains(options: dict[str, Any], call: StoredCall) -> Outcome:
    side, unwanted = options["side"], options["text"]
    for turn in _turns(call, side):
        for text in unwanted:
            if text.lower() in turn.text.lower():
                return (
                    FAILED,
                    f"{text!r} said in {_quote(turn)}",
                    {"turn": turn.sequence, "text": turn.text},
                )
    return PASSED, f"none of {unwanted!r} in the {side} transcript", {}


def _regex(options: dict[str, Any], call: StoredCall) -> Outcome:
    pattern = re.compile(options["pattern"], re.IGNORECASE)
    for turn in _turns(call, options["side"]):
        if match := pattern.search(turn.text):
            return (
                PASSED,
                f"/{pattern.pattern}/ matched {match.group(0)!r} in {_quote(turn)}",
                {"turn": turn.sequence, "text": turn.text},
            )
    return (
        FAILED,
        f"/{pattern.pattern}/ matched no {options['side']} turn",
        {"transcript": _transcript(call, options["side"])},
    )


def _arguments_match(expected: dict[str, Any], actual: Any) -> bool:
    if not isinstance(actual, dict):
        return not expected
    for key, value in expected.items():
        got = actual.get(key)
        if isinstance(value, str) and isinstance(got, str):
            if value.lower() != got.lower():
                return False
        elif got != value:
            return False
    return True


def _tool_called(options: dict[str, Any], call: StoredCall) -> Outcome:
    calls = [t for t in call.turns if t.role == "tool" and t.tool_name]
    for turn in calls:
        if turn.tool_name == options["name"] and _arguments_match(
            options["arguments"], turn.tool_arguments
        ):
            return (
                PASSED,
                f"{turn.tool_name}({turn.tool_arguments}) in turn {turn.sequence}",
                {"turn": turn.sequence, "arguments": turn.tool_arguments},
            )
    made = [f"{t.tool_name}({t.tool_arguments})" for t in calls]
    expected = (
        f"{options['name']} with {options['arguments']}"
        if options["arguments"]
        else options["name"]
    )
    return FAILED, f"{expected} was not called (tool calls: {made or 'none'})", {"tool_calls": made}


def _extraction(options: dict[str, Any], call: StoredCall) -> Outcome:
    name = options["field"]
    if call.extraction is None:
        return FAILED, f"no extraction stored (status {call.extraction_status or 'none'})", {}
    value = call.extraction.get(name)
    evidence = {"field": name, "value": value}
    if "equals" in options:
        expected = options["equals"]
        same = (
            str(value).lower() == str(expected).lower()
            if isinstance(expected, str)
            else value == expected
        )
        return _verdict(
            same, f"{name} = {value!r}", f"{name} = {value!r}, expected {expected!r}", evidence
        )
    if "contains" in options:
        ok = options["contains"].lower() in str(value or "").lower()
        return _verdict(
            ok,
            f"{name} = {value!r}",
            f"{name} = {value!r} does not contain {options['contains']!r}",
            evidence,
        )
    present = value not in (None, "", [], {})
    return _verdict(
        present, f"{name} = {value!r}", f"{name} was not extracted ({value!r})", evidence
    )


def _end_reason(options: dict[str, Any], call: StoredCall) -> Outcome:
    ok = call.end_reason in options["any_of"]
    detail = f" ({call.error_detail[:200]})" if call.error_detail else ""
    expected = " or ".join(options["any_of"])
    return _verdict(
        ok,
        f"ended by {call.end_reason}",
        f"ended by {call.end_reason or 'nothing (still open)'}{detail}, expected {expected}",
        {"end_reason": call.end_reason},
    )


def _bounded(
    what: str, value: float | None, options: dict[str, Any], low: str, high: str, unit: str = ""
) -> Outcome:
    if value is None:
        return FAILED, f"{what}: no figure stored", {}
    evidence = {what: value}
    if low in options and value < options[low]:
        return FAILED, f"{what} {value:g}{unit} < min {options[low]:g}{unit}", evidence
    if high in options and value > options[high]:
        return FAILED, f"{what} {value:g}{unit} > max {options[high]:g}{unit}", evidence
    return PASSED, f"{what} {value:g}{unit}", evidence


def _turn_count(options: dict[str, Any], call: StoredCall) -> Outcome:
    side = options.get("side", "any")
    status, message, evidence = _bounded(
        f"{side} turns", len(_turns(call, side)), options, "min", "max"
    )
    if status == FAILED:
        evidence["transcript"] = _transcript(call, side)
    return status, message, evidence


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def _voice_to_voice(options: dict[str, Any], call: StoredCall) -> Outcome:
    figures = [
        (t.sequence, float(v))
        for t in call.turns
        if (v := t.metrics.get("voice_to_voice_ms")) is not None
    ]
    if not figures:
        return FAILED, "no turn has a voice-to-voice figure (did the agent answer?)", {}
    values = [v for _, v in figures]
    measured = {
        "p50_ms": nearest_rank(values, 50),
        "p95_ms": nearest_rank(values, 95),
        "max_ms": max(values),
    }
    evidence = {
        "turns_ms": {str(seq): round(v) for seq, v in figures},
        **{k: round(v) for k, v in measured.items()},
    }
    over = [
        f"{k} {measured[k]:.0f} ms > {budget:g} ms"
        for k, budget in options.items()
        if measured[k] > budget
    ]
    if over:
        slowest = max(figures, key=lambda f: f[1])
        return (
            FAILED,
            f"{', '.join(over)} (slowest: turn {slowest[0]}, {slowest[1]:.0f} ms)",
            evidence,
        )
    figures_text = ", ".join(f"{k} {measured[k]:.0f} ms" for k in options)
    return PASSED, f"{figures_text} within budget", evidence


def _interruptions(options: dict[str, Any], call: StoredCall) -> Outcome:
    count = call.metrics.get("interruptions")
    return _bounded("interruptions", count, options, "min", "max")


def _no_false_interruption(options: dict[str, Any], call: StoredCall) -> Outcome:
    cut = [t for t in call.turns if t.role == "assistant" and t.interrupted]
    count = call.metrics.get("interruptions") or 0
    if cut or count:
        evidence = {"interrupted": [_quote(t) for t in cut], "interruptions": count}
        where = f": {_quote(cut[0])}" if cut else ""
        return FAILED, f"the agent was interrupted {max(count, len(cut))} time(s){where}", evidence
    return PASSED, "the agent was never cut off", {"backchannels": call.metrics.get("backchannels")}


def _max_call_seconds(options: dict[str, Any], call: StoredCall) -> Outcome:
    return _bounded(
        "call seconds", call.duration_s, {"max": options["seconds"]}, "min", "max", " s"
    )


def _dtmf_received(options: dict[str, Any], call: StoredCall) -> Outcome:
    ok = options["digits"] in call.dtmf_digits
    return _verdict(
        ok,
        f"digits {call.dtmf_digits!r} received",
        f"digits {call.dtmf_digits!r} received, expected {options['digits']!r}",
        {"dtmf_digits": call.dtmf_digits},
    )


_CHECKS: dict[str, Callable[[dict[str, Any], StoredCall], Outcome]] = {
    "transcript_contains": _contains,
    "transcript_not_contains": _not_contains,
    "transcript_regex": _regex,
    "tool_called": _tool_called,
    "extraction": _extraction,
    "end_reason": _end_reason,
    "turns": _turn_count,
    "voice_to_voice": _voice_to_voice,
    "interruptions": _interruptions,
    "no_false_interruption": _no_false_interruption,
    "max_call_seconds": _max_call_seconds,
    "dtmf_received": _dtmf_received,
}
