"""How a call reads on its review page: turns, latency, turn-taking and audio health in words.

Pure functions of stored data (a call, its turns, their metrics): the call admin
(``calls/admin/call.py``) puts them on the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from calls.admin.tools import tool_status_badge
from calls.models import Call, CallStatus, Turn

STATUS_COLORS = {
    CallStatus.RINGING: "#b58900",
    CallStatus.ACTIVE: "#2aa198",
    CallStatus.ENDED: "#586e75",
    CallStatus.FAILED: "#dc322f",
}


# Why a caller's turn was taken as finished (TurnMetrics.eot_reason): label, explanation.
EOT_REASONS = {
    "model": ("model", "The turn model judged the turn complete."),
    "words": (
        "words",
        "The last words sounded unfinished (“…for”, “um”): the agent waited for more.",
    ),
    "transcript": (
        "finished words",
        "The turn model was unsure; the words looked finished, so the agent answered after 1 s.",
    ),
    "max_silence": (
        "longest wait",
        "The turn seemed unfinished; the agent answered after the longest wait.",
    ),
    "silence_timer": ("silence timer", "The silence timer ended the turn (silence mode)."),
    "no_model": ("no model", "The turn model was unavailable; a fallback silence ended the turn."),
    "dtmf": ("keypad", "A keypad digit ended the turn."),
}


def end_of_turn_label(metrics: dict | None) -> str:
    """``model 0.93 · 270 ms``: how and how fast the caller's turn was taken as finished."""
    m = metrics or {}
    reason, score = m.get("eot_reason"), m.get("eot_score")
    wait = m.get("eot_wait_ms")
    if wait is None:
        wait = m.get("endpointing_ms")
    if reason is None and score is None and wait is None:
        return ""
    label, explanation = EOT_REASONS.get(str(reason), (str(reason or ""), ""))
    parts = []
    if score is None:
        parts.append(label)
    elif reason == "model":
        parts.append(f"{label} {float(score):.2f}")
    else:  # another reason decided: the model's opinion is context, not the cause
        parts.append(f"{label} (model {float(score):.2f})".strip())
    if score is not None:
        explanation = f"{explanation} Turn model score {float(score):.2f}.".strip()
    if wait is not None:
        parts.append(f"{float(wait):.0f} ms")
        explanation = f"{explanation} Decided {float(wait):.0f} ms after the caller stopped."
    text = " · ".join(part for part in parts if part)
    return format_html('<span title="{}">{}</span>', explanation.strip(), text)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def latency_chart_svg(values: list[float], *, slow_ms: float | None = None) -> SafeString:
    """Voice-to-voice per reply as an inline SVG bar chart (no JS, no CDN): a millisecond
    axis from 0, the reply number under each bar, and the "slow" threshold as a dashed line
    (bars above it in red)."""
    if not values:
        return mark_safe("<p>No answered turns yet.</p>")
    width, height = 360, 150
    left, bottom, top_pad = 54, 18, 12  # room for the axis labels
    plot_w, plot_h = width - left - 4, height - bottom - top_pad
    top = max([*values, slow_ms or 0.0]) * 1.1 or 1.0
    step = plot_w / len(values)
    bar = max(2.0, min(36.0, step * 0.7))

    def y(ms: float) -> float:
        return top_pad + plot_h * (1 - ms / top)

    parts = [
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="currentColor" stroke-opacity=".4"/>',
            left, y(0), width - 4, y(0),
        ),
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="currentColor" stroke-opacity=".4"/>',
            left, top_pad, left, y(0),
        ),
    ]  # fmt: skip
    for tick in (0.0, top / 2, top / 1.1):
        parts.append(
            format_html(
                '<text x="{}" y="{}" font-size="10" text-anchor="end">{} ms</text>',
                left - 4, f"{y(tick) + 3:.1f}", f"{tick:.0f}",
            )
        )  # fmt: skip
    if slow_ms:
        parts.append(
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#dc322f" stroke-dasharray="4 3">'
                "<title>slow: over {} ms</title></line>",
                left, f"{y(slow_ms):.1f}", width - 4, f"{y(slow_ms):.1f}", f"{slow_ms:.0f}",
            )
        )  # fmt: skip
    label_every = max(1, round(len(values) / 12))
    for i, v in enumerate(values):
        x = left + i * step + (step - bar) / 2
        color = "#dc322f" if slow_ms and v > slow_ms else "#268bd2"
        parts.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                "<title>reply {}: {} ms</title></rect>",
                f"{x:.1f}", f"{y(v):.1f}", f"{bar:.1f}", f"{max(1.0, y(0) - y(v)):.1f}", color,
                i + 1, round(v),
            )
        )  # fmt: skip
        if i % label_every == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>',
                    f"{x + bar / 2:.1f}", height - 4, i + 1,
                )
            )  # fmt: skip
    return format_html(
        '<svg role="img" aria-label="voice-to-voice latency per reply" width="{}" height="{}" '
        'viewBox="0 0 {} {}" class="latency-chart">{}</svg>',
        width, height, width, height, mark_safe("".join(parts)),
    )  # fmt: skip


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def turn_taking_summary(metrics: dict | None) -> SafeString:
    """The call's end-of-turn speed and what its overlaps turned out to be (CallStats.summary):
    backchannels let the agent resume, interruptions cancelled its reply."""
    m = metrics or {}
    lines = []
    speed = [
        f"{label} p50 {_ms(m[key])}"
        for key, label in (
            ("endpointing_p50_ms", "End of turn"),
            ("voice_to_voice_p50_ms", "Voice-to-voice"),
        )
        if m.get(key) is not None
    ]
    if speed:
        lines.append(" · ".join(speed))
    backchannels, interruptions = m.get("backchannels"), m.get("interruptions")
    if m.get("overlaps") is not None or backchannels is not None:
        parts = []
        if backchannels is not None:
            parts.append(
                _count(int(backchannels), "backchannel", "backchannels") + " (agent resumed)"
            )
        if interruptions is not None:
            parts.append(_count(int(interruptions), "interruption", "interruptions"))
        overlaps = m.get("overlaps")
        head = "Caller spoke over the agent" + ("" if overlaps is None else f" {int(overlaps)}×")
        lines.append(f"{head}: " + ", ".join(parts) if parts else head)
    elif interruptions is not None:  # calls recorded before overlaps were told apart
        lines.append(_count(int(interruptions), "interruption", "interruptions"))
    if not lines:
        return mark_safe("<p>–</p>")
    return format_html_join("", '<p style="margin:0 0 .3em">{}</p>', ((line,) for line in lines))


