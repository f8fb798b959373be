"""A live call through a real daphne keeps every spoken turn across a PostgreSQL outage:
writes are retried in order, sequence numbers stay true, the end reason is right."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.db import connection
from websockets.asyncio.client import connect

from calls.models import Call, EndReason
from tests.scripted import scripted_profile
from tests.server_process import DaphneServer, session_cookie_for
from tests.speech import have_speech_tools, silence_pcm16, speech_pcm16
from tests.tcp_fault_proxy import FaultProxy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

OUTAGE_S = 8.0


@pytest.fixture
def postgres_proxy():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (DATABASE_URL): the outage is cut in front of it")
    db = connection.settings_dict
    with FaultProxy(upstream=(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432))) as proxy:
        yield proxy


async def _events_until(ws, predicate, timeout=30.0):
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            if isinstance(message, str) and predicate(event := json.loads(message)):
                return event


async def _say_and_hear_the_reply(ws, text: str) -> None:
    audio = speech_pcm16(text) + silence_pcm16(900)
    for i in range(0, len(audio), 640):
        await ws.send(audio[i : i + 640])
        await asyncio.sleep(0.004)
    await _events_until(ws, lambda e: e["type"] == "metrics")


async def test_turns_spoken_while_postgres_resets_connections_are_all_stored_in_order(
    postgres_proxy, django_user_model
):
    user = await sync_to_async(django_user_model.objects.create_user)(
        username="ops", password="x-pw-12345", is_staff=True
    )
    cookie = await sync_to_async(session_cookie_for)(user)
    await sync_to_async(scripted_profile)(greeting="")
    db = connection.settings_dict
    server = DaphneServer(
        DATABASE_URL=f"postgres://{db['USER']}@127.0.0.1:{postgres_proxy.port}/{db['NAME']}",
        RECORDER_RETRY_SECONDS="60",
    )
    await sync_to_async(server.start)()
    try:
        headers = {"Cookie": cookie, "Origin": server.base}
        async with connect(
            f"ws://127.0.0.1:{server.port}/ws/simulator/", additional_headers=headers
        ) as ws:
            await ws.send(json.dumps({"event": "start", "profile": "scripted", "audio": "binary"}))
            call_id = (await _events_until(ws, lambda e: e["type"] == "started"))["call_id"]
            await _say_and_hear_the_reply(ws, "I would like to book a table for two.")

            postgres_proxy.reset()  # every connection dropped, new ones refused
            await _say_and_hear_the_reply(ws, "At eight in the evening, please.")
            await _say_and_hear_the_reply(ws, "My name is John Smith.")
            await asyncio.sleep(OUTAGE_S - 4)
            postgres_proxy.pass_through()

            await _say_and_hear_the_reply(ws, "Thank you very much.")
            await ws.send(json.dumps({"event": "stop"}))
            await _events_until(ws, lambda e: e["type"] == "ended")

        async with asyncio.timeout(60):
            while (await sync_to_async(Call.objects.get)(pk=call_id)).end_reason == "":
                await asyncio.sleep(0.2)
        call = await sync_to_async(Call.objects.get)(pk=call_id)
        turns = await sync_to_async(lambda: list(call.turns.order_by("sequence")))()
    finally:
        server.stop()

    output = server.output()[-4000:]
    assert "retrying" in output, output  # the outage really hit the writes
    assert [t.sequence for t in turns] == list(range(1, 9)), output
    assert [t.role for t in turns] == ["user", "assistant"] * 4
    assert call.end_reason == EndReason.CALLER_HANGUP
    assert call.metrics.get("user_turns") == 4
