"""An ended call's objects are freed by one collection soon after it ends (live/call_garbage.py),
not whenever CPython's next full pass comes: a real simulator call's session, its
collaborators and its buffers are gone a few seconds after the caller hangs up, with the
automatic collector switched off so that only our pass can have freed them. The heap is
frozen first, as the server freezes its startup heap (calls/preload.py)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from calls import global_stop
from live import call_garbage, runtime
from live.call_garbage import CallGarbage
from simulator.consumers import SimulatorConsumer
from tests.live.test_admission import until
from tests.scripted import scripted_profile


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        call_garbage.collector.cancel()
        gc.enable()
        gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def freed(ref: weakref.ref, timeout: float) -> bool:
    async with asyncio.timeout(timeout):
        while ref() is not None:
            await asyncio.sleep(0.02)
    return True


async def test_a_pass_after_a_call_ends_frees_its_cycles(settings, no_automatic_gc, monkeypatch):
    settings.GC_AFTER_CALLS_SECONDS = 10
    monkeypatch.setattr(CallGarbage, "SETTLE_S", 0.05)
    collector = CallGarbage()
    garbage = Cycle()
    ref = weakref.ref(garbage)
    del garbage
    assert ref() is not None  # a cycle: reference counting alone never frees it

    collector.call_ended()
    assert await freed(ref, timeout=2)
    assert collector.passes == 1
    collector.cancel()


async def test_calls_ending_close_together_share_one_pass(settings, no_automatic_gc, monkeypatch):
    settings.GC_AFTER_CALLS_SECONDS = 0.5
    monkeypatch.setattr(CallGarbage, "SETTLE_S", 0.05)
    collector = CallGarbage()
    collector.call_ended()
    await asyncio.sleep(0.15)
    assert collector.passes == 1
    for _ in range(3):  # within the interval: one more pass, when it has passed
        collector.call_ended()
    await asyncio.sleep(0.15)
    assert collector.passes == 1
    await asyncio.sleep(0.5)
    assert collector.passes == 2
    collector.cancel()


async def test_zero_leaves_collection_to_cpython(settings, no_automatic_gc, monkeypatch):
    settings.GC_AFTER_CALLS_SECONDS = 0
    monkeypatch.setattr(CallGarbage, "SETTLE_S", 0.01)
    collector = CallGarbage()
    collector.call_ended()
    await asyncio.sleep(0.1)
    assert collector.passes == 0


async def test_no_pass_walks_an_unfrozen_startup_heap(settings, monkeypatch):
    """Without the frozen startup heap a pass would walk all of Django (40-75 ms)."""
    settings.GC_AFTER_CALLS_SECONDS = 10
    monkeypatch.setattr(CallGarbage, "SETTLE_S", 0.01)
    assert gc.get_freeze_count() == 0
    collector = CallGarbage()
    collector.call_ended()
    await asyncio.sleep(0.1)
    assert collector.passes == 0


async def test_a_call_that_ends_just_before_a_pass_gets_another(
    settings, no_automatic_gc, monkeypatch
):
    """Its socket may still hold it for a last write: the next pass is for it."""
    settings.GC_AFTER_CALLS_SECONDS = 0.3
    monkeypatch.setattr(CallGarbage, "SETTLE_S", 0.2)
    collector = CallGarbage()
    collector.call_ended()
    await asyncio.sleep(0.1)
    collector.call_ended()  # 0.1 s before the pending pass
    await asyncio.sleep(0.2)
    assert collector.passes == 1
    await asyncio.sleep(0.4)
    assert collector.passes == 2


@pytest.mark.django_db(transaction=True)
async def test_an_ended_simulator_call_is_freed_within_seconds(
    settings, staff_user, no_automatic_gc, monkeypatch
):
    settings.GC_AFTER_CALLS_SECONDS = 1
    settings.MAX_CALLS_PER_PROCESS = 0
    settings.ADMISSION_MAX_LOOP_LAG_MS = 0
    monkeypatch.setattr(CallGarbage, "SETTLE_S", 0.2)
    await database_sync_to_async(global_stop.reset)(actor="test")
    await database_sync_to_async(scripted_profile)()
    passes_before = call_garbage.collector.passes

    ws = WebsocketCommunicator(SimulatorConsumer.as_asgi(), "/ws/simulator/")
    ws.scope["user"] = staff_user
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"event": "start", "profile": "scripted", "audio": "binary"})
    started = (await until(ws, "started"))[-1]
    assert started["type"] == "started"
    session = weakref.ref(runtime.ACTIVE[started["call_id"]].session)

    await ws.send_json_to({"event": "stop"})
    assert (await until(ws, "ended"))[-1]["reason"] == "caller_hangup"
    await ws.disconnect()
    assert await freed(session, timeout=10)
    assert call_garbage.collector.passes > passes_before
