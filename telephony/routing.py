"""Carrier media sockets, mounted under ``/ws/telephony/`` by ``voiceapp/asgi.py``."""

from django.urls import path

from telephony import carriers
from telephony.consumers import CarrierConsumer

websocket_urlpatterns = [
    path(carrier.stream_route, CarrierConsumer.as_asgi(carrier=carrier))
    for carrier in carriers.CARRIERS.values()
]
