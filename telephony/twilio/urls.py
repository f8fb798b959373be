from django.urls import path

from telephony.twilio import webhooks

# Under /telephony/twilio/ (telephony/urls.py).
urlpatterns = [
    path("voice/", webhooks.twilio_voice, name="twilio-voice"),
    path("status/", webhooks.twilio_status, name="twilio-status"),
    path("amd/", webhooks.twilio_amd, name="twilio-amd"),
]
