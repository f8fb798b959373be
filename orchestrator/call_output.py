"""What the session sends to its transport besides audio frames: best-effort UI events,
the listening/thinking/speaking state, pauses and clears for caller speech over the
agent, and the final close."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from orchestrator.contracts import Transport
from orchestrator.playout import PacedPlayout

logger = logging.getLogger(__name__)


class TransferUnsupported(Exception):
    pass


class CallOutput:
    CLOSE_TIMEOUT_S = 5.0

    def __init__(self, call_id: str, transport: Transport, playout: PacedPlayout) -> None:
        self._call_id = call_id
        self._log_extra = {"call_id": call_id}
        self._transport = transport
        self._playout = playout
        self._state = ""
        self.dead = False  # the transport failed: nothing more goes out

    async def emit(self, event: dict[str, Any]) -> None:
        if self.dead:
            return
        try:
            await self._transport.send_event(event)
        except Exception:
            # Live events are best-effort UI updates; a dead socket shows up in send_audio.
            logger.warning("call %s: send_event(%s) failed", self._call_id, event.get("type"),
                           exc_info=True, extra=self._log_extra)  # fmt: skip

    async def set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            await self.emit({"type": "state", "state": state})

    def pause(self) -> None:
        """Caller speech over the agent: stop sending now (the carrier plays out at most
        the playout lead); ``resume`` goes on where it stopped."""
        self._playout.pause()

    def resume(self) -> None:
        self._playout.resume()

    async def clear(self, *, wire: bool = True) -> None:
        """Barge-in: drop queued agent audio here and at the far end (``wire``: audio
        was sent), and reopen the output for the next utterance."""
        self._playout.discard()
        if wire:
            await self._wire_clear()

    async def _wire_clear(self) -> None:
        if self.dead:
            return
        try:
            await self._transport.clear_audio()
        except Exception:
            logger.warning("call %s: clear_audio failed", self._call_id, exc_info=True,
                           extra=self._log_extra)  # fmt: skip

    async def transfer(self, destination: str) -> None:
        """Hand the call to ``destination`` at the carrier; raises when it cannot."""
        transfer = getattr(self._transport, "transfer", None)
        if transfer is None or self.dead:
            raise TransferUnsupported("this call's transport cannot transfer")
        await transfer(destination)

    async def close(self, reason: str) -> None:
        try:
            async with asyncio.timeout(self.CLOSE_TIMEOUT_S):
                await self._transport.close(reason)
        except Exception:
            logger.warning("call %s: transport.close failed", self._call_id, exc_info=True,
                           extra=self._log_extra)  # fmt: skip
