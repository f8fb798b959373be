"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Browser sockets (simulator) go through the session auth stack and the allowed-hosts
origin check. Carrier sockets (Twilio/Telnyx) send no Origin and are authenticated by
a per-call single-use token instead, so they skip the origin validator.

A WebSocket to any other path (e.g. ``/ws/telephony/telnyx/`` without its secret) is
refused with HTTP 403 and one log line. Channels' ``URLRouter`` would raise a
``ValueError`` instead: a traceback and an HTTP 500 per attempt, a cheap way to flood logs.
"""

import asyncio
import logging
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceapp.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from simulator.routing import websocket_urlpatterns as simulator_ws  # noqa: E402
from telephony.routing import websocket_urlpatterns as telephony_ws  # noqa: E402

logger = logging.getLogger(__name__)


async def refuse_unrouted(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # A close before the accept makes the server answer the handshake with 403 (ASGI spec).
    logger.warning("websocket refused: no route for %r", str(scope.get("path", ""))[:200])
    await send({"type": "websocket.close"})


UNROUTED = re_path(r"", refuse_unrouted)

websocket_app = URLRouter(
    [
        # The catch-all inside: a nested router that matches no route raises too.
        path("ws/telephony/", URLRouter([*telephony_ws, UNROUTED])),
        *simulator_ws,
        UNROUTED,
    ]
)



PRELOAD_WAIT_S = 300.0


async def _models_warm() -> None:
    """Accept no connection before the local models are loaded: uvicorn starts accepting
    only once startup completes, so with several workers on one socket (voiceapp/serve.py)
    a worker that is (re)starting leaves new calls to the warm ones instead of making its
    first callers wait through the load. Bounded: a load this slow serves calls anyway."""
    from calls import preload

    if settings.PRELOAD_ENGINES and not await asyncio.to_thread(preload.wait, PRELOAD_WAIT_S):
        logger.warning("engines still loading after %.0f s; taking calls anyway", PRELOAD_WAIT_S)
    elif not settings.PRELOAD_ENGINES:
        preload.freeze_startup_heap()  # (the preload does it when it runs)


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI lifespan (uvicorn sends it, daphne does not): graceful call endings on SIGTERM.

    daphne gets the same from a reactor hook (live/runtime.py); see voiceapp/serve.py.
    """
    from live import runtime

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            runtime.install_signal_drain()
            await _models_warm()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # Normally the signal drain has ended every call already; this covers a
            # shutdown that did not come from a signal.
            await runtime.shutdown_all()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": websocket_app, "lifespan": lifespan}
)

# Load and warm the local models the active profiles use now, not on the first call
# (/health/ready/ answers 503 until they are ready; PRELOAD_ENGINES=false turns it off).
from django.conf import settings  # noqa: E402


def _freeze_startup_heap_if_idle() -> None:
    """Once the models are loaded (calls/preload.freeze_startup_heap), unless calls are
    already live (daphne accepts during the preload; uvicorn waits for it, _models_warm)."""
    from calls import preload
    from live import runtime

    if runtime.ACTIVE:
        logger.info("startup heap not frozen: %d call(s) already live", len(runtime.ACTIVE))
    else:
        preload.freeze_startup_heap()


if settings.PRELOAD_ENGINES:
    from calls import preload  # noqa: E402

    preload.start_in_background(on_done=_freeze_startup_heap_if_idle)
