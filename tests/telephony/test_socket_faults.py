"""Media sockets through a real daphne: what a client sees on the wire, and a Redis outage.

daphne's websocket layer (autobahn) only sends close codes 1000 and 3000–4999, so every
refusal is checked by the close frame the client receives. Unrouted paths are refused at
the handshake. Killing Redis (our own ``redis-server`` on a free port, never the shared
one) mid-call must not drop the call, and a call placed during the outage must still be
answered and end normally.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from calls.models import Call, CallStatus, EndReason
from tests.scripted import scripted_profile
from tests.server_process import DaphneServer, free_port
from tests.telephony.conftest import PUBLIC, TWILIO_TOKEN, payload, twilio_signature

pytestmark = pytest.mark.django_db(transaction=True)

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
SILENCE = b"\xff" * 160  # 20 ms of µ-law silence
SERVER_ENV = {
    "PUBLIC_BASE_URL": PUBLIC,
    "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    "TWILIO_ACCOUNT_SID": "",  # no REST hang-up: nothing may leave this machine
    "TELEPHONY_ALLOW_UNSIGNED": "false",
}
# ~15 s of agent speech (scripted TTS at 60 ms a character): audio keeps flowing out.
LONG_GREETING = (
    "Hello, this is Casa Lola. " + "We are open every day from noon until midnight. " * 5
)


# --- a Twilio client over real sockets ---------------------------------------------------


def ring(server: DaphneServer, call_sid: str) -> dict[str, str]:
    """Twilio's signed voice webhook -> the <Stream> parameters of the TwiML answer."""
    path = "/telephony/twilio/voice/"
    params = {**payload("twilio_voice_inbound.json"), "CallSid": call_sid}
    response = httpx.post(
        server.base + path,
        data=params,
        headers={"X-Twilio-Signature": twilio_signature(PUBLIC + path, params)},
        timeout=15,
    )
    assert response.status_code == 200, response.text
    stream = ET.fromstring(response.content).find("./Connect/Stream")
    assert stream is not None, response.text
    return {p.get("name"): p.get("value") for p in stream.findall("Parameter")}


class TwilioStream:
    def __init__(self, ws: ClientConnection, call_sid: str) -> None:
        self.ws = ws
        self.call_sid = call_sid
        self.seq = 0

    async def send(self, event: str, **body: Any) -> None:
        self.seq += 1
        message = {"event": event, "sequenceNumber": str(self.seq), "streamSid": STREAM_SID}
        await self.ws.send(json.dumps({**message, **body}))

    async def start(self, parameters: dict[str, str]) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
        await self.send(
            "start",
            start={
                "accountSid": "AC" + "0" * 32,
                "streamSid": STREAM_SID,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        )

    async def media(self, ulaw: bytes) -> None:
        await self.send(
            "media", media={"track": "inbound", "payload": base64.b64encode(ulaw).decode()}
        )

    async def stop(self) -> None:
        await self.send("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": self.call_sid})

    async def next_event(self, timeout: float = 15) -> str:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))["event"]

    async def media_frames(self, seconds: float) -> int:
        """Agent audio frames received during ``seconds`` (the caller streams silence meanwhile)."""
        count = 0
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                if await self.next_event(timeout=left) == "media":
                    count += 1
        return count


async def close_of(ws: ClientConnection, timeout: float = 20) -> tuple[int, str]:
    """Read until the server closes; -> (code, reason) of its close frame."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def real_time_silence(stream: TwilioStream) -> None:
    """A caller's line: 20 ms of silence every 20 ms until cancelled."""
    started = time.monotonic()
    frames = 0
    with contextlib.suppress(ConnectionClosed):
        while True:
            await stream.media(SILENCE)
            frames += 1
            await asyncio.sleep(max(0.0, started + frames * 0.02 - time.monotonic()))


async def ended(call_id: str, *, timeout: float = 20) -> Call:
    """The call once its record is ended (the server writes the end just after the close)."""
    async with asyncio.timeout(timeout):
        while (call := await database_sync_to_async(Call.objects.get)(pk=call_id)).ended_at is None:
            await asyncio.sleep(0.05)
    return call