def audio_health_summary(metrics: dict | None) -> SafeString:
    """The call's audio-health figures (orchestrator/audio_health.py) in words; a badge
    when the audio stuttered. docs/operations.md explains each one."""
    h = (metrics or {}).get("audio_health")
    if not isinstance(h, dict):
        return mark_safe("<p>– (not measured)</p>")
    late, gaps = int(h.get("late_frames") or 0), int(h.get("inbound_gaps") or 0)
    lines = [
        f"Agent: {_count(late, 'late frame', 'late frames')}, "
        f"longest gap within a sentence {_ms(h.get('max_agent_gap_ms'))}",
        f"Caller: jitter p95 {_ms(h.get('inbound_jitter_p95_ms'))}, "
        f"max {_ms(h.get('inbound_jitter_max_ms'))}; "
        f"{_count(gaps, 'gap', 'gaps')} (> 100 ms), "
        f"{_ms(h.get('inbound_missing_ms'))} missing",
        f"Server: event-loop lag p99 {_ms(h.get('loop_lag_p99_ms'))}",
    ]
    ok = late == 0 and gaps == 0
    badge = format_html(
        '<span style="background:{};color:#fff;padding:1px 8px;border-radius:8px">{}</span>',
        "#2aa198" if ok else "#dc322f",
        "clean" if ok else "stuttered",
    )
    return format_html(
        '<p style="margin:0 0 .3em">{}</p>{}',
        badge,
        format_html_join("", '<p style="margin:0 0 .3em">{}</p>', ((line,) for line in lines)),
    )


# --- The review page: a call's turns as a chat, with latency waterfalls -----------------------

# The stages of a reply's voice-to-voice latency, in the order the caller waits through them
# (orchestrator/reply.py measures each): key, label, what it is.
WATERFALL_STAGES = (
    ("endpointing", "end of turn", "The caller stopped; the pause and the turn model decided."),
    ("stt", "STT", "Transcribing the caller's turn, from the decision."),
    ("held", "held", "The words sounded unfinished: the agent waited for more."),
    ("llm_ttft", "LLM first token", "The LLM request until its first token."),
    ("first_sentence", "first sentence", "First token until the first whole sentence."),
    ("tts_ttfb", "TTS first byte", "The first sentence sent to TTS until its first audio."),
    ("send", "first frame sent", "Until the first frame went out: framing, pacing, any tool."),
)  # fmt: skip


@dataclass(slots=True, kw_only=True)
class Stage:
    key: str
    label: str
    help: str
    ms: float


