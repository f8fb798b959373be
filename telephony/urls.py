"""Carrier webhooks under ``/telephony/<carrier>/`` (one ``urls.py`` per carrier folder) and
the outbound-call API, mounted under ``/api/`` by ``voiceapp/urls.py``."""

from django.urls import include, path

from telephony import carriers, outbound

app_name = "telephony"
urlpatterns = [path(f"{name}/", include(f"telephony.{name}.urls")) for name in carriers.CARRIERS]

api_urlpatterns = [
    path("calls/outbound/", outbound.outbound_call, name="outbound-call"),
]
