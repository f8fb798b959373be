"""Base class of the WebSocket consumers that carry call audio (simulator, Twilio, Telnyx).

What every media socket shares:

- **It owns its session.** ``__call__`` ends in a ``finally`` that stops the live call as a
  caller hang-up (bounded wait, then cancel), cancels and awaits the socket's own tasks and
  ends the call record. daphne cancels an application that is slow to close without
  calling ``disconnect`` (its ``application_close_timeout``), and cancels it again every
  second; the clean-up outlives those cancellations, so no session survives its socket.
- **No channel layer.** Media sockets never subscribe to Redis (``channel_layer_alias =
  None``): Redis carries control messages only, and a Redis outage must not drop calls.
- **A deadline for ``start``** and a per-process bound on sockets still waiting for it.
- **An audio budget** (``live/media_rate.py``): a caller streaming faster than real time,
  beyond a burst, is cut off with 4429.
- **One table of close codes** (``CloseCode``), documented in docs/telephony.md and
  docs/simulator.md. daphne's websocket layer (autobahn) sends only 1000 or 3000–4999:
  any other code is dropped silently and the socket stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from enum import IntEnum
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from calls import services
from live.media_rate import AudioBudget
from live.runtime import LiveCall, stop_live_call
from orchestrator.session import EndReason

logger = logging.getLogger(__name__)


class CloseCode(IntEnum):
    NORMAL = 1000
    BAD_REQUEST = 4400  # malformed start, unsupported media format, broken protocol
    UNAUTHENTICATED = 4401  # simulator: not logged in
    FORBIDDEN = 4403  # simulator: not staff; carriers: stream token missing/forged/reused/foreign
    NOT_FOUND = 4404  # simulator: unknown or inactive profile
    START_TIMEOUT = 4408  # no start message within MEDIA_SOCKET_START_TIMEOUT_SECONDS
    CALL_ENDED = 4409  # the call this stream belongs to has already ended
    TOO_LARGE = 4413  # a frame or message over the size limit
    MEDIA_FLOOD = 4429  # caller audio faster than real time beyond the allowed burst
    INTERNAL = 4500  # engines could not be built, the call ended with an error, a crash
    UNAVAILABLE = 4503  # calls globally stopped, or this process is busy


# Sockets of this process that are open but have not sent their start message yet.
_waiting: set[MediaSocketConsumer] = set()


def waiting_sockets() -> int:
    return len(_waiting)


class MediaSocketConsumer(AsyncWebsocketConsumer):
    """A consumer that receives a frame every 20 ms and owns one call.

    Subclasses set ``self.live`` / ``self.call_id`` as the call starts, start their
    worker with :meth:`start_worker`, call :meth:`start_received` when the start message
    arrives and :meth:`audio_allowed` for every chunk of caller audio, and implement
    :meth:`close_with` and :meth:`flood_detected`.
    """

    # Not subscribed to the channel layer: no Redis receive loop that can kill the call.
    channel_layer_alias = None  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.live: LiveCall | None = None
        self.call_id: str | None = None
        self.worker: asyncio.Task[None] | None = None
        self.start_timer: asyncio.Task[None] | None = None
        self.refused = False  # closed at the door: frames still in flight are dropped
        self.failure = ""  # an internal error that ended this socket (for the call record)
        self.audio_budget = AudioBudget(
            burst_s=settings.MEDIA_BURST_SECONDS, max_speed=settings.MEDIA_MAX_SPEED
        )
        self.flooded = False

    # --- lifecycle -----------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await _run_despite_cancellation(self.release(), name=f"release-{id(self):x}")

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        if len(_waiting) >= settings.MEDIA_SOCKETS_MAX_WAITING:
            logger.warning(
                "media socket %s refused: %d sockets already waiting for their start",
                self.scope.get("path", ""),
                len(_waiting),
            )
            self.refused = True
            await self.accept()
            # int(): autobahn refuses an IntEnum ("must be an integer"), the socket stays open.
            await self.close(code=int(CloseCode.UNAVAILABLE), reason="busy: too many waiting")
            return
        _waiting.add(self)
        self.start_timer = asyncio.create_task(self._start_deadline(), name="media-start-deadline")
        await super().websocket_connect(message)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs ``close_old_connections`` in the sync thread before *every* message
        # (channels 4.x ``AsyncConsumer.dispatch``): 50 thread hops per second per call,
        # queued behind the call's DB writes (~15% of a busy server's CPU in bench/load.py).
        # ``receive`` never touches the ORM (DB work goes through ``database_sync_to_async``,
        # which closes old connections itself), so frames skip it; connect and disconnect
        # keep it.
        if message.get("type") == "websocket.receive":
            if not self.refused:
                await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    def start_received(self) -> None:
        """The start message arrived: the deadline no longer applies."""
        _waiting.discard(self)
        if self.start_timer is not None:
            self.start_timer.cancel()

    async def _start_deadline(self) -> None:
        timeout = settings.MEDIA_SOCKET_START_TIMEOUT_SECONDS
        await asyncio.sleep(timeout)
        _waiting.discard(self)
        await self.close_with(CloseCode.START_TIMEOUT, f"no start within {timeout:g} s")

    def start_worker(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        self.worker = asyncio.create_task(self._guarded(work), name=name)

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:
            # Not silent: the socket is closed and the call record says why.
            logger.exception("%s: socket worker crashed", type(self).__name__)
            self.failure = f"internal: {exc!r}"
            await self.close_with(CloseCode.INTERNAL, "internal error")

    async def release(self) -> None:
        """Whatever this socket started ends with it (runs on every exit of ``__call__``)."""
        _waiting.discard(self)
        tasks = [t for t in (self.start_timer, self.worker) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.live is not None and not self.live.done:
            await stop_live_call(
                self.live,
                EndReason.CALLER_HANGUP,
                timeout=settings.MEDIA_SOCKET_STOP_TIMEOUT_SECONDS,
            )
        if self.call_id is not None:
            # The session normally ended the record already (a no-op then); this covers a
            # socket that went away before its session started, or a session cancelled
            # before it could write its end.
            await database_sync_to_async(services.call_end)(
                call_id=self.call_id, reason=self.final_reason(), error=self.failure
            )

    def final_reason(self) -> str:
        if self.failure:
            return EndReason.ERROR
        task = self.live.task if self.live is not None else None
        if task is None or not task.done() or task.cancelled():
            return EndReason.CALLER_HANGUP
        return EndReason.ERROR if task.exception() is not None else str(task.result())

    # --- audio budget --------------------------------------------------------------------

    def audio_allowed(self, seconds: float) -> bool:
        """Count ``seconds`` of caller audio; False (and :meth:`flood_detected`) once over."""
        if self.flooded:
            return False
        if self.audio_budget.take(seconds):
            return True
        self.flooded = True
        budget = self.audio_budget
        error = (
            f"caller audio arrived at {budget.speed():.1f}x real time "
            f"({budget.received_s:.1f} s of audio); the limit is {budget.max_speed:g}x "
            f"after a {budget.burst_s:g} s burst"
        )
        logger.warning("%s: media flood, closing: %s", type(self).__name__, error)
        self.flood_detected(error)
        return False

    async def end_flooded_call(self, error: str) -> None:
        """Worker side of a flood: the record says why, the session stops without a word."""
        if self.call_id is not None:
            await database_sync_to_async(services.call_end)(
                call_id=self.call_id, reason=EndReason.ERROR, error=error
            )
        await self.close_with(CloseCode.MEDIA_FLOOD, error)
        if self.live is not None:
            await stop_live_call(
                self.live, EndReason.ERROR, timeout=settings.MEDIA_SOCKET_STOP_TIMEOUT_SECONDS
            )

    # --- subclass hooks ------------------------------------------------------------------

    async def close_with(self, code: CloseCode, reason: str) -> None:
        """Close the socket with ``code`` the way this protocol does (log, tell, close)."""
        with contextlib.suppress(Exception):
            await self.close(code=int(code), reason=reason[:120])

    def flood_detected(self, error: str) -> None:
        """Called once, from ``receive``: hand :meth:`end_flooded_call` to the worker."""
        raise NotImplementedError


async def _run_despite_cancellation(work: Coroutine[Any, Any, None], *, name: str) -> None:
    """Run ``work`` to its end even while our own task is being cancelled, then re-raise.

    daphne cancels a slow application every second once its close timeout has passed;
    without this the first cancellation would abandon the clean-up half-way.
    """
    task = asyncio.create_task(work, name=name)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = cancelled or not task.done()
        except Exception:  # noqa: BLE001, S110 - logged just below, once
            pass
    if not task.cancelled() and task.exception() is not None:
        logger.error("media socket clean-up failed", exc_info=task.exception())
    if cancelled:
        raise asyncio.CancelledError
