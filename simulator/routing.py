from django.urls import path

from simulator.consumers import SimulatorConsumer

websocket_urlpatterns = [path("simulator/", SimulatorConsumer.as_asgi())]
