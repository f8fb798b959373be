"""The overview across calls (``/admin/calls/call/overview/``): calls per day, end reasons,
error rate, voice-to-voice percentiles per profile and channel, analysed intents.

Aggregated by :func:`calls.selectors.calls_overview`; drawn as plain HTML/CSS bars (no
JavaScript, no charting library)."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from calls import selectors
from calls.models import AgentProfile, EndReason

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin

DEFAULT_DAYS = 14
MAX_DAYS = 366  # one bar per day: a year is the most the page draws


class OverviewFilter(forms.Form):
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    profile = forms.ModelChoiceField(
        queryset=AgentProfile.objects.all(), required=False, empty_label="All profiles"
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        today = timezone.localdate()
        until = data.get("until") or today
        since = data.get("since") or until - datetime.timedelta(days=DEFAULT_DAYS - 1)
        if since > until:
            raise forms.ValidationError("The start date is after the end date.")
        if (until - since).days >= MAX_DAYS:
            raise forms.ValidationError(f"Pick at most {MAX_DAYS} days.")
        data["since"], data["until"] = since, until
        return data


def _share(part: int | float, whole: int | float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def overview_page(model_admin: ModelAdmin, request: HttpRequest) -> HttpResponse:
    form = OverviewFilter(request.GET)  # every field optional: no filter = the last 14 days
    overview = profile = None
    if form.is_valid():
        data = form.cleaned_data
        profile = data.get("profile")
        overview = selectors.calls_overview(
            since=data["since"], until=data["until"], profile_id=profile.pk if profile else None
        )
        # Show the range the figures cover, defaults included.
        form = OverviewFilter(
            {
                "since": data["since"],
                "until": data["until"],
                "profile": profile.pk if profile else "",
            }
        )
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Calls overview",
        "form": form,
        "overview": overview,
        "is_nav_sidebar_enabled": False,
    }
    if overview is not None:
        busiest = max((d.calls for d in overview.per_day), default=0)
        labels = dict(EndReason.choices)
        slowest = max((g.p95_ms or 0.0 for g in overview.latency), default=0.0)
        list_url = reverse("admin:calls_call_changelist")
        # The call list's own date filter, so a bar's link lists the calls it counts.
        start, end = selectors.day_bounds(since=overview.since, until=overview.until)
        span = urlencode(
            {
                "started_at__gte": start.isoformat(sep=" "),
                "started_at__lt": end.isoformat(sep=" "),
                **({"profile__id__exact": profile.pk} if profile else {}),
            }
        )
        context.update(
            days=[
                {"day": d.day, "calls": d.calls, "errors": d.errors,
                 "pct": _share(d.calls, busiest), "error_pct": _share(d.errors, busiest)}
                for d in overview.per_day
            ],
            busiest=busiest,
            end_reasons=[
                {"reason": r, "label": labels.get(r, "Not ended yet") if r else "Not ended yet",
                 "calls": n, "pct": _share(n, overview.calls),
                 "url": f"{list_url}?{span}&"
                 + (f"end_reason__exact={r}" if r else "status__exact=active")}
                for r, n in overview.end_reasons
            ],
            latency=[
                {"group": g, "p50_pct": _share(g.p50_ms or 0.0, slowest),
                 "p95_pct": _share(g.p95_ms or 0.0, slowest)}
                for g in overview.latency
            ],
            analysed=sum(n for _, n in overview.intents),
            intents=[
                {"intent": i.replace("_", " "), "calls": n,
                 "pct": _share(n, max(n for _, n in overview.intents))}
                for i, n in overview.intents
            ],
            error_rate=None if overview.error_rate is None else round(100 * overview.error_rate, 1),
        )  # fmt: skip
    return TemplateResponse(request, "admin/calls/call/overview.html", context)
