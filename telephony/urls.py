from django.urls import path

from telephony import outbound, views

app_name = "telephony"
urlpatterns = [
    path("twilio/voice/", views.twilio_voice, name="twilio-voice"),
    path("twilio/status/", views.twilio_status, name="twilio-status"),
    path("telnyx/webhook/", views.telnyx_webhook, name="telnyx-webhook"),
]

# Mounted under /api/ by voiceapp/urls.py (next to calls' own API).
api_urlpatterns = [
    path("calls/outbound/", outbound.outbound_call, name="outbound-call"),
]
