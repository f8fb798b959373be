"""HTTP tools defined in the admin: the LLM's arguments go to the tool's URL as a signed
request, and the response is what the LLM reads back (docs/tools.md).

    POST <url>                                   GET <url>?<arguments as query parameters>
    {"arguments":{…},"call_id":"…","tool":"…"}
    X-Voiceapp-Signature: sha256=<hex HMAC-SHA256(secret, body)>        (POST: the body bytes,
    X-Voiceapp-Tool, X-Voiceapp-Call-Id, User-Agent                     GET: the query string)

:func:`run_http_tool` never raises for a failure of the tool or the network: invalid
arguments, an HTTP error, a redirect, a refused connection and a timeout all become a
:class:`ToolResult` the LLM can apologise for, and the call goes on. Cancellation (the
caller hung up or interrupted) propagates.

Clients: the caller may pass an ``httpx.AsyncClient`` it owns (the session keeps one per call
to reuse connections); without one, each request opens and closes its own. No client is kept
at module level: an ``AsyncClient``'s connections belong to the event loop that opened them,
and tests and the admin's "test this tool" button each run their own loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from orchestrator.tools import (
    RESULT_MAX_CHARS,
    ToolResult,
    ToolSpec,
    ToolStatus,
    schema_problems,
)

logger = logging.getLogger(__name__)

USER_AGENT = "voiceapp-tools/1.0"
# Read at most this much of a response: the LLM reads RESULT_MAX_CHARS, but a JSON answer
# may shrink a lot once re-serialized compactly, so read more than that, never all of it.
MAX_RESPONSE_BYTES = 64 * 1024
TRUNCATED = "…(truncated)"
EXCERPT_CHARS = 200  # of an error response's body, in the error the LLM reads


@dataclass(slots=True, kw_only=True, frozen=True)
class ToolRequest:
    """Exactly what goes on the wire, so the admin can show the request it sent."""

    method: str
    url: str  # with the query string for GET
    body: bytes  # empty for GET
    headers: dict[str, str]
    signed: bytes  # the bytes the signature covers: the body (POST) or the query string (GET)


def sign(secret: str, payload: bytes) -> str:
    """``sha256=<hex>``: the profile webhook's scheme (calls/webhooks.py)."""
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def compact_json(value: Any) -> str:
    """One deterministic text per value (sorted keys, no spaces), so a receiver that
    re-serializes the same way gets the same bytes."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def validate_arguments(spec: ToolSpec, arguments: dict[str, Any]) -> str | None:
    """Why ``arguments`` do not fit the tool's schema (a sentence the LLM can act on), or
    None when they do."""
    problems = schema_problems(spec.parameters, arguments)
    if not problems:
        return None
    return (
        f"Invalid arguments for tool {spec.name}, nothing was sent: "
        + "; ".join(problems)
        + ". Ask the caller for what is missing or fix the arguments, then call it again."
    )


def _query_value(value: Any) -> str:
    # Strings as they are; numbers, booleans, null, lists and objects as their JSON text
    # (true, 4, null, ["a","b"]), so the receiver can tell them apart.
    return value if isinstance(value, str) else compact_json(value)


def build_request(spec: ToolSpec, arguments: dict[str, Any], *, call_id: str = "") -> ToolRequest:
    """The signed request for one call of ``spec``: deterministic, so the same arguments
    always give the same bytes and the same signature."""
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "application/json, text/plain;q=0.9, */*;q=0.5",
        "X-Voiceapp-Tool": spec.name,
        "X-Voiceapp-Call-Id": call_id,
    }
    if spec.method.upper() == "GET":
        parts = urlsplit(spec.url)
        query = urlencode(sorted((k, _query_value(v)) for k, v in arguments.items()))
        # A query already in the URL (an API key, say) stays first; the signature covers the
        # whole query string as sent, which is what the receiver sees.
        full_query = "&".join(q for q in (parts.query, query) if q)
        url = urlunsplit(parts._replace(query=full_query))
        method, body, signed = "GET", b"", full_query.encode()
    else:
        payload = {"tool": spec.name, "call_id": call_id, "arguments": arguments}
        method, url, body = "POST", spec.url, compact_json(payload).encode()
        signed = body
        headers["Content-Type"] = "application/json"
    if spec.secret:
        headers["X-Voiceapp-Signature"] = sign(spec.secret, signed)
    return ToolRequest(method=method, url=url, body=body, headers=headers, signed=signed)


def _cap(text: str, *, cut: bool = False) -> str:
    if len(text) > RESULT_MAX_CHARS:
        return text[: RESULT_MAX_CHARS - len(TRUNCATED)] + TRUNCATED
    return text + TRUNCATED if cut else text


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


def result_content(raw: bytes, *, encoding: str | None, cut: bool) -> str:
    """What the LLM reads: JSON re-serialized compactly, else the text, capped."""
    text = raw.decode(encoding or "utf-8", errors="replace")
    if not cut:
        try:
            text = compact_json(json.loads(text))
        except ValueError:  # not JSON: the text as it came
            text = text.strip()
    return _cap(text, cut=cut) if text else "(no content)"


async def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    """The body up to MAX_RESPONSE_BYTES, and whether there was more (left unread)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return b"".join(chunks)[:MAX_RESPONSE_BYTES], True
    return b"".join(chunks), False


