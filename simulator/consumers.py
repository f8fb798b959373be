"""WebSocket ``/ws/simulator/``: talk to an agent profile from the browser.

Wire format (kept from the seed so older clients work):
client -> server  {"event": "start", "profile": "<slug>", "channel": "browser"}
                  {"event": "media", "media": {"payload": "<base64 PCM16 16 kHz>"}}
                  binary frames of raw PCM16 16 kHz mono (cheaper than base64)
                  {"event": "stop"}
server -> client  {"type": "audio", "data": "<base64>", "sample_rate": N} (binary when the
                  client asked for it with "audio": "binary" in start), "transcript", "clear",
                  "state", "metrics", "started", "ended", "error" messages.

Close codes: ``live.socket.CloseCode`` (docs/simulator.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async

from calls import global_stop, selectors, services
from calls.models import Channel
from live.runtime import start_live_call, stop_live_call
from live.socket import CloseCode, MediaSocketConsumer
from orchestrator.audio import pcm16_to_ulaw, ulaw_to_pcm16
from orchestrator.engines import EngineError
from orchestrator.session import EndReason

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
INPUT_BYTES_PER_SECOND = 16000 * 2  # caller audio is PCM16 16 kHz mono


class BrowserTransport:
    """Session output -> browser messages. Phone channels are emulated at 8 kHz through µ-law."""

    def __init__(self, consumer: SimulatorConsumer, *, channel: str, binary_audio: bool) -> None:
        self.consumer = consumer
        self.phone = channel in (Channel.TWILIO, Channel.TELNYX)
        self.sample_rate = 8000 if self.phone else 16000
        self.binary_audio = binary_audio
        self.closed = False

    async def send_audio(self, frame: bytes) -> None:
        if self.closed:
            return
        if self.phone:
            frame = ulaw_to_pcm16(pcm16_to_ulaw(frame))  # what a caller hears on a G.711 line
        if self.binary_audio:
            await self.consumer.send(bytes_data=frame)
        else:
            await self.consumer.send_json(
                {
                    "type": "audio",
                    "data": base64.b64encode(frame).decode(),
                    "sample_rate": self.sample_rate,
                }
            )

    async def clear_audio(self) -> None:
        await self.consumer.send_json({"type": "clear"})

    async def send_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "mark":
            return  # carrier playback marks mean nothing to the browser
        await self.consumer.send_json(event)

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        await self.consumer.finish(reason)


class SimulatorConsumer(MediaSocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.finished = False
        self.ended_sent = False

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.fail(
                "authentication required: log in to the admin first", CloseCode.UNAUTHENTICATED
            )
            return
        if not user.is_staff:
            await self.fail("staff access required", CloseCode.FORBIDDEN)
            return
        if not await database_sync_to_async(global_stop.calls_allowed)():
            await self.fail(
                "calls are globally stopped after repeated errors; an operator must reset them",
                CloseCode.UNAVAILABLE,
            )
            return
        self.start_worker(self.work(), name="simulator-worker")

    async def disconnect(self, code: int) -> None:
        # The session, the worker and the call record are ended by MediaSocketConsumer
        # once the consumer exits (here, or when daphne kills a slow one).
        self.finished = True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Parse and enqueue only: long work here would block this socket's next message.
        if self.finished or self.worker is None:
            return
        if bytes_data is not None:
            if len(bytes_data) > MAX_FRAME_BYTES:
                await self.fail(
                    f"frame of {len(bytes_data)} bytes exceeds 64 KB", CloseCode.TOO_LARGE
                )
                return
            self.push_audio(bytes_data)
            return
        if text_data is None:
            return
        if len(text_data) > MAX_FRAME_BYTES * 2:
            await self.fail("message exceeds the size limit", CloseCode.TOO_LARGE)
            return
        try:
            message = json.loads(text_data)
        except json.JSONDecodeError:
            await self.send_error("invalid JSON")
            return
        if not isinstance(message, dict):
            await self.send_error("messages must be JSON objects")
            return
        event = message.get("event")
        if event == "media":
            payload = (
                (message.get("media") or {}).get("payload")
                if isinstance(message.get("media"), dict)
                else None
            )
            if not isinstance(payload, str):
                await self.send_error("media.payload must be a base64 string")
                return
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                await self.send_error("media.payload is not valid base64")
                return
            if len(audio) > MAX_FRAME_BYTES:
                await self.fail("media frame exceeds 64 KB", CloseCode.TOO_LARGE)
                return
            self.push_audio(audio)
        elif event in ("start", "stop"):
            if event == "start":
                self.start_received()
            self.inbox.put_nowait(message)
        else:
            await self.send_error(f"unknown event {event!r}")

    def push_audio(self, audio: bytes) -> None:
        if not self.audio_allowed(len(audio) / INPUT_BYTES_PER_SECOND):
            return
        if self.live is None:
            self.inbox.put_nowait({"event": "_early_media"})
            return
        if len(audio) % 2:
            self.inbox.put_nowait({"event": "_odd_media", "size": len(audio)})
            return
        self.live.session.push_audio(audio)

    def flood_detected(self, error: str) -> None:
        self.inbox.put_nowait({"event": "_flood", "error": error})

    async def work(self) -> None:
        while not self.finished:
            message = await self.inbox.get()
            event = message["event"]
            if event == "start":
                await self.start_call(message)
            elif event == "stop":
                if self.live is None:
                    await self.finish("caller_hangup")
                    return
                await stop_live_call(self.live, EndReason.CALLER_HANGUP)
            elif event == "_flood":
                await self.end_flooded_call(message["error"])
                return
            elif event == "_early_media":
                await self.send_error("media before start: send a start event first")
            elif event == "_odd_media":
                await self.send_error(
                    f"audio must be whole 16-bit samples (got {message['size']} bytes)"
                )

    async def start_call(self, message: dict[str, Any]) -> None:
        if self.live is not None:
            await self.send_error("call already started")
            return
        slug = message.get("profile") or ""
        channel = message.get("channel") or Channel.BROWSER
        if not isinstance(slug, str) or channel not in Channel.values:
            await self.fail(
                f"bad start: channel must be one of {', '.join(Channel.values)}",
                CloseCode.BAD_REQUEST,
            )
            return
        try:
            profile = await database_sync_to_async(selectors.profile_get)(slug=slug or None)
        except selectors.ProfileNotFound:
            await self.fail(f"unknown profile {slug!r}", CloseCode.NOT_FOUND)
            return
        call = await database_sync_to_async(services.call_start)(
            profile=profile,
            channel=channel,
            # Not the channel name: media sockets have none (no channel layer).
            external_id=f"sim-{uuid.uuid4().hex[:12]}",
        )
        self.call_id = str(call.id)
        transport = BrowserTransport(
            self, channel=channel, binary_audio=message.get("audio") == "binary"
        )
        try:
            self.live = await start_live_call(
                call_id=self.call_id, profile=profile, channel=channel, transport=transport
            )
        except EngineError as exc:
            await self.fail(f"engine setup failed: {exc}", CloseCode.INTERNAL)
            return
        await self.send_json(
            {
                "type": "started",
                "call_id": self.call_id,
                "profile": profile.slug,
                "channel": channel,
                "sample_rate": transport.sample_rate,
            }
        )

    async def finish(self, reason: str) -> None:
        """The session ended (or never started): tell the page why, then close."""
        if self.ended_sent:
            return
        self.ended_sent = True
        self.finished = True
        with contextlib.suppress(Exception):
            await self.send_json({"type": "ended", "reason": reason, "call_id": self.call_id})
            code = CloseCode.INTERNAL if reason == EndReason.ERROR else CloseCode.NORMAL
            await self.close(code=int(code), reason=reason[:120])

    async def close_with(self, code: CloseCode, reason: str) -> None:
        await self.fail(reason, code)

    async def fail(self, message: str, code: CloseCode) -> None:
        if self.ended_sent:
            return  # already closed: nothing more to tell the page
        logger.warning("simulator socket closed (%d): %s", code, message)
        await self.send_error(message)
        self.finished = True
        self.ended_sent = True
        with contextlib.suppress(Exception):
            await self.close(code=int(code), reason=message[:120])

    async def send_error(self, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.send_json({"type": "error", "message": message})

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(data, ensure_ascii=False))
