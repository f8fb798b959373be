"""Overload is not an outage: calls we cannot serve hear the busy message and end "busy",
and they never count toward the global stop (which is for provider failures)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from calls import global_stop, inline_tasks
from calls.models import Call, EndReason, Turn
from tests.scripted import scripted_profile
from tests.simulator.test_consumer import connect, events_until, speak, staff  # noqa: F401
from tests.speech import have_speech_tools

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not have_speech_tools(), reason="espeak-ng and sox are needed for speech"),
]

CALLS = 5


async def _overloaded_call(user) -> dict:
    communicator = await connect(user)
    try:
        await communicator.send_json_to({"event": "start", "profile": "busy"})
        await events_until(communicator, lambda e: e["type"] == "started")
        await speak(communicator, "I would like to book a table.")
        seen = await events_until(communicator, lambda e: e["type"] == "ended", timeout=30)
        return seen[-1]
    finally:
        await communicator.disconnect()


async def test_overloaded_calls_end_busy_and_never_trip_the_global_stop(staff, settings):
    settings.GLOBAL_STOP_MAX_ERRORS_IN_WINDOW = 2  # would trip after two critical errors
    await database_sync_to_async(scripted_profile)(
        slug="busy", greeting="", stt_model="delay_ms=20;overloaded=1"
    )

    ended = await asyncio.gather(*(_overloaded_call(staff) for _ in range(CALLS)))

    assert [e["reason"] for e in ended] == [EndReason.BUSY] * CALLS
    assert await database_sync_to_async(global_stop.calls_allowed)()
    calls = await database_sync_to_async(list)(Call.objects.all())
    assert {c.end_reason for c in calls} == {EndReason.BUSY}
    assert all("overloaded" in c.error_detail for c in calls)
    unanswered = await database_sync_to_async(Turn.objects.filter(unanswered=True).count)()
    assert unanswered == CALLS
    # Their post-call extractions run in background threads: let them finish (and close
    # their connections) before the test database is dropped.
    assert await asyncio.to_thread(inline_tasks.wait_idle, 30)
