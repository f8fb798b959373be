"""Admission control of one process (live/admission.py), driven through the simulator socket
with the scripted engines: the third call of a process limited to two is refused, a call's
end gives its slot back on every path, and a lagging event loop refuses new calls.

The carriers' side (webhooks, media sockets, outbound dials) is tests/telephony/test_admission.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from calls import global_stop
from calls.models import Call, CallStatus, EndReason
from live import admission
from live.admission import LoopLagMonitor
from simulator.consumers import SimulatorConsumer
from tests.scripted import scripted_profile

# --- the lag figure, fed samples directly ---------------------------------------------------


def test_loop_lag_p99_is_the_worst_one_percent_of_the_window():
    monitor = LoopLagMonitor(window_s=5.0)
    for i in range(98):
        monitor.record(1.0, at=100.0 + i * 0.04)
    monitor.record(250.0, at=104.0)
    monitor.record(300.0, at=104.01)
    # Nearest rank: the 99th of 100 samples, so only the very worst stall is above it.
    assert monitor.p99_ms(now=104.02) == 250.0



def test_loop_lag_samples_older_than_the_window_are_forgotten():
    monitor = LoopLagMonitor(window_s=5.0)
    monitor.record(400.0, at=10.0)
    monitor.record(2.0, at=14.0)
    assert monitor.p99_ms(now=14.5) == 400.0
    assert monitor.p99_ms(now=15.5) == 2.0
    assert monitor.p99_ms(now=30.0) is None


def test_one_hiccup_in_a_calm_window_does_not_refuse_calls(settings):
    settings.MAX_CALLS_PER_PROCESS = 0
    settings.ADMISSION_MAX_LOOP_LAG_MS = 100
    controller = admission.AdmissionController(monitor=LoopLagMonitor(window_s=5.0))
    now = time.monotonic()
    for i in range(40):
        controller.monitor.record(2.0, at=now - 4 + i * 0.1)
    controller.monitor.record(400.0, at=now)  # a model loading, a garbage collection
    assert controller.refusal() is None
    for _ in range(5):  # sustained: one sample in ten or more
        controller.monitor.record(150.0, at=now)
    assert controller.refusal() is not None


def test_a_lagging_loop_refuses_new_calls_and_a_calm_one_takes_them(settings):
    settings.MAX_CALLS_PER_PROCESS = 0
    settings.ADMISSION_MAX_LOOP_LAG_MS = 100
    controller = admission.AdmissionController(monitor=LoopLagMonitor(window_s=5.0))
    now = time.monotonic()
    controller.monitor.record(20.0, at=now)
    assert controller.refusal() is None
    controller.monitor.record(180.0, at=now)
    refused = controller.refusal()
    assert refused is not None and refused.reason == admission.LOOP_LAG
    settings.ADMISSION_MAX_LOOP_LAG_MS = 0  # 0: lag is not checked
    assert controller.refusal() is None


async def test_webhooks_hold_places_for_streams_about_to_start_and_streams_take_them(settings):
    """A burst of webhooks must not all find the process empty (slots are taken only when
    the streams start): each answered webhook holds a place; a stream's own check counts
    only started calls, and taking or releasing the call gives the place back."""
    settings.MAX_CALLS_PER_PROCESS = 2
    settings.ADMISSION_MAX_LOOP_LAG_MS = 0
    controller = admission.AdmissionController()
    controller.reserve("a")
    assert controller.host_refusal() is None
    controller.reserve("b")
    refused = controller.host_refusal()
    assert refused is not None and refused.reason == admission.CAPACITY
    assert "0 calls + 2 starting" in refused.detail
    assert controller.admit("a") is None  # the streams themselves are taken
    assert controller.admit("b") is None
    assert controller.reserved() == 0 and controller.active == 2
    await controller.release("a")
    assert controller.host_refusal() is None
    await controller.release("b")


def test_a_place_whose_stream_never_came_is_given_back(settings, monkeypatch):
    settings.MAX_CALLS_PER_PROCESS = 1
    settings.ADMISSION_MAX_LOOP_LAG_MS = 0
    controller = admission.AdmissionController()
    controller.reserve("gone")
    assert controller.host_refusal() is not None
    monkeypatch.setattr(admission, "RESERVE_S", -1.0)  # as if RESERVE_S had passed
    controller.reserve("gone")
    assert controller.reserved() == 0 and controller.host_refusal() is None


def worker(pid: int, *, active: int, capacity: int = 1, lagging: bool = False):
    return admission.WorkerState(pid=pid, active=active, capacity=capacity, lagging=lagging)


async def test_workers_of_one_host_admit_at_the_webhook_while_any_of_them_has_room(
    settings, tmp_path
):
    """Several workers on one port (voiceapp/serve.py): the webhook's worker may be full
    while another has room; calls answered on the host hold places until their streams
    start, on whichever worker."""
    settings.MAX_CALLS_PER_PROCESS = 1
    settings.ADMISSION_MAX_LOOP_LAG_MS = 0
    me = admission.AdmissionController(board=admission.WorkerBoard(tmp_path))
    # Another live process of this host (the test runner's parent), with room.
    other = admission.WorkerBoard(tmp_path, pid=os.getppid())
    other.publish(worker(os.getppid(), active=0))
    assert me.admit("mine") is None  # this worker is now full
    assert me.refusal() is not None
    assert me.host_refusal() is None  # the other one has room

    me.reserve("next")  # answered: its stream will take the other worker's slot
    refused = me.host_refusal()
    assert refused is not None and refused.reason == admission.CAPACITY
    assert "1 calls, 1 starting" in refused.detail
    me.board.unreserve("next")  # its stream started on the other worker
    other.publish(worker(os.getppid(), active=1), force=True)
    assert me.host_refusal() is not None

    other.publish(worker(os.getppid(), active=0, lagging=True), force=True)
    assert me.host_refusal() is not None  # a lagging worker has no room
    other.publish(worker(os.getppid(), active=0), force=True)
    assert me.host_refusal() is None

    # An answered call whose stream lands on this full worker is not dropped: it may go
    # over capacity by 10 % (at least one call); a call nobody answered may not.
    assert me.admit("walk-in") is not None
    me.reserve("answered")
    assert me.admit("answered") is None and me.active == 2
    me.reserve("one-more")
    refused = me.admit("one-more")
    assert refused is not None and refused.reason == admission.CAPACITY
    await me.release("answered")

    # A worker that is gone is ignored, and its entry removed.
    dead_pid = 2**22 + 12345
    admission.WorkerBoard(tmp_path, pid=dead_pid).publish(worker(dead_pid, active=0))
    (tmp_path / f"{os.getppid()}.json").unlink()
    assert me.host_refusal() is not None
    assert not (tmp_path / f"{dead_pid}.json").exists()
    await me.release("mine")
    assert me.host_refusal() is None


# --- whole calls through the simulator socket -------------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def calm_loop():
    """Lag another test caused in the last 5 s (e.g. its database flush) is not ours, nor
    are the places other tests' webhooks held."""
    admission.controller.monitor.clear()
    admission.controller.forget_reservations()


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(
        username="adm", password="x-pw-12345", is_staff=True
    )


