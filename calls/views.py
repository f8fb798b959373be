"""Operator API (global stop), the Prometheus endpoint and call recordings for staff."""

from __future__ import annotations

import datetime
import hmac
import os
from collections.abc import Iterator

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import (
    require_GET,
    require_http_methods,
    require_POST,
    require_safe,
)
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from calls import global_stop, recordings, selectors
from calls.auth import bearer_token, require_api_key
from calls.models import Call, GlobalStopEvent


@csrf_exempt
@require_POST
@require_api_key
def global_stop_reset(request: HttpRequest) -> JsonResponse:
    was_stopped = global_stop.reset(actor="api")
    return JsonResponse({"status": "ok", "was_stopped": was_stopped, "calls_allowed": True})


@csrf_exempt
@require_GET
@require_api_key
def global_stop_status(request: HttpRequest) -> JsonResponse:
    s = global_stop.state()
    return JsonResponse(
        {
            "stopped": s.stopped,
            "since": s.since,
            "reason": s.reason,
            "recent_errors": s.recent_errors,
        }
    )


@staff_member_required
@require_http_methods(["GET", "POST"])
def global_stop_admin(request: HttpRequest) -> HttpResponse:
    """Admin page: current state, recent errors, audit trail and a reset button."""
    if request.method == "POST":
        was_stopped = global_stop.reset(actor=request.user.get_username())
        messages.success(
            request,
            "Calls resumed." if was_stopped else "Calls were not stopped; error window cleared.",
        )
        return redirect("global-stop-admin")
    from django.contrib import admin

    from calls.admin.global_stop import readable_detail

    state = global_stop.state()
    context = {
        **admin.site.each_context(request),
        "title": "Global call stop",
        "state": state,
        # Redis keeps unix times; the page shows them in the server's time zone.
        "since": _when(state.since),
        "errors": [{**e, "when": _when(e.get("at"))} for e in state.recent_errors],
        "events": [
            (event, readable_detail(event.detail)) for event in GlobalStopEvent.objects.all()[:20]
        ],
        "max_errors": settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW,
        "window": settings.GLOBAL_STOP_WINDOW_SECONDS,
    }
    return TemplateResponse(request, "admin/global_stop.html", context)


def _when(unix_time: float | None) -> datetime.datetime | None:
    if unix_time is None:
        return None
    return datetime.datetime.fromtimestamp(float(unix_time), tz=datetime.UTC)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics; requires ``Authorization: Bearer <METRICS_TOKEN>`` when it is set."""
    expected = settings.METRICS_TOKEN
    if expected:
        token = bearer_token(request) or ""
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    elif not settings.DEBUG:
        return HttpResponse(
            "set METRICS_TOKEN to enable /metrics in production\n",
            status=404,
            content_type="text/plain",
        )
    body = generate_latest(_registry()) + generate_latest(_GLOBAL_STOP_REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


class _GlobalStopCollector:
    """``voiceapp_global_stop``, read from the shared stop state at scrape time. Not a gauge
    a worker sets: with several workers, one that answered a scrape while calls were
    stopped would keep reporting 1 after a reset until it happened to be scraped again."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("voiceapp_global_stop", "1 while calls are globally stopped")
        try:
            family.add_metric([], 0 if global_stop.calls_allowed() else 1)
        except Exception:  # noqa: BLE001 - metrics must answer even when Redis is down
            return
        yield family


_GLOBAL_STOP_REGISTRY = CollectorRegistry()
_GLOBAL_STOP_REGISTRY.register(_GlobalStopCollector())


def _registry() -> CollectorRegistry:
    """This process's series, or every worker's when they share a multiprocess folder."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


# --- Call recordings (staff only; docs/recordings.md) -----------------------------------------


def _recorded_call(request: HttpRequest, call_id: object) -> Call:
    """The call, for staff allowed to view calls (others get 403), with a recording (404)."""
    if not request.user.has_perm("calls.view_call"):
        raise PermissionDenied
    call = selectors.call_get(call_id=call_id)
    if call is None or not call.recording:
        raise Http404("no recording")
    return call


@staff_member_required
@require_safe
def call_recording(request: HttpRequest, call_id: object) -> HttpResponse:
    """The recording (Opus in Ogg), with single byte ranges so the player can seek."""
    call = _recorded_call(request, call_id)
    storage = call.recording.storage
    name = call.recording.name
    try:
        size = storage.size(name)
    except FileNotFoundError as exc:
        raise Http404("recording file missing") from exc
    try:
        span = recordings.byte_range(request.headers.get("Range", ""), size)
    except ValueError:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    first, last = span if span is not None else (0, size - 1)
    body = (
        recordings.read_range(storage.open(name, "rb"), first, last)
        if request.method == "GET" and size
        else iter(())
    )
    response = StreamingHttpResponse(
        body, status=206 if span is not None else 200, content_type="audio/ogg"
    )
    response["Content-Length"] = str(last - first + 1 if size else 0)
    response["Accept-Ranges"] = "bytes"
    if span is not None:
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
    response["Cache-Control"] = "private, max-age=3600"
    response["Content-Disposition"] = f'inline; filename="call-{call.pk}.ogg"'
    return response


@staff_member_required
@require_GET
def call_recording_peaks(request: HttpRequest, call_id: object) -> JsonResponse:
    """Waveform of both channels (left: caller, right: agent), ``PEAKS_PER_S`` bars per
    second of 0..1 peaks; computed once, then cached next to the recording."""
    call = _recorded_call(request, call_id)
    try:
        peaks = recordings.recording_peaks(call)
    except FileNotFoundError as exc:
        raise Http404("recording file missing") from exc
    response = JsonResponse(peaks)
    response["Cache-Control"] = "private, max-age=3600"
    return response
