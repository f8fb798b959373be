"""HTTP tools of a profile: their own page and "test this tool"."""

from __future__ import annotations

import datetime
import json
from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from calls import selectors
from calls.models import ProfileTool
from orchestrator.tools import ToolStatus
from orchestrator.tools.http import build_request, run_http_tool, validate_arguments

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
