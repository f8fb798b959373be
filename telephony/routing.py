"""Carrier media sockets, mounted under ``/ws/telephony/`` by ``voiceapp/asgi.py``."""

from django.urls import path

from telephony.consumers import TelnyxStreamConsumer, TwilioStreamConsumer

websocket_urlpatterns = [
    path("twilio/", TwilioStreamConsumer.as_asgi()),
    path("telnyx/<str:secret>/", TelnyxStreamConsumer.as_asgi()),
]
