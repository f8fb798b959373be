"""Nothing lost when the server process stops: SIGTERM says goodbye, SIGKILL leaves an orphan
that the sweeper ends, with every turn spoken before the kill already stored."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async as sync_to_async
from websockets.asyncio.client import connect

from calls.models import Call, EndReason, Turn
from calls.services import calls_sweep_orphaned
from tests.scripted import scripted_profile
from tests.server_process import DaphneServer, session_cookie_for
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]


@pytest.fixture
def server():
    srv = DaphneServer(SHUTDOWN_GRACE_SECONDS="6")
    yield srv
    srv.stop()


@pytest.fixture
def cookie(django_user_model):
    user = django_user_model.objects.create_user(
        username="ops", password="x-pw-12345", is_staff=True
    )
    return session_cookie_for(user)


async def _recv(ws, timeout=30):
    message = await asyncio.wait_for(ws.recv(), timeout)
    return (
        {"type": "binary", "size": len(message)}
        if isinstance(message, bytes)
        else json.loads(message)
    )


async def _until(ws, predicate, timeout=30):
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            event = await _recv(ws, timeout)
            seen.append(event)
            if predicate(event):
                return seen


async def _one_turn(ws) -> str:
    await ws.send(json.dumps({"event": "start", "profile": "scripted", "audio": "binary"}))
    call_id = (await _until(ws, lambda e: e["type"] == "started"))[-1]["call_id"]
    audio = speech_pcm16("I would like to book a table for two.") + silence_pcm16(900)
    for i in range(0, len(audio), 640):
        await ws.send(audio[i : i + 640])
        await asyncio.sleep(0.002)
    await _until(ws, lambda e: e["type"] == "metrics")  # the reply has been spoken
    return call_id


async def test_sigterm_ends_active_calls_with_a_goodbye_as_server_shutdown(server, cookie):
    await sync_to_async(scripted_profile)(
        greeting="", goodbye_message="The office is closing, goodbye."
    )
    await sync_to_async(server.start)()
    headers = {"Cookie": cookie, "Origin": server.base}
    async with connect(
        f"ws://127.0.0.1:{server.port}/ws/simulator/", additional_headers=headers
    ) as ws:
        call_id = await _one_turn(ws)
        server.signal(signal.SIGTERM)
        after = await _until(ws, lambda e: e["type"] == "ended", timeout=30)
    assert after[-1]["reason"] == "server_shutdown"
    assert any(e["type"] == "binary" for e in after), "the goodbye was not spoken"
    assert any(e.get("role") == "assistant" and "closing" in e.get("text", "") for e in after)
    await asyncio.to_thread(server.process.wait, 30)

    call = await sync_to_async(Call.objects.get)(pk=call_id)
    assert call.end_reason == EndReason.SERVER_SHUTDOWN, server.output()[-3000:]
    roles = await sync_to_async(lambda: [t.role for t in call.turns.order_by("sequence")])()
    assert roles[:2] == ["user", "assistant"]


async def test_sigkill_leaves_an_orphan_with_its_turns_that_the_sweeper_ends(server, cookie):
    await sync_to_async(scripted_profile)(greeting="")
    await sync_to_async(server.start)()
    headers = {"Cookie": cookie, "Origin": server.base}
    async with connect(
        f"ws://127.0.0.1:{server.port}/ws/simulator/", additional_headers=headers
    ) as ws:
        call_id = await _one_turn(ws)
        # Turns are written as they happen (asynchronously): wait until both are stored,
        # then kill the server mid-call, before it can end the call itself.
        async with asyncio.timeout(15):
            while await sync_to_async(Turn.objects.filter(call_id=call_id).count)() < 2:
                await asyncio.sleep(0.05)
        server.signal(signal.SIGKILL)
        await asyncio.to_thread(server.process.wait, 30)

    call = await sync_to_async(Call.objects.get)(pk=call_id)
    assert call.status == "active" and call.end_reason == ""
    turns = await sync_to_async(lambda: list(call.turns.order_by("sequence")))()
    assert [t.role for t in turns][:2] == ["user", "assistant"]
    assert turns[0].text == "I would like a table for two"

    ended = await sync_to_async(calls_sweep_orphaned)(older_than=timedelta(seconds=0))
    assert call_id in ended
    call = await sync_to_async(Call.objects.get)(pk=call_id)
    assert call.end_reason == EndReason.ORPHANED
