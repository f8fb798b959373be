"""The simulator socket owns its call too: killed, idle or flooded, the call ends right.

No speech needed: the scripted engines and silence are enough to exercise the socket.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from calls.models import Call, CallStatus, EndReason
from live import runtime as live_calls
from simulator.consumers import SimulatorConsumer
from tests.scripted import scripted_profile

pytestmark = pytest.mark.django_db(transaction=True)

FRAME = b"\x00\x00" * 320  # 20 ms of PCM16 16 kHz silence
GREETING = "Hello, this is Casa Lola. " + "We open every day from noon until midnight. " * 4


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="sim", password="x-pw-12345", is_staff=True
    )


async def connect(user) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(SimulatorConsumer.as_asgi(), "/ws/simulator/")
    ws.scope["user"] = user
    connected, _ = await ws.connect()
    assert connected
    return ws


async def next_event(ws: WebsocketCommunicator, timeout: float = 15) -> dict:
    output = await ws.receive_output(timeout)
    if output["type"] == "websocket.close":
        return {"type": "close", "code": output.get("code"), "reason": output.get("reason", "")}
    if output.get("bytes") is not None:
        return {"type": "binary"}
    return json.loads(output["text"])


async def until(ws: WebsocketCommunicator, predicate, *, timeout: float = 30) -> list[dict]:
    seen: list[dict] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await next_event(ws, timeout)
            seen.append(event)
            if predicate(event) or event["type"] == "close":
                return seen


async def start_call(ws: WebsocketCommunicator) -> str:
    await ws.send_json_to({"event": "start", "profile": "scripted", "audio": "binary"})
    started = await until(ws, lambda e: e["type"] == "started")
    return started[-1]["call_id"]


async def ended(call_id: str, *, timeout: float = 20) -> Call:
    async with asyncio.timeout(timeout):
        while (call := await database_sync_to_async(Call.objects.get)(pk=call_id)).ended_at is None:
            await asyncio.sleep(0.05)
    return call


async def test_a_simulator_socket_killed_by_the_server_ends_its_call_as_a_caller_hangup(staff):
    await database_sync_to_async(scripted_profile)(greeting=GREETING)
    ws = await connect(staff)
    call_id = await start_call(ws)
    session = live_calls.ACTIVE[call_id]
    # daphne, once a gone client's application outlives its close timeout: cancel it
    # (no disconnect), and again a moment later.
    ws.future.cancel()
    await asyncio.sleep(0.2)
    ws.future.cancel()
    done, _ = await asyncio.wait([ws.future], timeout=30)
    assert done and session.done
    call = await ended(call_id)
    assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.CALLER_HANGUP)


async def test_a_simulator_socket_that_never_starts_a_call_is_closed_4408(staff, settings):
    settings.MEDIA_SOCKET_START_TIMEOUT_SECONDS = 0.5
    ws = await connect(staff)
    events = await until(ws, lambda e: False, timeout=15)
    assert events[-1] == {"type": "close", "code": 4408, "reason": "no start within 0.5 s"}
    assert events[0] == {"type": "error", "message": "no start within 0.5 s"}
    await ws.disconnect()


async def test_a_simulator_flooding_audio_is_cut_off_4429_and_its_call_ends_with_error(
    staff, settings
):
    settings.MEDIA_BURST_SECONDS = 1.0
    settings.MEDIA_MAX_SPEED = 2.0
    await database_sync_to_async(scripted_profile)(greeting=GREETING)
    ws = await connect(staff)
    call_id = await start_call(ws)
    for _ in range(60):  # 12 s of audio in ~0.6 s of wall time
        for _ in range(10):
            await ws.send_to(bytes_data=FRAME)
        await asyncio.sleep(0.01)
    events = await until(ws, lambda e: False)
    await ws.disconnect()
    close = events[-1]
    assert close["code"] == 4429 and "real time" in close["reason"]
    assert any(e["type"] == "error" and "real time" in e["message"] for e in events)
    call = await ended(call_id)
    assert (call.status, call.end_reason) == (CallStatus.FAILED, EndReason.ERROR)
    assert "real time" in call.error_detail
