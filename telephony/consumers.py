"""Carrier media sockets: ``/ws/telephony/twilio/`` and ``/ws/telephony/telnyx/<secret>/``.

One consumer class for both carriers; everything carrier-specific (JSON shapes, where
the stream token travels, the REST hang-up) lives in the stream serializer of
``telephony/twilio.py`` or ``telephony/telnyx.py``.

Flow: ``receive`` parses and acts only on cheap things (decode + resample caller audio
into the session, marks); anything that touches the database goes through ``inbox`` to
the worker task created in ``connect``. The worker checks the stream token on ``start``
(close 4403 before any audio reaches a session), starts the session through
``live.runtime`` and ends it on ``stop``. When the socket goes, ``MediaSocketConsumer``
ends whatever is still running: the call record is ended with a reason in every path.
Close codes: ``live.socket.CloseCode`` (docs/telephony.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from channels.db import database_sync_to_async
from django.conf import settings
from twilio.base.exceptions import TwilioRestException

from calls import selectors, services
from calls.models import Call, CallStatus, Channel
from live.runtime import start_live_call, stop_live_call
from live.socket import CloseCode, MediaSocketConsumer
from orchestrator.audio import StreamResampler, pcm16_to_ulaw, ulaw_to_pcm16
from orchestrator.engines import EngineError
from orchestrator.session import INPUT_SAMPLE_RATE, EndReason
from telephony import links, tokens, wire
from telephony import twilio as twilio_wire
from telephony.telnyx import CallControlError, TelnyxStream
from telephony.twilio import TwilioStream

logger = logging.getLogger(__name__)

PHONE_RATE = 8000  # µ-law: one byte per sample
MAX_PROTOCOL_ERRORS = 50  # bad messages tolerated (logged, ignored) before giving up
MARK_WAIT_S = 1.0  # on agent hang-up: wait this long for the last marks to be played
HANGUP_TIMEOUT_S = 3.0  # the session gives transport.close() 5 s in all
HANGUP_ERRORS = (TwilioRestException, CallControlError, TimeoutError, OSError)


@dataclass(slots=True, kw_only=True, frozen=True)
class MediaFlood:
    """Not a carrier message: ``receive`` telling the worker to cut an abusive stream."""

    error: str


class CarrierTransport:
    """Session output -> carrier messages: 20 ms PCM16 8 kHz frames go out as 160 B µ-law."""

    sample_rate = PHONE_RATE

    def __init__(self, consumer: CarrierConsumer) -> None:
        self.consumer = consumer

    async def send_audio(self, frame: bytes) -> None:
        if not self.consumer.closing:
            await self.consumer.send(text_data=self.consumer.stream.media(pcm16_to_ulaw(frame)))

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


class CarrierConsumer(MediaSocketConsumer):
    channel: ClassVar[str]
    stream_class: ClassVar[type[TwilioStream] | type[TelnyxStream]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream = self.stream_class()
        self.inbox: asyncio.Queue[wire.Inbound | MediaFlood] = asyncio.Queue()
        self.carrier_call_id = ""
        self.started = False  # a start message was received (not necessarily accepted)
        self.closing = False
        self.remote_stopped = False  # the carrier said stop or dropped the socket
        self.protocol_errors = 0
        self.early_media = 0
        self.resampler = StreamResampler(PHONE_RATE, INPUT_SAMPLE_RATE)
        self.pending_marks: set[str] = set()
        self.marks_drained = asyncio.Event()
        self.marks_drained.set()

    async def connect(self) -> None:
        await self.accept()
        self.log_upgrade()
        self.start_worker(self.work(), name=f"{self.channel}-stream-worker")

    async def disconnect(self, code: int) -> None:
        # The session, the worker and the call record are ended by MediaSocketConsumer
        # once the consumer exits (here, or when daphne kills a slow one).
        if not self.closing:
            # Dropped without a stop (network, carrier restart): the caller is gone.
            self.remote_stopped = True
        self.closing = True

    # --- receive: parse, act on cheap things, enqueue the rest ----------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        try:
            messages = self.stream.parse(text_data)
        except wire.ProtocolError as exc:
            self.protocol_error(exc)
            return
        for message in messages:
            self.handle(message)

    def handle(self, message: wire.Inbound) -> None:
        if isinstance(message, wire.Media):
            self.on_media(message.ulaw)
        elif isinstance(message, wire.Mark):
            self.mark_echoed(message.name)
        elif isinstance(message, wire.Start):
            if self.started:
                logger.warning("%s stream: second start ignored", self.channel)
                return
            self.started = True
            self.start_received()
            self.inbox.put_nowait(message)
        elif isinstance(message, wire.Dtmf):
            if self.live is None:
                logger.warning(
                    "%s stream: DTMF %r before the call started, ignored",
                    self.channel,
                    message.digit,
                )
                return
            self.live.session.push_dtmf(message.digit)
            self.inbox.put_nowait(message)  # recorded on the call by the worker
        elif isinstance(message, wire.Stop):
            self.remote_stopped = True
            self.inbox.put_nowait(message)
        elif isinstance(message, wire.CarrierError):
            logger.warning("%s stream error %s: %s", self.channel, message.code, message.detail)
        elif isinstance(message, wire.Ignored):
            logger.debug("%s stream: ignored (%s)", self.channel, message.reason)

    def on_media(self, ulaw: bytes) -> None:
        if not self.audio_allowed(len(ulaw) / PHONE_RATE):
            return
        if self.live is None:
            # Before start, or while the token is being checked: never processed.
            self.early_media += 1
            if self.early_media == 1 and not self.started:
                logger.warning("%s stream: media before start, ignored", self.channel)
            return
        self.live.session.push_audio(self.resampler.process(ulaw_to_pcm16(ulaw)))

    def protocol_error(self, exc: wire.ProtocolError) -> None:
        self.protocol_errors += 1
        if exc.fatal or self.protocol_errors <= 5:
            logger.warning(
                "%s stream: bad message%s: %s", self.channel, "" if exc.fatal else " ignored", exc
            )
        if exc.fatal:
            self.inbox.put_nowait(wire.CarrierError(code="protocol", detail=str(exc)))
        elif self.protocol_errors == MAX_PROTOCOL_ERRORS:
            self.inbox.put_nowait(
                wire.CarrierError(code="protocol", detail=f"{self.protocol_errors} bad messages")
            )

    def flood_detected(self, error: str) -> None:
        self.inbox.put_nowait(MediaFlood(error=error))

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

    async def work(self) -> None:
        while True:
            message = await self.inbox.get()
            if isinstance(message, wire.Start):
                await self.begin(message)
            elif isinstance(message, wire.Dtmf) and self.call_id is not None:
                await database_sync_to_async(services.call_record_dtmf)(
                    call_id=self.call_id, digit=message.digit
                )
            elif isinstance(message, wire.Stop):
                logger.info("%s stream: caller hung up (stop)", self.channel)
                if self.live is not None:
                    await stop_live_call(self.live, EndReason.CALLER_HANGUP)
                await self.close_socket(CloseCode.NORMAL, EndReason.CALLER_HANGUP)
                return
            elif isinstance(message, wire.CarrierError):
                # Only our own protocol verdicts get here; the carrier's "error" events are logged.
                await self.hang_up_and_close(
                    CloseCode.BAD_REQUEST, f"protocol error: {message.detail}"
                )
                return
            elif isinstance(message, MediaFlood):
                await self.end_flooded_call(message.error)
                return

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
        try:
            self.live = await start_live_call(
                call_id=self.call_id,
                profile=profile,
                channel=self.channel,
                transport=CarrierTransport(self),
            )
        except EngineError as exc:  # the call record was ended with "error" by start_live_call
            await self.hang_up_and_close(CloseCode.INTERNAL, f"engine setup failed: {exc}")
            return
        logger.info("%s stream %s: call %s live", self.channel, start.stream_id, self.call_id)

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
                "%s stream: %s; accepted because TELEPHONY_ALLOW_UNSIGNED=true", self.channel, exc
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
        if start.custom_parameters.get(twilio_wire.PARAM_CALL_ID, grant.call_id) != grant.call_id:
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
        candidate = start.custom_parameters.get(twilio_wire.PARAM_CALL_ID) or token.split(".")[0]
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
        if self.carrier_call_id and self.stream.can_hang_up():
            try:
                async with asyncio.timeout(HANGUP_TIMEOUT_S):
                    ended = await asyncio.to_thread(self.stream.hang_up, self.carrier_call_id)
                logger.info(
                    "%s call %s hung up via REST%s",
                    self.channel,
                    self.carrier_call_id,
                    "" if ended else " (it had already ended)",
                )
            except HANGUP_ERRORS as exc:
                logger.warning(
                    "%s REST hang-up of %s failed (%r); closing the stream instead",
                    self.channel,
                    self.carrier_call_id,
                    exc,
                )
        elif self.channel == Channel.TELNYX:
            logger.warning(
                "TELNYX_API_KEY unset: closing the stream; the call stays up until the caller "
                "hangs up"
            )
        await self.close_socket(code, reason)

    async def close_socket(self, code: CloseCode, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        log = logger.info if code == CloseCode.NORMAL else logger.warning
        log("%s stream closed (%d): %s", self.channel, code, reason)
        with contextlib.suppress(Exception):  # the socket may already be gone; nothing to tell it
            await self.close(code=int(code), reason=reason[:120])

    def log_upgrade(self) -> None:
        """Twilio may sign the upgrade; evidence conflicts (PROTOCOLS.md §1.5), so log only."""
        if self.channel != Channel.TWILIO:
            return
        headers = dict(self.scope.get("headers") or [])
        signature = headers.get(b"x-twilio-signature", b"").decode("latin-1")
        if not signature:
            logger.info("twilio stream upgrade: no x-twilio-signature header")
            return
        url = links.ws_url(self.scope.get("path", links.TWILIO_STREAM_PATH))
        valid = twilio_wire.signature_valid(url, {}, signature)
        logger.info(
            "twilio stream upgrade: x-twilio-signature %s over %s",
            "valid" if valid else "INVALID",
            url,
        )


class TwilioStreamConsumer(CarrierConsumer):
    channel = Channel.TWILIO
    stream_class = TwilioStream


class TelnyxStreamConsumer(CarrierConsumer):
    channel = Channel.TELNYX
    stream_class = TelnyxStream
