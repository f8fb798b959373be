from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from simulator.consumers import SimulatorConsumer

# Browser sockets: session auth (staff only, checked in the consumer) and an Origin check
# against ALLOWED_HOSTS, so another site cannot open a call with a staff member's cookies.
websocket_urlpatterns = [
    path(
        "ws/simulator/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(SimulatorConsumer.as_asgi())),
    ),
]
