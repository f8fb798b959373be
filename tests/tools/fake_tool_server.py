"""A local HTTP endpoint standing in for a customer's tool (the network edge of HTTP tools).

It checks each request's ``X-Voiceapp-Signature`` the way docs/tools.md tells a receiver to,
records what it got, and answers by path:

    /echo      200, pretty-printed JSON: the arguments it received and whether the signature
               was valid (the tool must re-serialize it compactly)
    /text      200, plain text
    /fail      500 with a short error body
    /redirect  302 to another host
    /slow      answers only when the test ends (or after 30 s): a tool that hangs
    /huge      200 with a 50 MB body, written until the client stops reading
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

SECRET = "tool-secret-for-tests"
HUGE_BYTES = 50 * 1024 * 1024


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeToolServer:
    secret: str = SECRET
    requests: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)  # a request came in
    release: threading.Event = field(default_factory=threading.Event)  # /slow may answer
    huge_completed: bool = False  # the whole /huge body was written (it must not be)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _valid(secret: str, signed: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def _start(state: FakeToolServer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            signed = body if self.command == "POST" else parts.query.encode()
            received = Received(
                method=self.command,
                path=parts.path,
                query=parts.query,
                headers=dict(self.headers.items()),
                body=body,
                signature_valid=_valid(
                    state.secret, signed, self.headers.get("X-Voiceapp-Signature", "")
                ),
            )
            state.requests.append(received)
            state.arrived.set()
            getattr(self, "_" + parts.path.strip("/"), self._echo)(received)

        do_GET = do_POST = _handle  # noqa: N815

        def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _echo(self, received: Received) -> None:
            if received.method == "POST":
                arguments = received.json()["arguments"]
            else:
                arguments = dict(parse_qsl(received.query))
            answer = {"signature_valid": received.signature_valid, "received": arguments}
            body = json.dumps(answer, indent=4, ensure_ascii=False).encode()
            self._send(200, body, "application/json; charset=utf-8")

        def _text(self, received: Received) -> None:
            self._send(200, b"  Table for 4 booked, ref 123.\n", "text/plain")

        def _fail(self, received: Received) -> None:
            self._send(500, b"database down\n", "text/plain")

        def _redirect(self, received: Received) -> None:
            self._send(302, b"", "text/plain", Location="http://elsewhere.example/steal")

        def _slow(self, received: Received) -> None:
            state.release.wait(30)
            self._send(200, b'{"late": true}', "application/json")

        def _huge(self, received: Received) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(HUGE_BYTES))
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(HUGE_BYTES // len(chunk)):
                    self.wfile.write(chunk)
            except OSError:  # the client stopped reading and closed: what we want
                return
            state.huge_completed = True

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextmanager
def serving() -> Iterator[FakeToolServer]:
    """Run the fake tool endpoint for the length of the ``with`` block."""
    state = FakeToolServer()
    server = _start(state)
    try:
        yield state
    finally:
        state.release.set()  # a hanging /slow answers, so its thread ends
        server.shutdown()
        server.server_close()