# --- one server for the refusals -------------------------------------------------------------


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[DaphneServer]:
    srv = DaphneServer(
        **SERVER_ENV,
        MEDIA_SOCKET_START_TIMEOUT_SECONDS="1",
        MEDIA_SOCKETS_MAX_WAITING="3",
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("problem", ["forged token", "reused token", "another call's token"])
async def test_a_refused_stream_reaches_the_client_as_a_4403_close(server, problem):
    await database_sync_to_async(scripted_profile)()
    call_sid = "CA" + "a" * 32
    parameters = await asyncio.to_thread(ring, server, call_sid)
    if problem == "forged token":
        parameters = {**parameters, "token": parameters["token"][:-4] + "beef"}
    elif problem == "another call's token":
        other = await asyncio.to_thread(ring, server, "CA" + "b" * 32)
        parameters = {**parameters, "token": other["token"]}
    else:
        async with connect(f"ws://127.0.0.1:{server.port}/ws/telephony/twilio/") as ws:
            first = TwilioStream(ws, call_sid)
            await first.start(parameters)
            assert await first.next_event() == "media"  # the rightful stream got its greeting
            await first.stop()
            assert (await close_of(ws))[0] == 1000

    async with connect(f"ws://127.0.0.1:{server.port}/ws/telephony/twilio/") as ws:
        await TwilioStream(ws, call_sid).start(parameters)
        code, _ = await close_of(ws)
    assert code == 4403  # daphne sends the code only; the reason is in the server log


async def test_idle_sockets_close_4408_at_the_deadline_and_more_than_the_bound_get_4503(server):
    url = f"ws://127.0.0.1:{server.port}/ws/telephony/twilio/"
    async with contextlib.AsyncExitStack() as stack:
        opened = time.monotonic()
        idle = [await stack.enter_async_context(connect(url)) for _ in range(3)]
        one_too_many = await stack.enter_async_context(connect(url))
        assert (await close_of(one_too_many))[0] == 4503
        for ws in idle:
            assert (await close_of(ws))[0] == 4408
        assert time.monotonic() - opened < 10


@pytest.mark.parametrize(
    "path", ["/ws/telephony/telnyx/", "/ws/telephony/", "/ws/nowhere/", "/not-a-socket"]
)
async def test_an_unrouted_websocket_path_is_refused_403_with_one_log_line(server, path):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{server.port}{path}"):
            pass
    assert refused.value.response.status_code == 403
    await asyncio.sleep(0.3)  # the log line is written after the handshake answer
    lines = [line for line in server.output().splitlines() if repr(path) in line]
    assert len(lines) == 1 and "no route" in lines[0], lines
    assert "Traceback" not in server.output()


# --- a Redis outage --------------------------------------------------------------------------


@dataclass(slots=True)
class OwnRedis:
    """A private redis-server: killing it never touches the Redis other tests share."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    redis = OwnRedis(process=process, port=port)
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield redis
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def test_calls_keep_flowing_through_a_redis_outage_and_new_calls_are_answered(own_redis):
    await database_sync_to_async(scripted_profile)(
        greeting=LONG_GREETING, tts_model="ttfb_ms=20;ms_per_char=60"
    )
    server = DaphneServer(**SERVER_ENV, REDIS_URL=own_redis.url)
    await asyncio.to_thread(server.start)
    url = f"ws://127.0.0.1:{server.port}/ws/telephony/twilio/"
    try:
        first_params = await asyncio.to_thread(ring, server, "CA" + "1" * 32)
        async with connect(url) as first_ws:
            first = TwilioStream(first_ws, "CA" + "1" * 32)
            await first.start(first_params)
            caller = asyncio.create_task(real_time_silence(first))
            try:
                assert await first.media_frames(1.0) > 10

                await asyncio.to_thread(own_redis.kill)
                after_kill = await first.media_frames(3.0)

                # A new call while Redis is down: answered, its token accepted, and live.
                second_params = await asyncio.to_thread(ring, server, "CA" + "2" * 32)
                async with connect(url) as second_ws:
                    second = TwilioStream(second_ws, "CA" + "2" * 32)
                    await second.start(second_params)
                    assert await second.next_event() == "media"
                    await second.stop()
                    second_close = await close_of(second_ws)
            finally:
                caller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await caller
            await first.stop()
            first_close = await close_of(first_ws)
        calls = [await ended(p["call_id"]) for p in (first_params, second_params)]
    finally:
        server.stop()
    log = server.output()

    assert after_kill > 75, f"{after_kill} agent frames in 3 s after the Redis kill\n{log[-3000:]}"
    assert first_close[0] == 1000 and second_close[0] == 1000
    for call in calls:
        assert (call.status, call.end_reason) == (CallStatus.ENDED, EndReason.CALLER_HANGUP)
    assert "stream token store unreachable" in log
    assert "global stop state unreadable" in log
