"""The profile admin's "call a number" button and form: outbound calls belong to telephony.

``calls/`` knows nothing of carriers, so this module takes the profile admin that
``calls/admin.py`` registered and registers it again with the outbound-call field and view
(the same path as ``POST /api/calls/outbound/``: :func:`telephony.outbound.place_call`).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from calls.admin import AgentProfileAdmin
from calls.models import AgentProfile
from telephony import carriers
from telephony.outbound import E164, OutboundError, place_call


class OutboundCallForm(forms.Form):
    to = forms.RegexField(
        regex=E164.pattern,
        label="Number to call",
        help_text="E.164, e.g. +34600111222",
        error_messages={"invalid": "Use an E.164 number such as +34600111222."},
    )
    carrier = forms.ChoiceField(choices=carriers.choices(), initial=carriers.DEFAULT)


def _with_outbound_field(fieldsets: Any) -> tuple[Any, ...]:
    return tuple(
        (name, {**options, "fields": (*options["fields"], "outbound_call")})
        if name == "Telephony"
        else (name, options)
        for name, options in fieldsets
    )


class OutboundCallProfileAdmin(AgentProfileAdmin):
    fieldsets = _with_outbound_field(AgentProfileAdmin.fieldsets)
    readonly_fields = (*AgentProfileAdmin.readonly_fields, "outbound_call")

    @admin.display(description="Outbound call")
    def outbound_call(self, obj: AgentProfile) -> str:
        if not obj.pk:
            return "Save the profile first."
        url = reverse("admin:calls_agentprofile_outbound", args=[obj.pk])
        return format_html('<a class="button" href="{}">Call a number with this profile…</a>', url)

    def get_urls(self):  # type: ignore[no-untyped-def]
        view = self.admin_site.admin_view(self.outbound_view)
        return [
            path("<int:pk>/call/", view, name="calls_agentprofile_outbound"),
            *super().get_urls(),
        ]

    def outbound_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Place an outbound call with this profile (same path as POST /api/calls/outbound/)."""
        profile = get_object_or_404(AgentProfile, pk=pk)
        if not self.has_change_permission(request, profile):
            return redirect("admin:index")
        form = OutboundCallForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                call = place_call(
                    profile=profile,
                    to=form.cleaned_data["to"],
                    carrier=form.cleaned_data["carrier"],
                )
            except OutboundError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"Calling {call.to_number}…", messages.SUCCESS)
                return redirect("admin:calls_call_change", call.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Call a number with {profile}",
            "profile": profile,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/telephony/outbound_call.html", context)


admin.site.unregister(AgentProfile)
admin.site.register(AgentProfile, OutboundCallProfileAdmin)
