"""HTTP tools against a real local endpoint (tests/tools/fake_tool_server.py): signing,
argument validation, errors, timeouts, size caps, cancellation."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from urllib.parse import parse_qsl

import httpx
import pytest

from orchestrator.tools import RESULT_MAX_CHARS, ToolSpec, ToolStatus
from orchestrator.tools.http import TRUNCATED, build_request, run_http_tool
from tests.tools.fake_tool_server import SECRET, serving

BOOKING_SCHEMA = {
    "type": "object",
    "properties": {
        "party_size": {"type": "integer", "minimum": 1},
        "time": {"type": "string"},
        "name": {"type": "string"},
        "terrace": {"type": "boolean"},
    },
    "required": ["party_size", "time"],
}


@pytest.fixture
def tool_server():
    with serving() as server:
        yield server


def booking_tool(url: str, **overrides) -> ToolSpec:
    fields = {
        "name": "book_table",
        "description": "Book a table.",
        "parameters": BOOKING_SCHEMA,
        "url": url,
        "secret": SECRET,
        "timeout_s": 5.0,
    }
    fields.update(overrides)
    return ToolSpec(**fields)


async def test_it_posts_signed_arguments_and_returns_the_compact_json_answer(tool_server):
    arguments = {"party_size": 4, "time": "21:00", "name": "María"}

    result = await run_http_tool(
        booking_tool(tool_server.url("/echo")), arguments, call_id="call-42"
    )

    assert result.status is ToolStatus.OK and result.ok
    assert json.loads(result.content) == {"signature_valid": True, "received": arguments}
    assert "\n" not in result.content and ": " not in result.content  # re-serialized compactly
    assert result.latency_ms > 0
    (received,) = tool_server.requests
    assert received.method == "POST" and received.signature_valid
    assert received.json() == {"tool": "book_table", "call_id": "call-42", "arguments": arguments}
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-Voiceapp-Tool"] == "book_table"
    assert received.headers["X-Voiceapp-Call-Id"] == "call-42"
    assert received.headers["User-Agent"].startswith("voiceapp-tools/")


async def test_the_body_sent_is_the_deterministic_body_it_signs(tool_server):
    spec = booking_tool(tool_server.url("/echo"))
    arguments = {"time": "21:00", "party_size": 2}
    expected = build_request(spec, arguments, call_id="c1")

    await run_http_tool(spec, arguments, call_id="c1")

    (received,) = tool_server.requests
    assert received.body == expected.body
    assert expected.body == (
        b'{"arguments":{"party_size":2,"time":"21:00"},"call_id":"c1","tool":"book_table"}'
    )
    assert received.headers["X-Voiceapp-Signature"] == expected.headers["X-Voiceapp-Signature"]


async def test_a_wrong_secret_gives_a_signature_the_endpoint_rejects(tool_server):
    spec = booking_tool(tool_server.url("/echo"), secret="not-the-shared-secret")

    await run_http_tool(spec, {"party_size": 2, "time": "20:00"})

    assert tool_server.requests[0].signature_valid is False


async def test_a_tool_without_secret_sends_no_signature(tool_server):
    await run_http_tool(
        booking_tool(tool_server.url("/echo"), secret=""), {"party_size": 2, "time": "20:00"}
    )

    assert "X-Voiceapp-Signature" not in tool_server.requests[0].headers


async def test_invalid_arguments_are_an_error_the_llm_can_act_on_and_nothing_is_sent(tool_server):
    spec = booking_tool(tool_server.url("/echo"))

    result = await run_http_tool(spec, {"party_size": "four"})

    assert result.status is ToolStatus.ERROR
    assert "party_size" in result.content and "'time' is a required property" in result.content
    assert "nothing was sent" in result.content
    assert tool_server.requests == []


async def test_get_sends_arguments_as_a_signed_query_string(tool_server):
    spec = booking_tool(tool_server.url("/echo?key=abc"), method="GET")
    arguments = {"party_size": 4, "time": "21:00", "name": "María López", "terrace": True}

    result = await run_http_tool(spec, arguments, call_id="call-7")

    assert result.status is ToolStatus.OK
    (received,) = tool_server.requests
    assert received.method == "GET" and received.body == b""
    assert received.signature_valid  # HMAC of the raw query string, as received
    assert dict(parse_qsl(received.query)) == {
        "key": "abc",  # the URL's own query stays
        "name": "María López",
        "party_size": "4",
        "terrace": "true",
        "time": "21:00",
    }
    assert received.headers["X-Voiceapp-Call-Id"] == "call-7"
    assert json.loads(result.content)["signature_valid"] is True


async def test_a_text_answer_is_returned_as_text(tool_server):
    result = await run_http_tool(
        booking_tool(tool_server.url("/text")), {"party_size": 4, "time": "9"}
    )

    assert result.status is ToolStatus.OK
    assert result.content == "Table for 4 booked, ref 123."


async def test_a_server_error_becomes_an_error_result_with_status_and_excerpt(tool_server):
    result = await run_http_tool(
        booking_tool(tool_server.url("/fail")), {"party_size": 4, "time": "9"}
    )

    assert result.status is ToolStatus.ERROR
    assert "HTTP 500" in result.content and "database down" in result.content


async def test_a_redirect_is_reported_not_followed(tool_server):
    # Even a client that follows redirects by default: the tool's request never does.
    async with httpx.AsyncClient(follow_redirects=True) as client:
        result = await run_http_tool(
            booking_tool(tool_server.url("/redirect")),
            {"party_size": 4, "time": "9"},
            client=client,
        )

    assert result.status is ToolStatus.ERROR
    assert "HTTP 302" in result.content and "elsewhere.example" in result.content
    assert len(tool_server.requests) == 1


async def test_a_hanging_endpoint_times_out_within_the_tool_timeout(tool_server):
    spec = booking_tool(tool_server.url("/slow"), timeout_s=0.5)

    result = await run_http_tool(spec, {"party_size": 4, "time": "9"})

    assert result.status is ToolStatus.TIMEOUT
    assert "did not answer within 0.5 s" in result.content
    # The endpoint answers only when the test ends: a generous bound, not a timing.
    assert 400 <= result.latency_ms < 5000


async def test_a_huge_answer_is_capped_without_reading_it_all(tool_server):
    result = await run_http_tool(
        booking_tool(tool_server.url("/huge")), {"party_size": 4, "time": "9"}
    )

    assert result.status is ToolStatus.OK
    assert len(result.content) == RESULT_MAX_CHARS and result.content.endswith(TRUNCATED)
    assert not tool_server.huge_completed  # the client stopped reading long before 50 MB


async def test_a_refused_connection_is_an_error_result():
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    result = await run_http_tool(
        booking_tool(f"http://127.0.0.1:{port}/book"), {"party_size": 4, "time": "9"}
    )

    assert result.status is ToolStatus.ERROR
    assert "could not reach it" in result.content and "ConnectError" in result.content


async def test_cancelling_the_caller_cancels_the_tool(tool_server):
    spec = booking_tool(tool_server.url("/slow"), timeout_s=10)
    task = asyncio.create_task(run_http_tool(spec, {"party_size": 4, "time": "9"}))
    assert await asyncio.to_thread(tool_server.arrived.wait, 10)

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_each_call_is_logged_without_the_secret(tool_server, caplog):
    with caplog.at_level(logging.INFO, logger="orchestrator.tools.http"):
        await run_http_tool(
            booking_tool(tool_server.url("/fail")), {"party_size": 4, "time": "9"}, call_id="c-9"
        )

    (record,) = [r for r in caplog.records if r.name == "orchestrator.tools.http"]
    assert "c-9" in record.getMessage() and "book_table" in record.getMessage()
    assert "error" in record.getMessage() and " ms" in record.getMessage()
    assert SECRET not in record.getMessage()
