"""A local fake of the OpenAI/Groq HTTP API for tests, on 127.0.0.1 (stdlib only).

Point an SDK at it with ``base_url=vendor.openai_base_url`` (OpenAI paths, ``/v1/...``)
or ``vendor.groq_base_url`` (Groq's ``/openai/v1/...``); any path ending in a known
endpoint is served, so both work with one server::

    with FakeVendor() as vendor:
        vendor.script("chat", Reply.chat_stream(["Hel", "lo"]), Reply.error(500))
        vendor.default["chat"] = Reply.chat('{"intent": "booking"}')  # JSON answers
        vendor.responder["chat"] = lambda request: Reply.chat(...)  # computed answers
        ...
        vendor.requests  # what the SDK sent, in order

Endpoints (``route`` names): ``chat`` (``/chat/completions``, streaming SSE when the
request says ``"stream": true``, else one JSON completion), ``transcriptions``
(``/audio/transcriptions``, multipart upload), ``speech`` (``/audio/speech``, raw PCM),
``models`` (``/models``). Each request takes the next scripted :class:`Reply` of its
route, else ``responder[route](request)``, else ``default[route]``.

Tool calls: ``Reply.tool_call_stream([("book_table", {"party_size": 4})], text=["Sure."])``
streams them in pieces, as OpenAI and Groq do.

Failure modes are replies too: ``Reply.error(401|429|500, ...)`` (OpenAI-style error
body), ``Reply(..., delay_s=5)`` (slow headers), ``Reply.chat_stream(..., stall_s=5)``
(stalls mid-stream), ``Reply.malformed_stream()`` (broken SSE JSON).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROUTES = {
    "/chat/completions": "chat",
    "/audio/transcriptions": "transcriptions",
    "/audio/speech": "speech",
    "/models": "models",
}


@dataclass(slots=True, kw_only=True)
class Reply:
    """One scripted HTTP answer."""

    status: int = 200
    json_body: Any = None  # sent as application/json
    raw: bytes | None = None  # sent as is (audio)
    content_type: str = "application/json"
    sse_events: list[str] | None = None  # each sent as one ``data: ...`` event
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the status line
    chunk_delay_s: float = 0.0  # between stream events / raw chunks
    stall_s: float = 0.0  # after the first stream event

    @classmethod
    def chat(cls, content: str, *, model: str = "fake-model", **kwargs: Any) -> Reply:
        """A non-streaming completion whose message is ``content`` (e.g. a JSON string)."""
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return cls(json_body=body, **kwargs)

    @classmethod
    def chat_stream(cls, deltas: list[str], *, model: str = "fake-model", **kwargs: Any) -> Reply:
        """An SSE chat completion stream yielding ``deltas``, then ``[DONE]``."""

        def event(delta: dict, finish: str | None) -> str:
            return json.dumps(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        events = [event({"role": "assistant", "content": ""}, None)]
        events += [event({"content": delta}, None) for delta in deltas]
        events += [event({}, "stop"), "[DONE]"]
        return cls(sse_events=events, content_type="text/event-stream", **kwargs)

    @classmethod
    def tool_call_stream(
        cls,
        calls: list[tuple[str, dict[str, Any]]],
        *,
        text: list[str] = (),
        model: str = "fake-model",
        **kwargs: Any,
    ) -> Reply:
        """A stream that says ``text`` deltas, then calls tools the way OpenAI and Groq
        stream them: per call an ``index``, the id, type and name in its first delta and
        the JSON arguments cut into pieces over the next ones; ``finish_reason``
        ``tool_calls``. ``calls``: ``[(name, arguments), ...]``."""
        reply = cls.chat_stream(list(text), model=model, **kwargs)
        head = reply.sse_events[: 1 + len(text)]
        chunk = json.loads(head[0])

        def event(delta: dict[str, Any], finish: str | None = None) -> str:
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
            return json.dumps(chunk)

        events = list(head)
        for index, (name, arguments) in enumerate(calls):
            first = {"index": index, "id": f"call_fake_{index}", "type": "function",
                     "function": {"name": name, "arguments": ""}}  # fmt: skip
            events.append(event({"tool_calls": [first]}))
            encoded = json.dumps(arguments)
            for start in range(0, len(encoded), 7):  # arguments arrive in pieces
                piece = {"index": index, "function": {"arguments": encoded[start : start + 7]}}
                events.append(event({"tool_calls": [piece]}))
        events += [event({}, "tool_calls"), "[DONE]"]
        reply.sse_events = events
        return reply

    @classmethod
    def malformed_stream(cls, *, after: list[str] = ()) -> Reply:
        """A stream that sends ``after`` deltas, then an event that is not JSON."""
        reply = cls.chat_stream(list(after))
        reply.sse_events = reply.sse_events[: 1 + len(after)] + ['{"id": "chatcmpl-fake", "choi']
        return reply

    @classmethod
    def transcription(cls, text: str, **kwargs: Any) -> Reply:
        return cls(json_body={"text": text}, **kwargs)

    @classmethod
    def speech(cls, pcm: bytes, **kwargs: Any) -> Reply:
        return cls(raw=pcm, content_type="application/octet-stream", **kwargs)

    @classmethod
    def error(cls, status: int, message: str = "", **kwargs: Any) -> Reply:
        kinds = {
            400: "invalid_request_error",
            401: "invalid_api_key",
            429: "rate_limit_exceeded",
        }
        kind = kinds.get(status, "server_error")
        body = {"error": {"message": message or f"fake {status}", "type": kind, "code": kind}}
        headers = {"retry-after": "0"} if status == 429 else {}
        return cls(status=status, json_body=body, headers=headers, **kwargs)


@dataclass(slots=True, kw_only=True)
class Request:
    """What the fake received: ``json`` for JSON bodies, ``form``/``files`` for multipart."""

    method: str
    path: str
    route: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


class FakeVendor:
    """The server; a context manager that serves from a daemon thread."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.default: dict[str, Reply] = {
            "chat": Reply.chat_stream(["Hello", " from", " the fake."]),
            "transcriptions": Reply.transcription("hello from the fake"),
            "speech": Reply.speech(b"\x00\x01" * 2400),
            "models": Reply(json_body={"object": "list", "data": []}),
        }
        self.responder: dict[str, Callable[[Request], Reply]] = {}
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def groq_base_url(self) -> str:
        return self.url  # the groq SDK adds /openai/v1 itself

    def script(self, route: str, *replies: Reply) -> None:
        """Queue replies for the next requests of ``route`` (then back to the default)."""
        with self._lock:
            self._scripts[route].extend(replies)

    def calls(self, route: str) -> list[Request]:
        return [request for request in self.requests if request.route == route]

    def _next_reply(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self._scripts[request.route]:
                return self._scripts[request.route].popleft()
        if request.route in self.responder:
            return self.responder[request.route](request)
        return self.default[request.route]

    def __enter__(self) -> FakeVendor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(vendor: FakeVendor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            path = self.path.split("?", 1)[0]
            route = next((name for suffix, name in ROUTES.items() if path.endswith(suffix)), "")
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if not route:
                self._send(Reply.error(404, f"no route {path}"))
                return
            request = Request(
                method=self.command,
                path=path,
                route=route,
                headers={key.lower(): value for key, value in self.headers.items()},
            )
            content_type = self.headers.get("content-type", "")
            if content_type.startswith("application/json") and body:
                request.json = json.loads(body)
            elif content_type.startswith("multipart/form-data"):
                request.form, request.files = _parse_multipart(content_type, body)
            reply = vendor._next_reply(request)
            if route == "chat" and reply.sse_events and not (request.json or {}).get("stream"):
                reply = Reply.error(400, "scripted a stream for a non-streaming request")
            try:
                self._send(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test): nothing left to answer

        def _send(self, reply: Reply) -> None:
            if reply.delay_s:
                time.sleep(reply.delay_s)
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if reply.sse_events is not None:
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for index, event in enumerate(reply.sse_events):
                    self._chunk(f"data: {event}\n\n".encode())
                    if index == 1 and reply.stall_s:
                        time.sleep(reply.stall_s)
                    elif reply.chunk_delay_s:
                        time.sleep(reply.chunk_delay_s)
                self._chunk(b"")
                return
            data = reply.raw if reply.raw is not None else json.dumps(reply.json_body).encode()
            if reply.chunk_delay_s and reply.raw is not None:
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for start in range(0, len(data), 4800):
                    self._chunk(data[start : start + 4800])
                    time.sleep(reply.chunk_delay_s)
                self._chunk(b"")
                return
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    return Handler


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    message = BytesParser(policy=HTTP).parsebytes(
        f"content-type: {content_type}\r\n\r\n".encode() + body
    )
    form: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        if part.get_filename():
            files[name] = payload
        else:
            form[name] = payload.decode()
    return form, files
