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

Transfer (``CarrierTransport.transfer``): the carrier REST call hands the caller to a
person; the record is ended ``transferred`` at once, the call is *not* hung up, and the
stream ends without counting as a caller hang-up. Answering-machine detection: while the
session waits for a verdict, the consumer polls the stored one (telephony/amd.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError

from calls import selectors, services
from calls.models import Call, CallStatus
from live.runtime import LiveCall, stop_live_call
from live.socket import CallSocket, CloseCode
from orchestrator.session import EndReason
from telephony import amd, tokens, wire
from telephony.carriers import REST_ERRORS, Carrier

logger = logging.getLogger(__name__)

MAX_PROTOCOL_ERRORS = 50  # bad messages tolerated (logged, ignored) before giving up
LOGGED_PROTOCOL_ERRORS = 5  # the first few ignored bad messages are logged, then counted only
MARK_WAIT_S = 1.0  # on agent hang-up: wait this long for the last marks to be played
HANGUP_TIMEOUT_S = 3.0  # the session gives transport.close() 5 s in all
# The carrier's REST transfer request. The session guards the whole transfer with a larger
# timeout of its own; this one decides "the carrier did not take it" (and bounds the HTTP
# request in its thread, so a late answer cannot transfer a call we called failed).
TRANSFER_TIMEOUT_S = 5.0
# After a transfer the carrier ends the stream itself (Twilio: the new TwiML replaced
# <Connect>; Telnyx: streaming_stop); we close it ourselves after this long.
TRANSFER_STOP_WAIT_S = 1.5


class TransferFailed(Exception):
    """The carrier did not take the transfer: the call goes on with the agent."""


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

    async def transfer(self, destination: str) -> None:
        """Cold transfer to ``destination`` (E.164 or SIP URI, already checked against the
        profile's list by the session). Returns once the carrier took it; raises
        :class:`TransferFailed` otherwise (the call goes on)."""
        await self.consumer.transfer(destination)

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
        self.stream_ended = asyncio.Event()  # the carrier said stop, or the socket dropped
        self.caller_id = ""  # the number a transfer presents ("": the carrier's default)
        self.transfer_state = ""  # "", "pending", "done" or "failed"
        self.transfer_settled = asyncio.Event()
        self.transferred_to = ""
        self.answer_watch: asyncio.Task[None] | None = None

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
            self.stream_ended.set()
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
            if await self.stopped_by_transfer():
                return
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
        # A transfer of an outbound call presents our own number (the default, the called
        # person's, would be refused as spoofed); an inbound one keeps the carrier's default.
        self.caller_id = call.from_number if call.direction == "outbound" else ""
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
        live = await self.go_live(
            profile=profile, channel=self.channel, transport=CarrierTransport(self)
        )
        if live is None:
            return
        logger.info("%s %s: call %s live", self.label, start.stream_id, self.call_id)
        if live.config.await_answer:
            self.answer_watch = asyncio.create_task(
                self.watch_answer(live), name=f"answer-watch-{self.call_id}"
            )

    async def watch_answer(self, live: LiveCall) -> None:
        """Poll the stored answering-machine verdict while the session waits for it.

        The carrier's webhook may land in another process (telephony/amd.py); one that came
        before the stream is found by the first read. Stops once the session has a verdict,
        the call is over or ``answer_wait_s`` has passed (the session went ahead alone)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + live.config.answer_wait_s
        read = database_sync_to_async(selectors.call_answered_by)
        while live.answered is None and not live.done and loop.time() < give_up:
            try:
                stored = await read(call_id=live.call_id)
            except DatabaseError as exc:  # a database blip: the next read may work
                logger.warning("%s: answering-machine verdict unreadable: %r", self.label, exc)
                stored = ""
            told = amd.verdict(stored, action=live.config.voicemail_action)
            if told is not None:
                live.answer(told)
                return
            await asyncio.sleep(amd.ANSWER_POLL_S)

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

    # --- transfer ----------------------------------------------------------------------------

    async def transfer(self, destination: str) -> None:
        rest = self.carrier.rest
        if self.closing or self.remote_stopped or not self.carrier_call_id or not self.call_id:
            raise TransferFailed("the call is over")
        if not rest.can_hang_up():
            raise TransferFailed(f"{self.carrier.label} REST credentials are not set")
        if self.transfer_state in ("pending", "done"):
            raise TransferFailed("a transfer is already under way")
        self.transfer_state = "pending"
        self.transfer_settled.clear()
        taken = False
        try:
            async with asyncio.timeout(TRANSFER_TIMEOUT_S + 1.0):
                await asyncio.to_thread(
                    rest.transfer,
                    self.carrier_call_id,
                    destination,
                    call_id=self.call_id,
                    caller_id=self.caller_id,
                    timeout_s=TRANSFER_TIMEOUT_S,
                )
            taken = True
        except REST_ERRORS as exc:
            logger.warning(
                "%s transfer of %s to %s failed: %r",
                self.channel,
                self.carrier_call_id,
                destination,
                exc,
            )
            raise TransferFailed(f"{self.carrier.label} did not take the transfer: {exc}") from exc
        finally:
            # Also when the session's own guard cancelled us: whoever waits learns the end.
            self.transfer_state = "done" if taken else "failed"
            if taken:
                self.transferred_to = destination
            self.transfer_settled.set()
        logger.info("%s call %s transferred to %s", self.channel, self.carrier_call_id, destination)
        try:
            # Recorded now: the stream's end (Twilio's stop comes at once) or the carrier's
            # hang-up webhook must not get there first and call it a caller hang-up.
            await database_sync_to_async(services.call_end)(
                call_id=self.call_id, reason=EndReason.TRANSFERRED, transferred_to=destination
            )
        except DatabaseError as exc:  # the transfer happened; the recorder retries the end
            logger.error("%s: transfer of call %s not recorded: %r", self.label, self.call_id, exc)

    async def stopped_by_transfer(self) -> bool:
        """A ``stop`` a transfer caused (the carrier ends the stream of a transferred call):
        the session ends as transferred, not as a caller hang-up."""
        if not self.transfer_state:
            return False
        await self.transfer_settled.wait()  # bounded by the transfer's own timeout
        if self.transfer_state != "done":
            return False
        logger.info("%s: stream ended by the transfer to %s", self.label, self.transferred_to)
        if self.live is not None:
            await stop_live_call(self.live, EndReason.TRANSFERRED)
        await self.close_socket(CloseCode.NORMAL, EndReason.TRANSFERRED)
        return True

    async def end_after_transfer(self) -> None:
        """The caller is with a person now: end our part of the call without hanging up."""
        if self.call_id is not None:
            await database_sync_to_async(services.call_end)(
                call_id=self.call_id,
                reason=EndReason.TRANSFERRED,
                transferred_to=self.transferred_to,
            )
        if not self.remote_stopped:
            try:
                async with asyncio.timeout(HANGUP_TIMEOUT_S):
                    await asyncio.to_thread(self.carrier.rest.release_stream, self.carrier_call_id)
            except REST_ERRORS as exc:
                logger.warning(
                    "%s: stopping the stream of transferred call %s failed (%r); closing it",
                    self.label,
                    self.carrier_call_id,
                    exc,
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TRANSFER_STOP_WAIT_S):
                    await self.stream_ended.wait()
        await self.close_socket(CloseCode.NORMAL, EndReason.TRANSFERRED)

    # --- ending ----------------------------------------------------------------------------

    async def end_from_session(self, reason: str) -> None:
        """The session is over (transport.close): hang the call up unless the caller did,
        or the call was transferred (the caller is talking to a person)."""
        if self.closing:
            return
        if self.transfer_state == "done":
            # Whatever else was asked meanwhile, the caller is with a person now: never
            # hang up (the session also ends as transferred in that case).
            await self.end_after_transfer()
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

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        self.stream_ended.set()

    async def release(self) -> None:
        """Also on a socket that dropped mid-transfer: a transfer the carrier took ends the
        session as transferred, not as a caller hang-up."""
        if self.answer_watch is not None:
            self.answer_watch.cancel()
            for outcome in await asyncio.gather(self.answer_watch, return_exceptions=True):
                if isinstance(outcome, Exception):
                    logger.error("%s: answer watch failed: %r", self.label, outcome)
        if self.transfer_state and self.live is not None and not self.live.done:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TRANSFER_TIMEOUT_S + 2.0):
                    await self.transfer_settled.wait()
            if self.transfer_state == "done":
                await stop_live_call(
                    self.live,
                    EndReason.TRANSFERRED,
                    timeout=settings.MEDIA_SOCKET_STOP_TIMEOUT_SECONDS,
                )
        await super().release()

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