@pytest.fixture
def limit_two(settings, db):
    settings.MAX_CALLS_PER_PROCESS = 2
    settings.ADMISSION_MAX_LOOP_LAG_MS = 0
    global_stop.reset(actor="test")
    return settings


async def all_slots_released(timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while admission.controller.active:
            await asyncio.sleep(0.02)
    assert not admission.controller.monitor.running


async def next_event(ws: WebsocketCommunicator, timeout: float = 10) -> dict:
    output = await ws.receive_output(timeout)
    if output["type"] == "websocket.close":
        return {"type": "close", "code": output.get("code"), "reason": output.get("reason", "")}
    if output.get("bytes") is not None:
        return {"type": "binary"}
    return json.loads(output["text"])


async def until(ws: WebsocketCommunicator, wanted: str, *, timeout: float = 20) -> list[dict]:
    seen: list[dict] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await next_event(ws, timeout)
            seen.append(event)
            if event["type"] in (wanted, "close"):
                return seen


async def simulator_call(staff, profile: str = "scripted") -> tuple[WebsocketCommunicator, dict]:
    """A simulator socket that sent its start; returns it and the first answer to the start
    (``started``, or the ``close`` it got instead)."""
    ws = WebsocketCommunicator(SimulatorConsumer.as_asgi(), "/ws/simulator/")
    ws.scope["user"] = staff
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"event": "start", "profile": profile, "audio": "binary"})
    seen = await until(ws, "started")
    return ws, seen[-1]


async def stored(call_id: str) -> Call:
    return await database_sync_to_async(Call.objects.get)(pk=call_id)


async def busy_calls() -> list[Call]:
    return await database_sync_to_async(
        lambda: list(Call.objects.filter(end_reason=EndReason.BUSY))
    )()


