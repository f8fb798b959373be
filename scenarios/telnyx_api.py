"""Telnyx's side of a Telnyx call, as the runner plays it: the Call Control REST API the
server commands (``answer`` with a ``stream_url``, ``hangup``, ``transfer``, ``speak``...)
and the key that signs the webhooks the server receives.

A real Telnyx answers the server's ``answer`` by opening the media socket; here the runner
does, with the ``stream_url`` this API records for the call. This only works against a
server that trusts the runner: ``TELNYX_PUBLIC_KEY`` = :attr:`TelnyxRig.public_key`,
``TELNYX_API_BASE_URL`` = :attr:`TelnyxRig.api_url`, ``TELNYX_API_KEY`` =
:attr:`TelnyxRig.api_key` (``scenarios/local_server.py`` starts its server so; see
docs/scenarios.md for a server of your own).

A plain asyncio HTTP/1.1 server on the loopback (one request per connection: the server's
client, ``httpx.post``, opens one per command), run in the runner's event loop, so the
server's ``answer`` is served while the runner awaits the webhook that caused it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

ALREADY_ENDED = {"errors": [{"code": "90018", "title": "Call has already ended"}]}
_ACTION = re.compile(r"^/v2/calls/(?P<id>[^/]+)/actions/(?P<action>\w+)$")
MAX_BODY = 1 << 20


@dataclass(slots=True, kw_only=True)
class Answer:
    """How the server took the call: a media stream, or refused (``refusal`` says how)."""

    stream_url: str = ""
    client_state: str | None = None
    refusal: str = ""


@dataclass(slots=True)
class _Call:
    answer: asyncio.Future[Answer]
    commands: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ended: bool = False  # call.hangup was sent: later commands get 422 90018


class TelnyxRig:
    """The runner's Telnyx: a signing key and a Call Control API on ``127.0.0.1:port``."""

    def __init__(self, *, seed: bytes | None = None, port: int = 0) -> None:
        self.key = SigningKey(seed) if seed else SigningKey.generate()
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        # Derived from the key: one secret (the seed) configures both ends.
        self.api_key = "KEY" + hashlib.sha256(b"call-control|" + bytes(self.key)).hexdigest()[:32]
        self._calls: dict[str, _Call] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()  # kept: cancelled on close

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TelnyxRig | None:
        """The rig a server of one's own was configured for (docs/scenarios.md):
        ``SCENARIO_TELNYX_SEED`` (base64, 32 bytes) and ``SCENARIO_TELNYX_PORT``; None
        unless both are set. Raises ValueError for a malformed one."""
        seed, port = env.get("SCENARIO_TELNYX_SEED", ""), env.get("SCENARIO_TELNYX_PORT", "")
        if not (seed and port):
            return None
        raw = base64.b64decode(seed, validate=True)
        if len(raw) != 32:
            raise ValueError("SCENARIO_TELNYX_SEED must be 32 bytes in base64")
        return cls(seed=raw, port=int(port))

    @property
    def seed(self) -> str:
        return base64.b64encode(bytes(self.key)).decode()

    @property
    def public_key(self) -> str:
        return base64.b64encode(bytes(self.key.verify_key)).decode()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def server_env(self) -> dict[str, str]:
        """What a server needs set to take this rig's calls."""
        return {
            "TELNYX_PUBLIC_KEY": self.public_key,
            "TELNYX_API_KEY": self.api_key,
            "TELNYX_API_BASE_URL": self.api_url,
        }

    # --- the runner's side -----------------------------------------------------------------

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def expect(self, call_control_id: str) -> asyncio.Future[Answer]:
        """Register a call before its ``call.initiated``: resolved by the server's answer."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._calls[call_control_id] = _Call(answer=future)
        return future

    def commands(self, call_control_id: str) -> list[str]:
        """The Call Control actions the server sent for this call, in order (kept for the
        batch: a report or a test reads them after the call)."""
        call = self._calls.get(call_control_id)
        return [action for action, _ in call.commands] if call else []

    def hung_up_by_server(self, call_control_id: str) -> bool:
        return "hangup" in self.commands(call_control_id)

    def ended(self, call_control_id: str) -> None:
        """``call.hangup`` went out: the call is over at "Telnyx" (kept for the report)."""
        if (call := self._calls.get(call_control_id)) is not None:
            call.ended = True

    # --- the server's side: Call Control REST -----------------------------------------------

    def _command(self, call_control_id: str, action: str, body: dict[str, Any]) -> tuple[int, Any]:
        call = self._calls.get(call_control_id)
        if call is None or call.ended:
            return 422, ALREADY_ENDED
        call.commands.append((action, body))
        if not call.answer.done():
            if action == "answer" and body.get("stream_url"):
                stream_url = str(body["stream_url"])
                call.answer.set_result(
                    Answer(stream_url=stream_url, client_state=body.get("client_state"))
                )
            elif action == "answer":
                call.answer.set_result(
                    Answer(
                        client_state=body.get("client_state"),
                        refusal="answered without a media stream (the apology: calls are "
                        "globally stopped, the profile is not active, or no database)",
                    )
                )
            elif action == "reject":
                call.answer.set_result(Answer(refusal=f"rejected ({body.get('cause', '')})"))
        return 200, {"data": {"result": "ok"}}

    def _route(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any]:
        match = _ACTION.match(path.split("?")[0])
        if headers.get("authorization") != f"Bearer {self.api_key}":
            call = self._calls.get(match["id"]) if match else None
            if call is not None and not call.answer.done():
                # Said in the run's error: otherwise it reads as "never answered".
                refusal = "called Call Control with another TELNYX_API_KEY than the runner's"
                call.answer.set_result(Answer(refusal=refusal))
            return 401, {"errors": [{"code": "10009", "title": "Authentication failed"}]}
        if method != "POST" or match is None:
            # Outbound dials and anything else: the runner only receives calls.
            return 404, {"errors": [{"title": f"not served by the scenario runner: {path}"}]}
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"errors": [{"title": "body is not JSON"}]}
        return self._command(match["id"], match["action"], body if isinstance(body, dict) else {})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            size = min(int(headers.get("content-length") or 0), MAX_BODY)
            raw = await asyncio.wait_for(reader.readexactly(size), 10) if size else b""
            status, answer = self._route(method, path, headers, raw)
            data = json.dumps(answer).encode()
            writer.write(
                f"HTTP/1.1 {status} {'OK' if status < 300 else 'Error'}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
            pass  # a broken request: its client sees the connection close
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
