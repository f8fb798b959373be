"""First call after a start: how long the first caller waits for the greeting.

Starts a fresh daphne (the demo profile, offline engines, a temporary SQLite database)
and plays Twilio: the signed voice webhook, then the Media Streams socket. Printed per
mode:
- ready: process start -> ``/health/ready/`` 200 (with preload: the models are warm);
- greeting: the ``start`` message -> the first agent audio frame (target <= 1000 ms);
- reply: end of the caller's first sentence -> first frame of the answer.

Modes: ``preload`` (PRELOAD_ENGINES=true, the default) and ``cold`` (models load on the
first call, as before the preload existed). Each mode gets its own fresh process.

Usage: ``python -m bench.first_call [--modes preload,cold]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.audio import StreamResampler, pcm16_to_ulaw  # noqa: E402
from tests.speech import silence_pcm16, speech_pcm16  # noqa: E402

TOKEN = "bench-twilio-token"
PUBLIC = "https://voice.bench.example"


def _sign(url: str, params: dict[str, str]) -> str:
    from twilio.request_validator import RequestValidator

    return RequestValidator(TOKEN).compute_signature(url, params)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ulaw_frames(pcm16_16k: bytes) -> list[bytes]:
    pcm8 = StreamResampler(16000, 8000).process(pcm16_16k)
    return [pcm16_to_ulaw(pcm8[i : i + 320]) for i in range(0, len(pcm8) - 319, 320)]


async def _one_run(preload: bool) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="voiceapp-first-call-"))
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DEBUG": "true",
        "ALLOWED_HOSTS": "127.0.0.1,localhost,voice.bench.example",
        "PUBLIC_BASE_URL": PUBLIC,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "PRELOAD_ENGINES": "true" if preload else "false",
        "LOG_LEVEL": "INFO",
    }
    python = sys.executable
    for command in (["migrate", "--noinput", "-v0"], ["seed_demo"]):
        subprocess.run([python, "manage.py", *command], cwd=ROOT, env=env, check=True,
                       capture_output=True)  # fmt: skip
    log = (workdir / "daphne.log").open("wb")
    started = time.monotonic()
    server = subprocess.Popen(
        [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "voiceapp.asgi:application"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                try:
                    if (await http.get(f"{base}/health/ready/")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() - started > 300:
                    raise RuntimeError("server not ready after 300 s")
                await asyncio.sleep(0.1)
            ready_s = time.monotonic() - started
            params = {"CallSid": "CA" + "b" * 32, "AccountSid": "AC" + "0" * 32,
                      "From": "+15550001111", "To": "+15550002222", "Direction": "inbound"}  # fmt: skip
            path = "/telephony/twilio/voice/"
            answer = await http.post(
                f"{base}{path}",
                data=params,
                headers={"X-Twilio-Signature": _sign(PUBLIC + path, params),
                         "Host": "voice.bench.example", "X-Forwarded-Proto": "https"},
            )  # fmt: skip
            answer.raise_for_status()
        stream = ET.fromstring(answer.content).find("./Connect/Stream")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        async with connect(f"ws://127.0.0.1:{port}/ws/telephony/twilio/") as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
            start = {"event": "start", "streamSid": "MZ1", "start": {
                "streamSid": "MZ1", "callSid": params["CallSid"], "accountSid": params["AccountSid"],
                "tracks": ["inbound"], "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}  # fmt: skip
            sent_start = time.monotonic()
            await ws.send(json.dumps(start))
            greeting_ms = await _first_media_ms(ws, sent_start, expect_quiet_s=None)
            await _drain_until_quiet(ws, 1.0)
            frames = _ulaw_frames(speech_pcm16("I would like to book a table for two.")
                                  + silence_pcm16(1000))  # fmt: skip
            speech_end = None
            for i, frame in enumerate(frames):
                await ws.send(json.dumps({"event": "media", "streamSid": "MZ1",
                    "media": {"payload": base64.b64encode(frame).decode()}}))  # fmt: skip
                if i == len(frames) - 50:  # 1 s of silence follows
                    speech_end = time.monotonic()
                await asyncio.sleep(0.02)
            reply_ms = await _first_media_ms(ws, speech_end or time.monotonic(), expect_quiet_s=None)
            await ws.send(json.dumps({"event": "stop", "streamSid": "MZ1"}))
        return {"ready_s": ready_s, "greeting_ms": greeting_ms, "reply_ms": reply_ms}
    finally:
        server.terminate()
        server.wait(30)


async def _first_media_ms(ws, since: float, *, expect_quiet_s: float | None) -> float:
    async with asyncio.timeout(60):
        while True:
            message = json.loads(await ws.recv())
            if message.get("event") == "media":
                return (time.monotonic() - since) * 1000.0


async def _drain_until_quiet(ws, quiet_s: float) -> None:
    while True:
        try:
            message = await asyncio.wait_for(ws.recv(), quiet_s)
        except TimeoutError:
            return
        event = json.loads(message)
        if event.get("event") == "mark":  # echo marks as Twilio does once played
            await ws.send(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": event["mark"]}))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="preload,cold")
    args = parser.parse_args()
    for mode in args.modes.split(","):
        result = await _one_run(preload=mode == "preload")
        print(
            f"{mode:8s} ready={result['ready_s']:.1f}s greeting={result['greeting_ms']:.0f}ms "
            f"first reply={result['reply_ms']:.0f}ms",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
