"""Operator API (global stop) and the Prometheus endpoint."""

from __future__ import annotations

import datetime
import hmac

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from calls import global_stop
from calls import metrics as prom
from calls.auth import bearer_token, require_api_key
from calls.models import GlobalStopEvent


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

    state = global_stop.state()
    context = {
        **admin.site.each_context(request),
        "title": "Global call stop",
        "state": state,
        # Redis keeps unix times; the page shows them in the server's time zone.
        "since": _when(state.since),
        "errors": [{**e, "when": _when(e.get("at"))} for e in state.recent_errors],
        "events": GlobalStopEvent.objects.all()[:20],
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
    try:
        prom.GLOBAL_STOP.set(0 if global_stop.calls_allowed() else 1)
    except Exception:  # noqa: BLE001 - metrics must answer even when Redis is down
        pass
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
