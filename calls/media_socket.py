"""Base class of the WebSocket consumers that carry call audio (simulator, Twilio, Telnyx)."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


class MediaSocketConsumer(AsyncWebsocketConsumer):
    """A consumer that receives a frame every 20 ms.

    Channels runs ``close_old_connections`` in the sync thread before *every* message
    (channels 4.x ``AsyncConsumer.dispatch``). For media sockets that is 50 thread hops
    per second per call, queued behind the call's DB writes: ~15% of a busy server's CPU
    and the cause of late agent frames in ``bench/load.py``. Our ``receive`` methods
    never touch the ORM (DB work goes through ``database_sync_to_async``, which closes
    old connections itself), so frames skip it; connect and disconnect keep it.
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)
