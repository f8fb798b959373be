"""The audit trail of global stops and resets (the state itself: ``/admin/global-stop/``)."""

from __future__ import annotations

import datetime

from django.contrib import admin
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html_join
from django.utils.safestring import SafeString

from calls.models import GlobalStopEvent


def readable_detail(detail: object) -> list[tuple[str, str]]:
    """A stop's detail as (key, value) text; its unix times (``at``) as local times."""
    if not isinstance(detail, dict):
        return []
    rows = []
    for key, value in detail.items():
        if key.endswith("at") and isinstance(value, (int, float)):
            moment = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
            value = timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z")
        rows.append((str(key).replace("_", " "), str(value)))
    return rows


@admin.register(GlobalStopEvent)
class GlobalStopEventAdmin(admin.ModelAdmin):
    list_display = ("at", "action", "actor", "summary")
    readonly_fields = ("at", "action", "actor", "details")
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="detail")
    def summary(self, obj: GlobalStopEvent) -> str:
        text = "; ".join(f"{k}: {v}" for k, v in readable_detail(obj.detail))
        return text if len(text) <= 200 else text[:199] + "…"

    @admin.display(description="detail")
    def details(self, obj: GlobalStopEvent) -> SafeString:
        return format_html_join("", "<div><b>{}</b>: {}</div>", readable_detail(obj.detail))
