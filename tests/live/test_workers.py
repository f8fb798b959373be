"""The production command: ``python -m voiceapp.serve`` with two workers sharing one port.

Real processes, the shared Redis and PostgreSQL: calls are spread over both workers, the
global stop tripped anywhere refuses calls on every worker, the admission board lets a
webhook answered by a full worker hand the call to one with room, and SIGTERM ends live
calls as ``server_shutdown`` (uvicorn would otherwise close them with 1012 at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import psutil
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from calls import global_stop
from calls.models import EndReason
from tests.scripted import scripted_profile
from tests.server_process import WorkersServer
from tests.telephony.conftest import PUBLIC, payload, twilio_signature
from tests.telephony.test_socket_faults import (
    SERVER_ENV,
    TwilioStream,
    ended,
    real_time_silence,
    ring,
)

pytestmark = pytest.mark.django_db(transaction=True)

VOICE_PATH = "/telephony/twilio/voice/"


@pytest.fixture
def workers(django_db_setup, django_db_blocker) -> Iterator[WorkersServer]:
    with django_db_blocker.unblock():
        scripted_profile(greeting="Hello, this is Casa Lola.")
    server = WorkersServer(
        **SERVER_ENV,
        MAX_CALLS_PER_PROCESS="1",
        ADMISSION_MAX_LOOP_LAG_MS="0",
        SHUTDOWN_GRACE_SECONDS="5",
    )
    server.start()
    yield server
    server.stop()
    with django_db_blocker.unblock():
        global_stop.reset(actor="test")


def holder_of(server: WorkersServer, local_port: int) -> int | None:
    """The worker whose socket is the server end of the client's connection."""
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.Error):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.raddr and conn.raddr.port == local_port:
                    return pid
    return None


def ws_url(server: WorkersServer) -> str:
    return f"ws://127.0.0.1:{server.port}/ws/telephony/twilio/"


async def live_call(server: WorkersServer, call_sid: str):  # type: ignore[no-untyped-def]
    parameters = await asyncio.to_thread(ring, server, call_sid)
    ws = await connect(ws_url(server))
    stream = TwilioStream(ws, call_sid)
    await stream.start(parameters)
    return parameters["call_id"], ws, stream


async def echo_marks(stream: TwilioStream) -> None:
    """Twilio's side of a mark: sent back once its audio has played (here: at once), so the
    goodbye counts as heard and the session ends without waiting for its timeout."""
    with contextlib.suppress(ConnectionClosed):
        async for raw in stream.ws:
            message = json.loads(raw)
            if message.get("event") == "mark":
                await stream.send("mark", mark=message["mark"])


def test_two_workers_hold_one_call_each_and_end_them_gracefully_on_sigterm(
    workers: WorkersServer,
) -> None:
    assert len(workers.worker_pids()) == 2

    async def scenario() -> None:
        # One slot per worker (MAX_CALLS_PER_PROCESS=1): the second call can only be served
        # because the webhook's worker sees the other one's room on the board, and its
        # stream lands on that worker (or is refused 4503: then we try again).
        calls, holders = [], set()
        for attempt in range(8):
            call_id, ws, stream = await live_call(workers, f"CA{attempt:032d}")
            try:
                await stream.next_event()  # the greeting's first frame: admitted
            except ConnectionClosed:
                assert ws.close_code == 4503, ws.close_code  # landed on the full worker
                continue
            line = asyncio.gather(real_time_silence(stream), echo_marks(stream))
            calls.append((call_id, ws, stream, line))
            holders.add(holder_of(workers, ws.local_address[1]))
            if len(holders) == 2:
                break
        assert len(holders) == 2, holders

        # Both full: the third caller is refused by whichever worker answers the webhook.
        params = {**payload("twilio_voice_inbound.json"), "CallSid": "CA" + "9" * 32}
        response = await asyncio.to_thread(
            httpx.post,
            workers.base + VOICE_PATH,
            data=params,
            headers={"X-Twilio-Signature": twilio_signature(PUBLIC + VOICE_PATH, params)},
            timeout=15,
        )
        assert ET.fromstring(response.content).find("./Reject") is not None, response.text
        ready = await asyncio.to_thread(httpx.get, workers.base + "/health/ready/", timeout=15)
        assert ready.status_code == 503
        # Whichever worker answers /metrics, it counts both workers' calls.
        for _ in range(4):
            metrics = await asyncio.to_thread(httpx.get, workers.base + "/metrics", timeout=15)
            held = f"{len(calls)}.0"  # 2, or 3 if one worker took an answered call over
            assert f"voiceapp_admitted_calls {held}" in metrics.text
            assert f'voiceapp_active_calls{{channel="twilio"}} {held}' in metrics.text
            assert "voiceapp_call_capacity 2.0" in metrics.text

        # SIGTERM to the supervisor: every live call says goodbye and is stored as a
        # server shutdown, in both workers.
        workers.process.terminate()  # type: ignore[union-attr]
        for call_id, ws, _, silence in calls:
            call = await ended(call_id, timeout=30)
            assert call.end_reason == EndReason.SERVER_SHUTDOWN, call.end_reason
            silence.cancel()
            await asyncio.gather(silence, return_exceptions=True)
            await ws.close()
        served_by = {
            (await database_sync_to_async(lambda c=c: c.metrics)()).get("served_by")
            for c in [await ended(call_id) for call_id, *_ in calls]
        }
        assert len(served_by) >= 2, served_by

    asyncio.run(scenario())
    workers.process.wait(timeout=30)  # type: ignore[union-attr]


def test_a_global_stop_tripped_anywhere_refuses_calls_on_every_worker(
    workers: WorkersServer,
) -> None:
    for _ in range(50):
        global_stop.report_critical_error(reason="test: engine down", channel="test")
        if not global_stop.calls_allowed():
            break
    assert not global_stop.calls_allowed()
    # Connections are spread over the workers by the kernel: enough webhooks reach both.
    for attempt in range(6):
        params = {**payload("twilio_voice_inbound.json"), "CallSid": f"CB{attempt:032d}"}
        response = httpx.post(
            workers.base + VOICE_PATH,
            data=params,
            headers={"X-Twilio-Signature": twilio_signature(PUBLIC + VOICE_PATH, params)},
            timeout=15,
        )
        twiml = ET.fromstring(response.content)
        assert twiml.find("./Connect") is None and twiml.find("./Say") is not None, response.text
    global_stop.reset(actor="test")
    assert ring(workers, "CC" + "0" * 32)["call_id"]  # allowed again, on any worker


def test_a_worker_that_dies_is_started_again(workers: WorkersServer) -> None:
    first, second = workers.worker_pids()
    psutil.Process(first).kill()

    async def replaced() -> list[int]:
        async with asyncio.timeout(20):
            while len(pids := workers.worker_pids()) < 2 or first in pids:
                await asyncio.sleep(0.2)
        return pids

    pids = asyncio.run(replaced())
    assert second in pids and first not in pids
    assert httpx.get(workers.base + "/health/", timeout=10).status_code == 200
