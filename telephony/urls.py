from django.urls import path

from telephony import views

app_name = "telephony"
urlpatterns = [
    path("twilio/voice/", views.twilio_voice, name="twilio-voice"),
    path("twilio/status/", views.twilio_status, name="twilio-status"),
    path("telnyx/webhook/", views.telnyx_webhook, name="telnyx-webhook"),
]
