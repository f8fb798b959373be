"""Carrier media sockets: ``/ws/telephony/twilio/`` and ``/ws/telephony/telnyx/<secret>/``.

One consumer class for every carrier in ``telephony/carriers.py``; what is carrier-specific
(JSON shapes and the µ-law codec, where the stream token travels, the REST hang-up) lives in
the carrier's folder, and the life cycle every media socket shares in ``live/socket.py``.

Flow: ``on_message`` parses and acts only on cheap things (caller audio into the session,
marks); anything that touches the database goes through ``inbox`` to the worker. The worker
checks the stream token on ``start`` (close 4403 before any audio reaches a session),
starts the session and ends it on ``stop``. When the socket goes, ``CallSocket`` ends
whatever is still running: the call record is ended with a reason in every path.
Close codes: ``live.socket.CloseCode`` (docs/telephony.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from calls import selectors, services
from calls.models import Call, CallStatus
from live.socket import CallSocket, CloseCode
from orchestrator.session import EndReason
from telephony import tokens, wire
from telephony.carriers import REST_ERRORS, Carrier

logger = logging.getLogger(__name__)

MAX_PROTOCOL_ERRORS = 50  # bad messages tolerated (logged, ignored) before giving up
LOGGED_PROTOCOL_ERRORS = 5  # the first few ignored bad messages are logged, then counted only
MARK_WAIT_S = 1.0  # on agent hang-up: wait this long for the last marks to be played
HANGUP_TIMEOUT_S = 3.0  # the session gives transport.close() 5 s in all


class CarrierTransport:
    """Session output -> carrier messages: 20 ms PCM16 8 kHz frames, marks, clears."""

    sample_rate = wire.PHONE_RATE

    def __init__(self, consumer: CarrierConsumer) -> None:
        self.consumer = consumer

    async def send_audio(self, frame: bytes) -> None:
        if not self.consumer.closing:
            await self.consumer.send(text_data=self.consumer.stream.media(frame))

    async def clear_audio(self) -> None:
        # Marks still queued at the carrier come back after a clear: they were not heard.
        self.consumer.forget_marks()
        if not self.consumer.closing:
            await self.consumer.send(text_data=self.consumer.stream.clear())

    async def send_event(self, event: dict[str, Any]) -> None:
        # Transcripts, states and metrics are for the browser; a phone line only takes marks.
        if event.get("type") == "mark" and not self.consumer.closing:
            name = str(event.get("name", ""))
            self.consumer.mark_sent(name)
            await self.consumer.send(text_data=self.consumer.stream.mark(name))

    async def close(self, reason: str) -> None:
        await self.consumer.end_from_session(reason)


class CarrierConsumer(CallSocket):
    """``CarrierConsumer.as_asgi(carrier=...)``: one per carrier (telephony/routing.py)."""

    def __init__(self, *args: Any, carrier: Carrier, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.carrier = carrier
        self.channel = carrier.name
        self.label = f"{carrier.name} stream"
        self.stream = carrier.stream_class()
        self.carrier_call_id = ""
        self.started = False  # a start message was received (not necessarily accepted)
        self.protocol_errors = 0
        self.early_media = 0
        self.pending_marks: set[str] = set()
        self.marks_drained = asyncio.Event()
        self.marks_drained.set()

    async def admit(self) -> bool:
        self.stream.log_upgrade(self.scope)
        return True

    # --- on_message: parse, act on cheap things, enqueue the rest --------------------------

    async def on_message(self, text_data: str | None, bytes_data: bytes | None) -> None:
        try:
            messages = self.stream.parse(text_data)
        except wire.ProtocolError as exc:
            self.protocol_error(exc)
            return
        for message in messages:
            self.handle(message)

    def handle(self, message: wire.Inbound) -> None:
        if isinstance(message, wire.Media):
            self.caller_audio(message.pcm16, sample_rate=wire.PHONE_RATE)
        elif isinstance(message, wire.Mark):
            self.mark_echoed(message.name)
        elif isinstance(message, wire.Start):
            if self.started:
                logger.warning("%s: second start ignored", self.label)
                return
            self.started = True
            self.start_received()
            self.inbox.put_nowait(message)
        elif isinstance(message, wire.Dtmf):
            if self.live is None:
                logger.warning(
                    "%s: DTMF %r before the call started, ignored", self.label, message.digit
                )
                return
            self.live.session.push_dtmf(message.digit)
            self.inbox.put_nowait(message)  # recorded on the call by the worker
        elif isinstance(message, wire.Stop):
            self.remote_stopped = True
            self.inbox.put_nowait(message)
        elif isinstance(message, wire.CarrierError):
            logger.warning("%s error %s: %s", self.label, message.code, message.detail)
        elif isinstance(message, wire.Ignored):
            logger.debug("%s: ignored (%s)", self.label, message.reason)

    def audio_before_start(self) -> None:
        # Before start, or while the token is being checked: never processed.
        self.early_media += 1
        if self.early_media == 1 and not self.started:
            logger.warning("%s: media before start, ignored", self.label)

    def protocol_error(self, exc: wire.ProtocolError) -> None:
        self.protocol_errors += 1
        if exc.fatal or self.protocol_errors <= LOGGED_PROTOCOL_ERRORS:
            logger.warning(
                "%s: bad message%s: %s", self.label, "" if exc.fatal else " ignored", exc
            )
        if exc.fatal:
            self.inbox.put_nowait(wire.CarrierError(code="protocol", detail=str(exc)))
        elif self.protocol_errors == MAX_PROTOCOL_ERRORS:
            self.inbox.put_nowait(
                wire.CarrierError(code="protocol", detail=f"{self.protocol_errors} bad messages")
            )

    # --- marks ---------------------------------------------------------------------------

    def mark_sent(self, name: str) -> None:
        self.pending_marks.add(name)
        self.marks_drained.clear()

    def mark_echoed(self, name: str) -> None:
        if name in self.pending_marks:
            self.pending_marks.discard(name)
            logger.debug("%s stream: %s played", self.channel, name)
        else:
            logger.debug("%s stream: mark %s flushed by a clear, not played", self.channel, name)
        if not self.pending_marks:
            self.marks_drained.set()

    def forget_marks(self) -> None:
        self.pending_marks.clear()
        self.marks_drained.set()

    # --- worker: everything that awaits the database or the session ------------------------

    async def on_queued(self, message: wire.Inbound) -> None:
        if isinstance(message, wire.Start):
            await self.begin(message)
        elif isinstance(message, wire.Dtmf) and self.call_id is not None:
            await database_sync_to_async(services.call_record_dtmf)(
                call_id=self.call_id, digit=message.digit
            )
        elif isinstance(message, wire.Stop):
            logger.info("%s: caller hung up (stop)", self.label)
            await self.caller_hung_up()
            await self.close_socket(CloseCode.NORMAL, EndReason.CALLER_HANGUP)
        elif isinstance(message, wire.CarrierError):
            # Only our own protocol verdicts get here; the carrier's "error" events are logged.
            await self.hang_up_and_close(CloseCode.BAD_REQUEST, f"protocol error: {message.detail}")

    async def begin(self, start: wire.Start) -> None:
        call = await self.authorize(start)
        if call is None:
            return
        self.call_id = str(call.id)
        self.carrier_call_id = start.carrier_call_id
        if not await database_sync_to_async(services.call_activate)(
            call_id=self.call_id, stream_id=start.stream_id
        ):
            self.call_id = None  # ended elsewhere (carrier hang-up webhook): leave it as it is
            await self.close_socket(CloseCode.CALL_ENDED, "call already ended")
            return
        profile = call.profile
        if profile is None:
            try:
                profile = await database_sync_to_async(selectors.profile_get)(slug=None)
            except selectors.ProfileNotFound:
                await database_sync_to_async(services.call_end)(
                    call_id=self.call_id, reason=EndReason.ERROR, error="no active profile"
                )
                await self.hang_up_and_close(CloseCode.INTERNAL, "no active profile")
                return
        if await self.go_live(
            profile=profile, channel=self.channel, transport=CarrierTransport(self)
        ):
            logger.info("%s %s: call %s live", self.label, start.stream_id, self.call_id)

    async def authorize(self, start: wire.Start) -> Call | None:
        """The call this stream belongs to, if its token says so; else close 4403."""
        token = self.stream.token(start, self.scope.get("url_route", {}).get("kwargs", {}))
        try:
            grant = await tokens.consume(token, carrier=self.channel)
        except tokens.InvalidToken as exc:
            if not settings.TELEPHONY_ALLOW_UNSIGNED:
                await self.close_socket(CloseCode.FORBIDDEN, f"stream token rejected: {exc}")
                return None
            logger.warning(
                "%s: %s; accepted because TELEPHONY_ALLOW_UNSIGNED=true", self.label, exc
            )
            return await self.unsigned_call(start, token)
        call = await database_sync_to_async(selectors.call_get)(call_id=grant.call_id)
        problem = self.stream_problem(start, grant, call)
        if problem is not None:
            await self.close_socket(CloseCode.FORBIDDEN, f"stream rejected: {problem}")
            return None
        return call

    def stream_problem(
        self, start: wire.Start, grant: tokens.StreamGrant, call: Call | None
    ) -> str | None:
        if start.call_id is not None and start.call_id != grant.call_id:
            return "call id parameter does not match the token"
        if call is None:
            return "unknown call"
        if call.channel != self.channel:
            return "call of another carrier"
        if call.status != CallStatus.RINGING:
            return f"call is {call.status}"
        if call.external_id and call.external_id != start.carrier_call_id:
            return "stream of another carrier call"
        return None

    async def unsigned_call(self, start: wire.Start, token: str) -> Call | None:
        """Development only: attach to the call the stream names, or start a new one."""
        candidate = start.call_id or token.split(".")[0]
        call = None
        with contextlib.suppress(ValueError):
            call = await database_sync_to_async(selectors.call_get)(call_id=uuid.UUID(candidate))
        if (
            call is not None
            and call.channel == self.channel
            and call.status in (CallStatus.RINGING, CallStatus.ACTIVE)
        ):
            return call
        return await database_sync_to_async(services.call_start)(
            profile=None,
            channel=self.channel,
            external_id=start.carrier_call_id,
            status=CallStatus.RINGING,
        )

    # --- ending ----------------------------------------------------------------------------

    async def end_from_session(self, reason: str) -> None:
        """The session is over (transport.close): hang the call up unless the caller did."""
        if self.closing:
            return
        if self.remote_stopped:
            await self.close_socket(CloseCode.NORMAL, reason)
            return
        if self.call_id is not None:
            # Record our reason before hanging up: the carrier's hang-up webhook that our
            # hang-up triggers must not get there first and call it a caller hang-up.
            await database_sync_to_async(services.call_end)(call_id=self.call_id, reason=reason)
        # Let the goodbye play out: its mark comes back once the caller has heard it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MARK_WAIT_S):
                await self.marks_drained.wait()
        await self.hang_up_and_close(CloseCode.NORMAL, reason)

    async def close_with(self, code: CloseCode, reason: str) -> None:
        if self.carrier_call_id:
            await self.hang_up_and_close(code, reason)  # the call is ours: end it at the carrier
        else:
            await self.close_socket(code, reason)  # no call yet (deadline, crash before start)

    async def hang_up_and_close(self, code: CloseCode, reason: str) -> None:
        rest = self.carrier.rest
        if self.carrier_call_id and rest.can_hang_up():
            try:
                async with asyncio.timeout(HANGUP_TIMEOUT_S):
                    ended = await asyncio.to_thread(rest.hang_up, self.carrier_call_id)
                logger.info(
                    "%s call %s hung up via REST%s",
                    self.channel,
                    self.carrier_call_id,
                    "" if ended else " (it had already ended)",
                )
            except REST_ERRORS as exc:
                logger.warning(
                    "%s REST hang-up of %s failed (%r); closing the stream instead",
                    self.channel,
                    self.carrier_call_id,
                    exc,
                )
        elif self.carrier.close_without_rest:
            logger.warning(self.carrier.close_without_rest)
        await self.close_socket(code, reason)
