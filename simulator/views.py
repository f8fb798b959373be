"""The browser simulator page. The call itself runs over the WebSocket in ``consumers.py``."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import reverse

from calls import global_stop, selectors
from calls.models import Channel

# Reversed with a placeholder id that the page swaps for the real call id, so the admin URL
# layout lives in one place (the admin's URLconf), not in the JavaScript.
CALL_ID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"

CHANNEL_HINTS = {
    Channel.BROWSER: "16 kHz wideband",
    Channel.TWILIO: "8 kHz phone sound",
    Channel.TELNYX: "8 kHz phone sound",
}


@staff_member_required
def simulator_page(request: HttpRequest) -> HttpResponse:
    profiles = list(selectors.profiles_active().order_by("name"))
    try:
        default_slug = selectors.profile_get().slug
    except selectors.ProfileNotFound:
        default_slug = ""
    # calls_allowed() logs and allows when the stop state is unreadable (Redis down).
    calls_stopped = not global_stop.calls_allowed()
    stop_reason = global_stop.state().reason if calls_stopped else ""
    config = {
        "wsPath": "/ws/simulator/",
        "callUrlTemplate": reverse("admin:calls_call_change", args=[CALL_ID_PLACEHOLDER]),
        "callIdPlaceholder": CALL_ID_PLACEHOLDER,
        # The worklet module is loaded by URL, so it goes through static() (hashed in production).
        "worklets": static("simulator/worklets.js"),
        "callsStopped": calls_stopped,
    }
    context = {
        "profiles": profiles,
        "default_slug": default_slug,
        "channels": [(value, label, CHANNEL_HINTS[value]) for value, label in Channel.choices],
        "calls_stopped": calls_stopped,
        "stop_reason": stop_reason,
        "simulator_config": config,
    }
    return render(request, "simulator/page.html", context)