async def _send(client: httpx.AsyncClient, spec: ToolSpec, request: ToolRequest) -> ToolResult:
    async with client.stream(
        request.method,
        request.url,
        content=request.body or None,
        headers=request.headers,
        timeout=spec.timeout_s,
        # A redirect is reported, never followed: the tool's request is signed for its own
        # URL, and another host must not receive it (or its arguments) unasked.
        follow_redirects=False,
    ) as response:
        raw, cut = await _read_capped(response)
    status = response.status_code
    if 300 <= status < 400:
        location = response.headers.get("Location", "")
        return ToolResult(
            status=ToolStatus.ERROR,
            content=f"Tool {spec.name} failed: HTTP {status} redirect to {location or '?'} "
            "(not followed; the tool's URL should be the final address).",
        )
    if status >= 400:
        excerpt = _excerpt(raw.decode(response.encoding or "utf-8", errors="replace"))
        return ToolResult(
            status=ToolStatus.ERROR,
            content=f"Tool {spec.name} failed: HTTP {status}"
            + (f": {excerpt}" if excerpt else "."),
        )
    return ToolResult(
        status=ToolStatus.OK, content=result_content(raw, encoding=response.encoding, cut=cut)
    )


async def run_http_tool(
    spec: ToolSpec,
    arguments: dict[str, Any],
    *,
    call_id: str = "",
    client: httpx.AsyncClient | None = None,
) -> ToolResult:
    """Call the HTTP tool ``spec`` with the LLM's ``arguments``; see the module docstring."""
    started = time.perf_counter()
    problem = validate_arguments(spec, arguments)
    if problem is not None:
        result = ToolResult(status=ToolStatus.ERROR, content=problem)
    else:
        request = build_request(spec, arguments, call_id=call_id)
        try:
            # The whole request (connect, send, read) has spec.timeout_s. httpx's own timeout
            # (the same value, per phase) can only fire earlier on a single phase; both mean
            # the same result, so it does not matter which one wins.
            async with asyncio.timeout(spec.timeout_s):
                if client is not None:
                    result = await _send(client, spec, request)
                else:
                    async with httpx.AsyncClient() as own:
                        result = await _send(own, spec, request)
        except (TimeoutError, httpx.TimeoutException):
            result = ToolResult(
                status=ToolStatus.TIMEOUT,
                content=f"Tool {spec.name} did not answer within {spec.timeout_s:g} s.",
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # Refused or reset connection, DNS failure, a broken response: the tool failed,
            # the call goes on. (Cancellation is not an HTTPError: it propagates.)
            result = ToolResult(
                status=ToolStatus.ERROR,
                content=f"Tool {spec.name} failed: could not reach it "
                f"({type(exc).__name__}: {_excerpt(str(exc)) or 'no detail'}).",
            )
    result.latency_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "call %s: tool %s %s in %.0f ms",
        call_id or "-",
        spec.name,
        result.status,
        result.latency_ms,
        extra={"call_id": call_id, "tool": spec.name, "tool_status": str(result.status)},
    )
    return result
