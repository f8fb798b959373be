"""A carrier media socket owns its call: killed, idle, crowded or flooded, the call ends right.

In-process (``WebsocketCommunicator``) with the scripted engines; no speech needed. The
process-level versions (real daphne, close frames on the wire, a Redis kill) are in
test_socket_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from calls.models import Call, CallStatus, EndReason
from live import runtime as live_calls
from live import socket as media_socket
from tests.scripted import scripted_profile
from tests.telephony.test_streams import ULAW_FRAME, Twilio, next_message, until
from voiceapp.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("calls_allowed")]

LONG_GREETING = (
    "Hello, this is Casa Lola. " + "We are open every day from noon until midnight. " * 4
)
SILENCE = b"\xff" * ULAW_FRAME  # µ-law silence, 20 ms


async def load_call(call_id: str) -> Call:
    return await database_sync_to_async(Call.objects.get)(pk=call_id)


async def ended(call_id: str, *, timeout: float = 20) -> Call:
    async with asyncio.timeout(timeout):
        while (call := await load_call(call_id)).ended_at is None:
            await asyncio.sleep(0.05)
    return call


@contextlib.asynccontextmanager
async def open_socket(path: str = Twilio.PATH):
    ws = WebsocketCommunicator(application, path)
    connected, _ = await ws.connect()
    assert connected
    try:
        yield ws
    finally:
        if not ws.future.done():
            await ws.disconnect()


async def live_twilio_call(ws: WebsocketCommunicator) -> tuple[str, Twilio]:
    call_sid, parameters = await Twilio.ring()
    twilio = Twilio(ws, call_sid)
    await twilio.start(parameters)
    await until(ws, lambda m: m["event"] == "media")  # the greeting is playing
    return parameters["call_id"], twilio


async def test_a_socket_application_killed_by_the_server_ends_its_session_as_a_caller_hangup():
    await database_sync_to_async(scripted_profile)(greeting=LONG_GREETING)
    async with open_socket() as ws:
        call_id, _ = await live_twilio_call(ws)
        session = live_calls.ACTIVE[call_id]
        # What daphne does once a gone client's application outlives its close timeout:
        # cancel the application (never calling disconnect), and again every second.
        ws.future.cancel()
        await asyncio.sleep(0.2)
        ws.future.cancel()
        done, _ = await asyncio.wait([ws.future], timeout=30)
        assert done, "the application did not finish its clean-up"

        assert session.done, "the session outlived its socket"
        assert call_id not in live_calls.ACTIVE
    call = await ended(call_id)
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.CALLER_HANGUP)


async def test_a_socket_that_sends_no_start_is_closed_4408_after_the_deadline(settings):
    settings.MEDIA_SOCKET_START_TIMEOUT_SECONDS = 0.5
    async with open_socket() as ws:
        await ws.send_json_to({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        opened = time.monotonic()
        closed = await until(ws, lambda m: False, timeout=15)
        waited = time.monotonic() - opened
    assert closed == [{"event": "_close", "code": 4408, "reason": "no start within 0.5 s"}]
    assert waited >= 0.4
    assert media_socket.waiting_sockets() == 0


async def test_the_start_deadline_does_not_touch_a_call_that_started(settings):
    settings.MEDIA_SOCKET_START_TIMEOUT_SECONDS = 0.3
    await database_sync_to_async(scripted_profile)(greeting=LONG_GREETING)
    async with open_socket() as ws:
        call_id, twilio = await live_twilio_call(ws)
        await asyncio.sleep(0.6)
        messages = await until(ws, lambda m: m["event"] == "media")
        assert messages[-1]["event"] == "media"
        await twilio.stop()
        closed = await until(ws, lambda m: False)
        assert closed[-1]["code"] == 1000
    assert (await ended(call_id)).end_reason == EndReason.CALLER_HANGUP


async def test_sockets_beyond_the_waiting_bound_are_refused_with_4503(settings):
    settings.MEDIA_SOCKETS_MAX_WAITING = 2
    async with open_socket() as first, open_socket() as second:
        async with open_socket() as third:
            assert await next_message(third, timeout=5) == {
                "event": "_close",
                "code": 4503,
                "reason": "busy: too many waiting",
            }
        assert await first.receive_nothing(0.2) and await second.receive_nothing(0.01)
    # Their slots are free again once they have gone.
    async with open_socket() as again:
        assert await again.receive_nothing(0.3)
    assert media_socket.waiting_sockets() == 0


async def test_a_caller_streaming_ten_times_faster_than_real_time_is_cut_off_with_4429(settings):
    settings.MEDIA_BURST_SECONDS = 2.0
    settings.MEDIA_MAX_SPEED = 2.0
    await database_sync_to_async(scripted_profile)(greeting=LONG_GREETING)
    async with open_socket() as ws:
        call_id, twilio = await live_twilio_call(ws)
        session = live_calls.ACTIVE[call_id]
        sent_s = 0.0
        closed: dict | None = None
        # 200 ms of audio every 20 ms of wall time, for up to 30 s of audio.
        while sent_s < 30 and closed is None:
            for _ in range(10):
                await twilio.media(SILENCE)
            sent_s += 0.2
            await asyncio.sleep(0.02)
            while not await ws.receive_nothing(0.001):
                message = await next_message(ws)
                if message["event"] == "_close":
                    closed = message
        if closed is None:
            closed = (await until(ws, lambda m: False))[-1]
    assert closed["code"] == 4429 and "real time" in closed["reason"]
    assert sent_s < 15, f"{sent_s:.1f} s of audio accepted before the cut"
    assert session.done
    call = await ended(call_id)
    assert (call.status, call.end_reason) == (CallStatus.FAILED, EndReason.ERROR)
    assert "real time" in call.error_detail and "limit is 2x" in call.error_detail


async def test_a_caller_streaming_in_real_time_is_never_cut_off(settings):
    settings.MEDIA_BURST_SECONDS = 0.5
    settings.MEDIA_MAX_SPEED = 2.0
    await database_sync_to_async(scripted_profile)(greeting=LONG_GREETING)
    async with open_socket() as ws:
        call_id, twilio = await live_twilio_call(ws)
        started = time.monotonic()
        for i in range(100):  # 2 s of audio, paced by the wall clock (never ahead of it)
            await twilio.media(SILENCE)
            ahead = started + (i + 1) * 0.02 - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
        messages = await until(ws, lambda m: m["event"] == "media")
        assert messages[-1]["event"] == "media"
        await twilio.stop()
        assert (await until(ws, lambda m: False))[-1]["code"] == 1000
    assert (await ended(call_id)).end_reason == EndReason.CALLER_HANGUP
