from django.urls import path

from telephony.telnyx import webhooks

# Under /telephony/telnyx/ (telephony/urls.py).
urlpatterns = [
    path("webhook/", webhooks.telnyx_webhook, name="telnyx-webhook"),
]
