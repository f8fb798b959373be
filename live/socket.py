"""``CallSocket``: the base of the WebSocket consumers that carry call audio (simulator,
Twilio, Telnyx). A consumer only translates its protocol; the life cycle is here.

What every media socket shares:

- **Parse, then queue.** ``receive`` hands a message to :meth:`CallSocket.on_message`, which
  acts only on cheap things (caller audio into the session) and puts the rest in ``inbox``;
  one worker task (:meth:`CallSocket.on_queued`) does everything that awaits the database
  or the session, in order. Channels handles one message at a time per consumer.
- **Going live and stopping** through ``live/runtime.py`` (:meth:`CallSocket.go_live`,
  :meth:`CallSocket.caller_hung_up`), and one idempotent :meth:`CallSocket.close_socket`.
- **It owns its session.** ``__call__`` ends in a ``finally`` that stops the live call as a
  caller hang-up (bounded wait, then cancel), cancels and awaits the socket's own tasks and
  ends the call record. daphne cancels an application that is slow to close without
  calling ``disconnect`` (its ``application_close_timeout``), and cancels it again every
  second; the clean-up outlives those cancellations, so no session survives its socket.
- **No channel layer.** Media sockets never subscribe to Redis (``channel_layer_alias =
  None``): Redis carries control messages only, and a Redis outage must not drop calls.
  With one source of messages, ``__call__`` reads the socket in a plain loop instead of
  Channels' ``await_many_dispatch`` (a new task and an ``asyncio.wait`` per message: ~7 %
  of a loaded server's samples, every 20 ms frame of every call; bench/README.md).
- **A deadline for ``start``** and a per-process bound on sockets still waiting for it.
- **Admission** (``live/admission.py``): a call whose media starts while this process is
  full is refused (stored ``busy``, close 4503); its slot is held until the session ends.
- **An audio budget** (``live/media_rate.py``): a caller streaming faster than real time,
  beyond a burst, is cut off with 4429. Caller audio arrives as PCM16 at the protocol's
  rate (:meth:`CallSocket.caller_audio`) and is resampled to the session's rate here.
- **One table of close codes** (``CloseCode``), documented in docs/telephony.md and
  docs/simulator.md. daphne's websocket layer (autobahn) sends only 1000 or 3000–4999:
  any other code is dropped silently and the socket stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from calls import services
from calls.models import AgentProfile
from live import admission, call_garbage
from live.media_rate import AudioBudget
from live.runtime import LiveCall, start_live_call, stop_live_call
from orchestrator.audio import StreamResampler
from orchestrator.engines import EngineError
from orchestrator.session import INPUT_SAMPLE_RATE, EndReason, Transport

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
    UNAVAILABLE = 4503  # calls globally stopped, or this process is full (live/admission.py)


@dataclass(slots=True, kw_only=True, frozen=True)
class MediaFlood:
    """Not a protocol message: ``receive`` telling the worker to cut an abusive stream."""

    error: str


# Sockets of this process that are open but have not sent their start message yet.
_waiting: set[CallSocket] = set()


def waiting_sockets() -> int:
    return len(_waiting)


class CallSocket(AsyncWebsocketConsumer):
    """A consumer that receives a frame every 20 ms and owns one call.

    Subclasses implement :meth:`on_message` (parse; call :meth:`start_received` when the
    start message arrives, :meth:`caller_audio` for caller audio, queue the rest) and
    :meth:`on_queued` (the worker's side), set ``self.call_id`` and :meth:`go_live` as the
    call starts, and may override :meth:`admit`, :meth:`close_with` and the audio hooks.
    """

    label = "media socket"  # how the logs name this socket (subclasses and instances set it)

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
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.closing = False  # closed, or closing: nothing more is sent or processed
        self.remote_stopped = False  # the caller said stop or dropped the socket
        self.resampler: StreamResampler | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self._serve(scope, receive, send)
        finally:
            try:
                await _run_despite_cancellation(self.release(), name=f"release-{id(self):x}")
            finally:
                if self.call_id is not None:
                    # The socket lets its call go: a pass soon frees what the call held
                    # (its objects form reference cycles; live/call_garbage.py).
                    call_garbage.collector.call_ended()

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` for a consumer without a channel layer."""
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass  # websocket.disconnect handled: the consumer is done

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

    async def connect(self) -> None:
        await self.accept()
        if await self.admit():
            self.start_worker(self.work(), name=f"{self.label}-worker")

    async def admit(self) -> bool:
        """Checks at the door (after accept): False when the socket was closed instead."""
        return True

    async def disconnect(self, code: int) -> None:
        # The session, the worker and the call record are ended by ``release`` once the
        # consumer exits (here, or when daphne kills a slow one).
        if not self.closing:
            # Dropped without a stop (network, carrier restart): the caller is gone.
            self.remote_stopped = True
        self.closing = True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Parse and enqueue only: long work here would block this socket's next message.
        if not self.closing:
            await self.on_message(text_data, bytes_data)

    async def on_message(self, text_data: str | None, bytes_data: bytes | None) -> None:
        raise NotImplementedError

    async def work(self) -> None:
        """The worker: queued messages in order, until the socket closes."""
        while not self.closing:
            message = await self.inbox.get()
            if isinstance(message, MediaFlood):
                await self.end_flooded_call(message.error)
                return
            await self.on_queued(message)

    async def on_queued(self, message: Any) -> None:
        raise NotImplementedError

    async def go_live(
        self, *, profile: AgentProfile, channel: str, transport: Transport
    ) -> LiveCall | None:
        """Start the session of ``self.call_id``: None when the process is full (the call
        is ended ``busy``, close 4503) or the engines failed (close 4500)."""
        assert self.call_id is not None
        if not await self.admitted(channel):
            return None
        try:
            self.live = await start_live_call(
                call_id=self.call_id, profile=profile, channel=channel, transport=transport
            )
        except EngineError as exc:  # the call record was ended with "error" by start_live_call
            await self.close_with(CloseCode.INTERNAL, f"engine setup failed: {exc}")
            return None
        return self.live

    async def admitted(self, channel: str) -> bool:
        """Take this process's admission slot for the call (live/admission.py), or refuse
        it: stored ``busy`` with the reason, counted, and closed 4503 the protocol's way
        (carriers also hang the call up). The slot is given back when the session ends,
        or by :meth:`release` when no session started."""
        assert self.call_id is not None
        refused = admission.controller.admit(self.call_id)
        if refused is None:
            return True
        admission.record_refusal(channel=channel, refused=refused, call_id=self.call_id)
        await database_sync_to_async(services.call_end)(
            call_id=self.call_id, reason=EndReason.BUSY, error=f"refused, process busy: {refused}"
        )
        await self.close_with(CloseCode.UNAVAILABLE, f"all lines busy ({refused.reason})")
        return False

    async def caller_hung_up(self) -> bool:
        """The caller said stop: end the session as a caller hang-up (False: none was live)."""
        if self.live is None:
            return False
        await stop_live_call(self.live, EndReason.CALLER_HANGUP)
        return True

    async def close_socket(self, code: CloseCode, reason: str) -> None:
        """Close once, with ``code`` and ``reason`` (logged)."""
        if self.closing:
            return
        self.closing = True
        log = logger.info if code == CloseCode.NORMAL else logger.warning
        log("%s closed (%d): %s", self.label, code, reason)
        with contextlib.suppress(Exception):  # the socket may already be gone; nothing to tell it
            # int(): autobahn refuses an IntEnum ("must be an integer"), the socket stays open.
            # A close frame's reason is at most 123 bytes of UTF-8; a longer one (an engine
            # error in Spanish, say) fails the close, and the client would see 1006 instead.
            await self.close(code=int(code), reason=_close_reason(reason))

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
            # Normally given back by the session's end; this covers a socket whose session
            # never started (engines failed, the socket went during the set-up).
            await admission.controller.release(self.call_id)
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

    # --- caller audio ----------------------------------------------------------------------

    def caller_audio(self, pcm16: bytes, *, sample_rate: int) -> None:
        """Caller audio, PCM16 mono at ``sample_rate``: counted, then into the session."""
        if not self.audio_allowed(len(pcm16) / (2 * sample_rate)):
            return
        if self.live is None:
            self.audio_before_start()  # before start, or while the call is being set up
            return
        if len(pcm16) % 2:
            self.audio_refused(f"audio must be whole 16-bit samples (got {len(pcm16)} bytes)")
            return
        if sample_rate != INPUT_SAMPLE_RATE:
            if self.resampler is None:
                self.resampler = StreamResampler(sample_rate, INPUT_SAMPLE_RATE)
            pcm16 = self.resampler.process(pcm16)
        self.live.session.push_audio(pcm16)

    def audio_before_start(self) -> None:
        """Caller audio that no session can take yet: dropped (subclasses log or tell)."""

    def audio_refused(self, error: str) -> None:
        logger.warning("%s: %s", self.label, error)

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
        logger.warning("%s: media flood, closing: %s", self.label, error)
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
        """Close the socket with ``code`` the way this protocol does (tell, hang up, close)."""
        await self.close_socket(code, reason)

    def flood_detected(self, error: str) -> None:
        """Called once, from ``receive``: hand :meth:`end_flooded_call` to the worker."""
        self.inbox.put_nowait(MediaFlood(error=error))


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


def _close_reason(reason: str, limit: int = 123) -> str:
    """``reason`` cut to a WebSocket close frame's 123 bytes, whole characters only."""
    return reason.encode()[:limit].decode(errors="ignore")