@dataclass(slots=True, kw_only=True)
class TurnView:
    """One turn as the review page shows it."""

    turn: Turn
    role: str  # user | assistant | tool
    who: str  # Caller, Agent, Greeting, Tool
    offset_s: float  # from the call's start (the recording's time)
    end_s: float
    waterfall: list[Stage] = field(default_factory=list)
    voice_to_voice_ms: float | None = None
    waterfall_pct: float = 0.0  # the bar's width against the call's slowest reply
    end_of_turn: str = ""
    engines: str = ""
    tool_arguments: str = ""
    tool_result: str = ""
    tool_badge: SafeString | str = ""

    @property
    def offset(self) -> str:
        return clock(self.offset_s)

    @property
    def waterfall_text(self) -> str:
        return " + ".join(f"{s.label} {s.ms:.0f}" for s in self.waterfall)


def clock(seconds: float) -> str:
    """``m:ss`` from the call's start (``h:mm:ss`` past an hour)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def latency_waterfall(metrics: dict[str, Any] | None) -> list[Stage]:
    """A reply's voice-to-voice split into the stages the caller waited through.

    Measured stages as stored; the last one, "first frame sent", is what voice-to-voice
    leaves after them, so the stages add up to it. Turns stored before the first sentence
    was measured fold it into that last stage ("first sentence + send")."""
    m = metrics or {}
    v2v = _number(m, "voice_to_voice_ms")
    if v2v is None:  # not a reply to the caller (greeting, reprompt): nothing to split
        return []
    endpointing, stt = _number(m, "endpointing_ms"), _number(m, "stt_ms")
    ttft, sentence = _number(m, "llm_ttft_ms"), _number(m, "llm_first_sentence_ms")
    values: dict[str, float | None] = {
        "endpointing": endpointing,
        "stt": stt,
        "held": None,
        "llm_ttft": ttft,
        "first_sentence": None if sentence is None or ttft is None else sentence - ttft,
        "tts_ttfb": _number(m, "tts_ttfb_ms"),
    }
    wait = _number(m, "eot_wait_ms")
    if m.get("eot_reason") == "words" and wait is not None:
        # The hold is measured from the caller's pause, after endpointing and STT ran.
        values["held"] = wait - (endpointing or 0.0) - (stt or 0.0)
    stages = []
    for key, label, help_text in WATERFALL_STAGES:
        value = values.get(key)
        if key == "send":
            value = v2v - sum(s.ms for s in stages)
            if sentence is None and ttft is not None:
                label, help_text = (
                    "first sentence + send",
                    help_text + " Includes the first sentence.",
                )
        if value is None or value < 0.5:
            continue
        stages.append(Stage(key=key, label=label, help=help_text, ms=float(value)))
    return stages


def _json_text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(
        value if value is not None else {}, ensure_ascii=False, separators=(", ", ": ")
    )


def _engines_text(metrics: dict[str, Any]) -> str:
    engines = metrics.get("engines") or {}
    text = " · ".join(f"{role.upper()} {name}" for role, name in engines.items())
    if metrics.get("fallbacks"):
        text += " (fallback: " + "; ".join(map(str, metrics["fallbacks"])) + ")"
    return text


def turn_views(*, call: Call, turns: list[Turn]) -> list[TurnView]:
    """The call's turns in order, with offsets, waterfalls scaled to the slowest reply, and
    tool cards. The first agent turn before the caller spoke is the greeting."""
    views: list[TurnView] = []
    caller_spoke = False
    for turn in turns:
        m = turn.metrics if isinstance(turn.metrics, dict) else {}
        view = TurnView(
            turn=turn,
            role=turn.role,
            who={"user": "Caller", "assistant": "Agent", "tool": "Tool"}.get(turn.role, turn.role),
            offset_s=(turn.started_at - call.started_at).total_seconds(),
            end_s=(turn.ended_at - call.started_at).total_seconds(),
        )
        if turn.role == "user":
            caller_spoke = True
        elif turn.role == "assistant":
            if not caller_spoke and not views:
                view.who = "Greeting"
            view.voice_to_voice_ms = _number(m, "voice_to_voice_ms")
            view.waterfall = latency_waterfall(m)
            view.end_of_turn = end_of_turn_label(m)
            view.engines = _engines_text(m)
        elif turn.role == "tool":
            view.tool_arguments = _json_text(turn.tool_arguments)
            view.tool_result = turn.tool_result or turn.text
            view.tool_badge = tool_status_badge(turn.tool_status)
        views.append(view)
    slowest = max((sum(s.ms for s in v.waterfall) for v in views), default=0.0)
    for view in views:
        if slowest and view.waterfall:
            view.waterfall_pct = round(100.0 * sum(s.ms for s in view.waterfall) / slowest, 1)
    return views


def greeting_first_audio(*, call: Call, views: list[TurnView]) -> dict[str, float | None] | None:
    """The greeting's time to first audio from the call's start, and its TTS first byte."""
    greeting = next((v for v in views if v.who == "Greeting"), None)
    if greeting is None:
        return None
    m = greeting.turn.metrics if isinstance(greeting.turn.metrics, dict) else {}
    return {"first_audio_ms": greeting.offset_s * 1000.0, "tts_ttfb_ms": _number(m, "tts_ttfb_ms")}


def engines_used(*, call: Call, turns: list[Turn]) -> list[dict[str, str]]:
    """Per role: the chain the call was configured with and the engines that served turns."""
    snapshot = call.config_snapshot if isinstance(call.config_snapshot, dict) else {}
    rows = []
    for role in ("stt", "llm", "tts"):
        chain = snapshot.get(role) or []
        configured = " → ".join(
            "/".join(str(part) for part in (spec.get("engine"), spec.get("model")) if part)
            for spec in chain
            if isinstance(spec, dict)
        )
        served: dict[str, int] = {}
        fallbacks = 0
        for turn in turns:
            m = turn.metrics if isinstance(turn.metrics, dict) else {}
            name = (m.get("engines") or {}).get(role)
            if name:
                served[name] = served.get(name, 0) + 1
            fallbacks += sum(1 for f in m.get("fallbacks") or () if str(f).startswith(f"{role}:"))
        rows.append(
            {
                "role": role.upper(),
                "configured": configured or "–",
                "served": ", ".join(
                    f"{n} ({c} turn{'s' if c != 1 else ''})" for n, c in served.items()
                )
                or "–",
                "fallbacks": str(fallbacks) if fallbacks else "",
            }
        )
    return rows


METRIC_LABELS = {
    "duration_s": "Duration (s)",
    "turns": "Turns",
    "user_turns": "Caller turns",
    "assistant_turns": "Agent turns",
    "overlaps": "Caller spoke over the agent",
    "backchannels": "Backchannels (agent resumed)",
    "interruptions": "Interruptions",
    "false_starts": "False starts",
    "unanswered_turns": "Unanswered caller turns",
    "tool_calls": "Tool calls",
    "tool_failures": "Tool failures",
    "voice_to_voice_p50_ms": "Voice-to-voice p50",
    "voice_to_voice_p95_ms": "Voice-to-voice p95",
    "endpointing_p50_ms": "End of turn p50",
    "stt_p50_ms": "STT p50",
    "llm_ttft_p50_ms": "LLM first token p50",
    "tts_ttfb_p50_ms": "TTS first byte p50",
}


def _readable(key: str, value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("_ms") and isinstance(value, (int, float)):
        return f"{value:.0f} ms"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return _json_text(value)
    return str(value)


def metrics_rows(metrics: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The call's summary figures as (label, value); nested figures (audio health) are
    shown in their own section."""
    m = metrics if isinstance(metrics, dict) else {}
    known = [(METRIC_LABELS[k], _readable(k, m[k])) for k in METRIC_LABELS if k in m]
    others = [
        (k.replace("_", " "), _readable(k, v))
        for k, v in sorted(m.items())
        if k not in METRIC_LABELS and not isinstance(v, dict)
    ]
    return known + others + flow_rows(m.get("flow"))


