"""Calls: the list (filters, export) and the review page of one call."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Count, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from calls import selectors, services
from calls.admin.overview import overview_page
from calls.admin.review import (
    STATUS_COLORS,
    WATERFALL_STAGES,
    _count,
    _ms,
    audio_health_summary,
    clock,
    engines_used,
    extraction_rows,
    greeting_first_audio,
    is_live,
    latency_chart_svg,
    metrics_rows,
    pretty_json,
    recording_urls,
    turn_taking_summary,
    turn_views,
)
from calls.models import Call, CallStatus


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
    actions = ["rerun_extraction"]
    # The change page is the call's review page (change_view below): read-only, rendered
    # from the call's stored turns and figures rather than a form of its fields.
    review_template = "admin/calls/call/review.html"

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

    def has_rerun_extraction_permission(self, request: HttpRequest) -> bool:
        """The custom ``calls.rerun_extraction`` permission (superusers have it): view-only
        staff must not re-send webhooks or rewrite extractions."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.rerun_extraction")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The call list is the dashboard: at 1,280 px the app menu beside it and the filters
        # would leave the calls ~630 px. Home and the breadcrumbs lead to the other models.
        context = {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        return super().changelist_view(request, context)

    def get_urls(self):  # type: ignore[no-untyped-def]
        export = self.admin_site.admin_view(self.export_view)
        live = self.admin_site.admin_view(self.live_view)
        overview = self.admin_site.admin_view(self.overview_view)
        return [
            path("export/<str:fmt>/", export, name="calls_call_export"),
            path("overview/", overview, name="calls_call_overview"),
            path("<path:object_id>/live/", live, name="calls_call_live"),
            path(
                "<path:object_id>/rerun-extraction/",
                self.admin_site.admin_view(self.rerun_extraction_view),
                name="calls_call_rerun_extraction",
            ),
            *super().get_urls(),
        ]

    # --- The review page -------------------------------------------------------------------

    def _call_or_none(self, request: HttpRequest, object_id: str) -> Call | None:
        call = self.get_object(request, unquote(object_id))
        if call is not None and not self.has_view_permission(request, call):
            raise PermissionDenied
        return call

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """The call's review page: the transcript as a chat beside the recording, each
        reply's latency waterfall, audio health, engines, analysis and figures."""
        call = self._call_or_none(request, object_id)
        if call is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        turns = selectors.call_turns(call_id=call.pk)
        views = turn_views(call=call, turns=turns)
        greeting = greeting_first_audio(call=call, views=views)
        context = {
            **self.admin_site.each_context(request),
            **(extra_context or {}),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "original": call,
            "call": call,
            "title": f"Call {call.external_id or call.pk}",
            "subtitle": None,
            "is_nav_sidebar_enabled": False,
            "status_badge": self.status_badge(call),
            "ended_because": self.ended_because(call),
            "duration": self.duration(call),
            "live": is_live(call),
            "live_url": reverse("admin:calls_call_live", args=[call.pk]),
            "turns": views,
            "turn_count": len(turns),
            "waterfall_legend": WATERFALL_STAGES,
            "median_v2v": self.median_v2v(call),
            "greeting": greeting,
            "recording": recording_urls(call),
            "recording_length": clock(call.recording_duration_s or 0.0),
            "turn_taking": turn_taking_summary(call.metrics),
            "latency_chart": latency_chart_svg(
                [v.voice_to_voice_ms for v in views if v.voice_to_voice_ms is not None],
                slow_ms=settings.SLOW_TURN_MS,
            ),
            "audio_health": audio_health_summary(call.metrics),
            "engines": engines_used(call=call, turns=turns),
            "metrics_rows": metrics_rows(call.metrics),
            "extraction_rows": extraction_rows(call.extraction),
            "metrics_json": pretty_json(call.metrics),
            "extraction_json": pretty_json(call.extraction),
            "config_json": pretty_json(call.config_snapshot),
            "has_delete_permission": self.has_delete_permission(request, call),
            "has_rerun_extraction_permission": self.has_rerun_extraction_permission(request),
            "overview_url": reverse("admin:calls_call_overview"),
            # Back to the list as it was filtered when the call was opened from it.
            "preserved_filters": self.get_preserved_filters(request),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.review_template, context)

    def live_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """What the review page of a live call polls (every 2 s, until the call ends): its
        status and the transcript fragment as the page renders it."""
        call = self._call_or_none(request, object_id)
        if call is None:
            raise Http404("no such call")
        turns = selectors.call_turns(call_id=call.pk)
        html = render_to_string(
            "admin/calls/call/transcript.html",
            {
                "turns": turn_views(call=call, turns=turns),
                "call": call,
                "recording": recording_urls(call),
            },
            request=request,
        )
        return JsonResponse(
            {"live": is_live(call), "status": call.status, "turns": len(turns), "html": html}
        )

    def rerun_extraction_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The review page's "Re-run analysis" button: the list's action for one call."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_rerun_extraction_permission(request):
            raise PermissionDenied  # (before the look-up: says nothing of which calls exist)
        call = self._call_or_none(request, object_id)
        if call is None:
            raise Http404("no such call")
        if services.call_rerun_extraction(call_id=call.pk):
            self.message_user(request, "Post-call analysis queued.", messages.SUCCESS)
        else:
            self.message_user(request, "The call has not ended yet.", messages.WARNING)
        return redirect("admin:calls_call_change", call.pk)

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return overview_page(self, request)

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

    @admin.display(description="audio", ordering="audio_issues")
    def audio(self, obj: Call) -> str:
        """Late agent frames + caller gaps: "ok", the count, or "–" when not measured."""
        if obj.audio_issues is None:
            return "–"
        return "ok" if obj.audio_issues == 0 else _count(obj.audio_issues, "issue", "issues")

    @admin.action(
        description="Re-run post-call extraction", permissions=["rerun_extraction"]
    )
    def rerun_extraction(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        pks = queryset.values_list("pk", flat=True)
        queued = sum(services.call_rerun_extraction(call_id=pk) for pk in pks)
        self.message_user(request, f"Extraction queued for {queued} call(s).", messages.SUCCESS)
