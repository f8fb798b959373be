"""WebSocket ``/ws/simulator/``: talk to an agent profile from the browser.

Wire format (kept from the seed so older clients work):
client -> server  {"event": "start", "profile": "<slug>", "channel": "browser"}
                  {"event": "media", "media": {"payload": "<base64 PCM16 16 kHz>"}}
                  binary frames of raw PCM16 16 kHz mono (cheaper than base64)
                  {"event": "stop"}
server -> client  {"type": "audio", "data": "<base64>", "sample_rate": N} (binary when the
                  client asked for it with "audio": "binary" in start), "transcript", "clear",
                  "state", "metrics", "started", "ended", "error" messages (with the
                  "call_id" once the call exists), and
                  {"type": "transfer", "destination": "<E.164 or SIP URI>"} when the agent
                  transfers the call (simulated: the call then ends as "transferred").

The life cycle every media socket shares (worker, start deadline, audio budget, ending the
call in every path) is ``live.socket.CallSocket``; this consumer only speaks the page's
protocol. Close codes: ``live.socket.CloseCode`` (docs/simulator.md).
"""

from __future__ import annotations

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
from live.socket import CallSocket, CloseCode
from orchestrator.audio import pcm16_to_ulaw, ulaw_to_pcm16
from orchestrator.session import INPUT_SAMPLE_RATE, EndReason

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024


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

    async def transfer(self, destination: str) -> None:
        """A browser cannot be handed to a phone: the page is told where the call would have
        gone (``{"type": "transfer", "destination": …}``) and the transfer counts as done, so
        the agent's transfer flow can be tried here. The session then ends the call
        (``ended`` with reason ``transferred``, close 1000)."""
        if self.closed:
            raise RuntimeError("the simulator call is over")
        await self.consumer.send_json({"type": "transfer", "destination": destination})

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        await self.consumer.finish(reason)


class SimulatorConsumer(CallSocket):
    label = "simulator socket"

    async def admit(self) -> bool:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.fail(
                "authentication required: log in to the admin first", CloseCode.UNAUTHENTICATED
            )
            return False
        if not user.is_staff:
            await self.fail("staff access required", CloseCode.FORBIDDEN)
            return False
        if not await database_sync_to_async(global_stop.calls_allowed)():
            await self.fail(
                "calls are globally stopped after repeated errors; an operator must reset them",
                CloseCode.UNAVAILABLE,
            )
            return False
        return True

    async def on_message(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if bytes_data is not None:
            if len(bytes_data) > MAX_FRAME_BYTES:
                await self.fail(
                    f"frame of {len(bytes_data)} bytes exceeds 64 KB", CloseCode.TOO_LARGE
                )
                return
            self.caller_audio(bytes_data, sample_rate=INPUT_SAMPLE_RATE)
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
            self.caller_audio(audio, sample_rate=INPUT_SAMPLE_RATE)
        elif event in ("start", "stop"):
            if event == "start":
                self.start_received()
            self.inbox.put_nowait(message)
        else:
            await self.send_error(f"unknown event {event!r}")

    def audio_before_start(self) -> None:
        self.inbox.put_nowait(
            {"event": "_error", "message": "media before start: send a start event first"}
        )

    def audio_refused(self, error: str) -> None:
        self.inbox.put_nowait({"event": "_error", "message": error})

    async def on_queued(self, message: dict[str, Any]) -> None:
        event = message["event"]
        if event == "start":
            await self.start_call(message)
        elif event == "stop":
            if not await self.caller_hung_up():
                await self.finish("caller_hangup")
        elif event == "_error":
            await self.send_error(message["message"])

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
        if await self.go_live(profile=profile, channel=channel, transport=transport) is None:
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
        if self.closing:
            return
        with contextlib.suppress(Exception):
            await self.send_json({"type": "ended", "reason": reason, "call_id": self.call_id})
        code = CloseCode.INTERNAL if reason == EndReason.ERROR else CloseCode.NORMAL
        await self.close_socket(code, reason)

    async def close_with(self, code: CloseCode, reason: str) -> None:
        await self.fail(reason, code)

    async def fail(self, message: str, code: CloseCode) -> None:
        if self.closing:
            return  # already closed: nothing more to tell the page
        await self.send_error(message)
        await self.close_socket(code, message)

    async def send_error(self, message: str) -> None:
        error: dict[str, Any] = {"type": "error", "message": message}
        if self.call_id:
            # Once the call exists: a client refused after it (busy, engines) can still
            # find its record (the scenario runner reads it).
            error["call_id"] = self.call_id
        with contextlib.suppress(Exception):
            await self.send_json(error)

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(data, ensure_ascii=False))