@pytestmark_db
async def test_the_third_simulator_call_is_closed_4503_all_lines_busy_and_stored_busy(
    staff, limit_two
):
    await database_sync_to_async(scripted_profile)()
    refused_before = admission.CALLS_REFUSED.labels(
        channel="browser", reason=admission.CAPACITY
    )._value.get()
    first, started1 = await simulator_call(staff)
    second, started2 = await simulator_call(staff)
    assert started1["type"] == started2["type"] == "started"
    assert admission.controller.active == 2

    third = WebsocketCommunicator(SimulatorConsumer.as_asgi(), "/ws/simulator/")
    third.scope["user"] = staff
    await third.connect()
    await third.send_json_to({"event": "start", "profile": "scripted"})
    seen = await until(third, "started")
    assert seen[-1] == {"type": "close", "code": 4503, "reason": "all lines busy (capacity)"}
    assert any(e["type"] == "error" and "all lines busy" in e["message"] for e in seen)
    await third.disconnect()

    (busy,) = await busy_calls()
    assert (busy.status, busy.end_reason) == (CallStatus.ENDED, EndReason.BUSY)
    assert "MAX_CALLS_PER_PROCESS=2" in busy.error_detail
    assert (
        admission.CALLS_REFUSED.labels(channel="browser", reason=admission.CAPACITY)._value.get()
        == refused_before + 1
    )
    # Running calls are untouched.
    for call_id in (started1["call_id"], started2["call_id"]):
        assert (await stored(call_id)).status == CallStatus.ACTIVE

    await first.send_json_to({"event": "stop"})
    assert (await until(first, "ended"))[-1]["reason"] == "caller_hangup"
    await first.disconnect()
    async with asyncio.timeout(10):
        while admission.controller.active > 1:
            await asyncio.sleep(0.02)
    fourth, started4 = await simulator_call(staff)
    assert started4["type"] == "started"  # the hang-up gave its slot back
    for ws in (second, fourth):
        await ws.disconnect()
    await all_slots_released()


@pytestmark_db
async def test_readiness_is_503_while_the_process_is_full_and_200_after_a_call_ends(
    staff, limit_two
):
    await database_sync_to_async(scripted_profile)()
    first, _ = await simulator_call(staff)
    second, _ = await simulator_call(staff)

    response = await AsyncClient().get("/health/ready/")
    body = response.json()
    assert response.status_code == 503, body
    assert body["checks"]["capacity"]["ok"] is False
    assert "capacity: 2 calls in this process" in body["checks"]["capacity"]["error"]
    assert body["checks"]["database"]["ok"]

    await first.send_json_to({"event": "stop"})
    await until(first, "ended")
    await first.disconnect()
    async with asyncio.timeout(10):
        while admission.controller.active > 1:
            await asyncio.sleep(0.02)
    response = await AsyncClient().get("/health/ready/")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["capacity"]["ok"]
    await second.disconnect()
    await all_slots_released()


@pytestmark_db
async def test_a_call_gives_its_slot_back_on_error_hang_up_and_a_dropped_socket(
    staff, limit_two
):
    await database_sync_to_async(scripted_profile)()
    # The agent's voice fails: the session ends with an error.
    await database_sync_to_async(scripted_profile)(slug="failing", tts_model="fail=1")

    failing, started = await simulator_call(staff, "failing")
    assert started["type"] == "started"
    ended = await until(failing, "ended")
    assert ended[-1]["reason"] == EndReason.ERROR
    await failing.disconnect()
    await all_slots_released()

    hung_up, _ = await simulator_call(staff)
    await hung_up.send_json_to({"event": "stop"})
    await until(hung_up, "ended")
    await hung_up.disconnect()
    await all_slots_released()

    dropped, started = await simulator_call(staff)
    await dropped.disconnect()  # no stop: the network went
    await all_slots_released()
    assert (await stored(started["call_id"])).end_reason == EndReason.CALLER_HANGUP

    # And the process is whole again: two calls fit.
    calls = [await simulator_call(staff) for _ in range(2)]
    assert [started["type"] for _, started in calls] == ["started", "started"]
    for ws, _ in calls:
        await ws.disconnect()
    await all_slots_released()


@pytestmark_db
async def test_a_blocked_event_loop_refuses_the_next_call_until_the_lag_is_over(
    staff, settings
):
    settings.MAX_CALLS_PER_PROCESS = 10
    settings.ADMISSION_MAX_LOOP_LAG_MS = 100
    await database_sync_to_async(global_stop.reset)(actor="test")
    await database_sync_to_async(scripted_profile)()
    running, started = await simulator_call(staff)
    assert started["type"] == "started" and admission.controller.monitor.running

    time.sleep(0.3)  # noqa: ASYNC251 - deliberately blocks the loop: this is the lag measured
    async with asyncio.timeout(5):
        while admission.controller.refusal() is None:
            await asyncio.sleep(0.05)  # the monitor's next sample sees the overshoot

    refused_ws, refused = await simulator_call(staff)
    assert refused == {"type": "close", "code": 4503, "reason": "all lines busy (loop_lag)"}
    await refused_ws.disconnect()
    (busy,) = await busy_calls()
    assert "event-loop lag p90" in busy.error_detail
    response = await AsyncClient().get("/health/ready/")
    assert response.status_code == 503
    assert "loop_lag" in response.json()["checks"]["capacity"]["error"]
    # The running call was not touched.
    assert (await stored(started["call_id"])).status == CallStatus.ACTIVE

    await running.disconnect()
    await all_slots_released()
