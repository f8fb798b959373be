"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Browser sockets (simulator) go through the session auth stack and the allowed-hosts
origin check. Carrier sockets (Twilio/Telnyx) send no Origin and are authenticated by
a per-call single-use token instead, so they skip the origin validator.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceapp.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from simulator.routing import websocket_urlpatterns as simulator_ws  # noqa: E402
from telephony.routing import websocket_urlpatterns as telephony_ws  # noqa: E402

websocket_app = URLRouter(
    [
        path("ws/telephony/", URLRouter(telephony_ws)),
        *simulator_ws,
    ]
)

application = ProtocolTypeRouter({"http": django_asgi_app, "websocket": websocket_app})
