"""Scenarios in the admin: edit (the spec validated on save, each mistake at its path),
import and export YAML, run through Celery; and the results, each linked to its call."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from scenarios import services
from scenarios.models import ResultStatus, Scenario, ScenarioResult
from scenarios.spec import SpecError
from scenarios.tasks import run_scenarios

STATUS_COLORS = {
    ResultStatus.PASSED: "#2aa198",
    ResultStatus.FAILED: "#dc322f",
    ResultStatus.ERROR: "#b58900",
    ResultStatus.SKIPPED: "#586e75",
}


def status_badge(status: str) -> SafeString:
    return format_html(
        '<span style="background:{};color:#fff;padding:1px 6px;border-radius:8px">{}</span>',
        STATUS_COLORS.get(status, "#586e75"),  # type: ignore[call-overload]
        status or "?",
    )


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A .yaml file: one scenario per document (--- between).")


def _run_base_url() -> str:
    """This server (through its public URL) when it can sign its own webhooks; "" = the
    task starts a server of its own for the batch."""
    if settings.TWILIO_AUTH_TOKEN or settings.TELEPHONY_ALLOW_UNSIGNED:
        return settings.PUBLIC_BASE_URL
    return ""


@admin.register(Scenario)
class ScenarioAdmin(admin.ModelAdmin):
    list_display = ("name", "profile", "slug", "tags", "enabled", "last_result")
    list_filter = ("profile", "enabled")
    search_fields = ("name", "slug", "tags")
    actions = ("run_selected", "export_yaml")
    change_list_template = "admin/scenarios/scenario/change_list.html"

    @admin.display(description="last result")
    def last_result(self, obj: Scenario) -> SafeString | str:
        last = obj.results.order_by("-started_at").first()
        if last is None:
            return "-"
        url = reverse("admin:scenarios_scenarioresult_change", args=[last.pk])
        return format_html('<a href="{}">{}</a>', url, status_badge(last.status))

    @admin.action(description="Run selected scenarios (results under Scenario results)")
    def run_selected(self, request: HttpRequest, queryset: QuerySet[Scenario]) -> None:
        ids = list(queryset.filter(enabled=True).values_list("pk", flat=True))
        if not ids:
            self.message_user(request, "No enabled scenario selected.", messages.WARNING)
            return
        base_url = _run_base_url()
        # A batch places real calls: queued once the request's writes are committed.
        transaction.on_commit(lambda: run_scenarios.delay(ids, base_url))
        where = f"against {base_url}" if base_url else "on a server started for the run"
        self.message_user(request, f"{len(ids)} scenario(s) queued to run {where}.")

    @admin.action(description="Export selected scenarios as YAML")
    def export_yaml(self, request: HttpRequest, queryset: QuerySet[Scenario]) -> HttpResponse:
        text = services.scenarios_export(scenarios=queryset.select_related("profile"))
        response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="scenarios.yaml"'
        return response

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.import_view)
        run_profile = self.admin_site.admin_view(self.run_profile_view)
        return [
            path("import/", view, name="scenarios_scenario_import"),
            path(
                "run-profile/<int:profile_id>/",
                run_profile,
                name="scenarios_scenario_run_profile",
            ),
            *super().get_urls(),
        ]

    def run_profile_view(self, request: HttpRequest, profile_id: int) -> HttpResponse:
        """The profile page's "Run scenarios" button: its enabled scenarios, through the
        same Celery task as the list's action; then its results list."""
        if request.method != "POST":
            return HttpResponse(status=405)
        if not request.user.has_perm("scenarios.change_scenario"):
            return HttpResponse(status=403)
        queryset = Scenario.objects.filter(profile_id=profile_id)
        self.run_selected(request, queryset)
        results = reverse("admin:scenarios_scenarioresult_changelist")
        return redirect(f"{results}?scenario__profile__id__exact={profile_id}")

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request) or not self.has_change_permission(request):
            return HttpResponse(status=403)
        errors: list[str] = []
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                text = upload.read().decode("utf-8")
                saved = services.scenario_import(
                    documents=services.yaml_documents(text, source=upload.name),
                    source=upload.name,
                )
            except UnicodeDecodeError:
                errors = [f"{upload.name}: not UTF-8 text"]
            except SpecError as exc:
                errors = exc.errors
            else:
                names = ", ".join(str(s) for s in saved)
                self.message_user(request, f"Imported {len(saved)} scenario(s): {names}.")
                return redirect("admin:scenarios_scenario_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Import scenarios from YAML",
            "opts": self.model._meta,
            "form": form,
            "errors": errors,
        }
        return TemplateResponse(request, "admin/scenarios/scenario/import.html", context)


@admin.register(ScenarioResult)
class ScenarioResultAdmin(admin.ModelAdmin):
    list_display = (
        "started_at",
        "scenario_label",
        "badge",
        "checks_summary",
        "duration",
        "call_link",
    )
    list_filter = ("status", "scenario__profile")
    search_fields = ("scenario_label", "call_sid", "error")
    date_hierarchy = "started_at"
    fields = (
        "scenario", "scenario_label", "badge", "batch", "repeat_index", "started_at",
        "duration", "call_link", "call_sid", "error", "checks_table", "notes_list",
    )  # fmt: skip
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def badge(self, obj: ScenarioResult) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="checks")
    def checks_summary(self, obj: ScenarioResult) -> str:
        judged = [c for c in obj.checks if c.get("status") != "skipped"]
        passed = sum(c.get("status") == "passed" for c in judged)
        return f"{passed}/{len(judged)}" if judged else "-"

    @admin.display(description="seconds", ordering="duration_s")
    def duration(self, obj: ScenarioResult) -> str:
        return f"{obj.duration_s:.1f}" if obj.duration_s is not None else "-"

    @admin.display(description="call")
    def call_link(self, obj: ScenarioResult) -> SafeString | str:
        if obj.call_id is None:
            return "-"
        url = reverse("admin:calls_call_change", args=[obj.call_id])
        return format_html('<a href="{}">transcript and latencies</a>', url)

    @admin.display(description="assertions")
    def checks_table(self, obj: ScenarioResult) -> SafeString | str:
        if not obj.checks:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (status_badge(c.get("status", "")), c.get("check", ""), c.get("message", ""),
                 c.get("evidence") or "")
                for c in obj.checks
            ),
        )  # fmt: skip
        return format_html(
            "<table><tr><th>status</th><th>check</th><th>message</th><th>evidence</th></tr>{}"
            "</table>",
            rows,
        )

    @admin.display(description="caller notes")
    def notes_list(self, obj: ScenarioResult) -> SafeString | str:
        if not obj.notes:
            return "-"
        return format_html(
            "<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((n,) for n in obj.notes))
        )
