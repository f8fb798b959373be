"""A local fake of the Twilio REST API and Telnyx Call Control, on 127.0.0.1 (stdlib only).

The real clients are pointed at it (``TWILIO_API_BASE_URL``, ``TELNYX_API_BASE_URL``)::

    with FakeCarrier() as carrier:
        settings.TWILIO_API_BASE_URL = carrier.url
        settings.TELNYX_API_BASE_URL = carrier.url + "/v2"
        carrier.script("twilio.update", 404, {"code": 20404, "message": "not found"})
        ...
        carrier.requests  # what was sent, in order: FakeRequest(route, path, body, headers)

Routes: ``twilio.create`` (POST .../Calls.json), ``twilio.update`` (POST .../Calls/<sid>.json:
hang-up ``Status=completed`` or transfer ``Twiml=<Dial>…``), ``telnyx.dial`` (POST /v2/calls),
``telnyx.<action>`` (POST /v2/calls/<id>/actions/<action>: answer, speak, hangup, transfer,
streaming_stop, …). Every route answers 200 with a plausible body unless scripted.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

_ROUTES = [
    (re.compile(r"^/2010-04-01/Accounts/(?P<account>\w+)/Calls\.json$"), "twilio.create"),
    (
        re.compile(r"^/2010-04-01/Accounts/(?P<account>\w+)/Calls/(?P<sid>\w+)\.json$"),
        "twilio.update",
    ),
    (re.compile(r"^/v2/calls$"), "telnyx.dial"),
    (re.compile(r"^/v2/calls/(?P<id>[^/]+)/actions/(?P<action>\w+)$"), "telnyx.action"),
]


@dataclass(slots=True, kw_only=True)
class FakeRequest:
    route: str
    path: str
    params: dict[str, str]
    body: Any  # form fields (Twilio) or JSON (Telnyx)
    headers: dict[str, str]


class FakeCarrier:
    def __init__(self) -> None:
        self.requests: list[FakeRequest] = []
        self._scripted: dict[str, deque[tuple[int, Any]]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeCarrier:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def script(self, route: str, status: int, body: Any) -> None:
        """The next request of ``route`` gets this answer instead of the default one."""
        self._scripted[route].append((status, body))

    def of(self, route: str) -> list[FakeRequest]:
        return [r for r in self.requests if r.route == route]

    def _answer(self, request: FakeRequest) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(request)
            if self._scripted[request.route]:
                return self._scripted[request.route].popleft()
        if request.route == "twilio.create":
            return 201, {"sid": "CA" + "f" * 32, "status": "queued", "to": request.body.get("To")}
        if request.route == "twilio.update":
            return 200, {"sid": request.params["sid"], "status": request.body.get("Status", "")}
        if request.route == "telnyx.dial":
            return 200, {
                "data": {"call_control_id": "v3:fake-outbound-call", "record_type": "call"}
            }
        return 200, {"data": {"result": "ok"}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                found = [(p.match(self.path.split("?")[0]), r) for p, r in _ROUTES]
                matched = [(m, r) for m, r in found if m]
                if not matched:
                    self._reply(404, {"error": f"no route {self.path}"})
                    return
                match, route = matched[0]
                params = match.groupdict()
                if route == "telnyx.action":
                    route = f"telnyx.{params['action']}"
                if "json" in (self.headers.get("Content-Type") or ""):
                    body: Any = json.loads(raw or b"{}")
                else:
                    body = {
                        k: v[0] if len(v) == 1 else v for k, v in parse_qs(raw.decode()).items()
                    }
                status, answer = fake._answer(
                    FakeRequest(
                        route=route,
                        path=self.path,
                        params=params,
                        body=body,
                        headers={k.lower(): v for k, v in self.headers.items()},
                    )
                )
                self._reply(status, answer)

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