def flow_rows(flow: object) -> list[tuple[str, str]]:
    """A flow call's node path and the values it collected (docs/flows.md)."""
    if not isinstance(flow, dict) or not isinstance(flow.get("path"), list):
        return []
    path = " → ".join(str(step.get("node", "?")) for step in flow["path"])
    return [("Flow path", path), ("Collected values", _json_text(flow.get("values") or {}))]


def extraction_rows(extraction: object) -> list[tuple[str, str]]:
    """The post-call analysis as (field, value): the summary first, lists joined."""
    if not isinstance(extraction, dict):
        return []
    order = ("summary", "intent", "sentiment", "next_action", "extracted_entities")
    keys = [k for k in order if k in extraction] + sorted(k for k in extraction if k not in order)
    rows = []
    for key in keys:
        value = extraction[key]
        if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
            text = ", ".join(map(str, value)) or "–"
        else:
            text = _readable(key, value)
        rows.append((key.replace("_", " "), text))
    return rows


def is_live(call: Call) -> bool:
    return call.status in (CallStatus.ACTIVE, CallStatus.RINGING)


def recording_urls(call: Call) -> dict[str, str] | None:
    """The staff-only audio (range requests) and its waveform peaks
    (calls/recording_urls.py), when the call has a recording."""
    if not call.recording:
        return None
    return {
        "audio": reverse("calls:recording", args=[call.pk]),
        "peaks": reverse("calls:recording_peaks", args=[call.pk]),
    }


def pretty_json(data: object) -> str:
    """Stored JSON indented for a reader ("" when there is none)."""
    if not data:
        return ""
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str)
