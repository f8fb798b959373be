"""The tools one call offers the LLM, and running one call the LLM made."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from orchestrator.config import CallConfig
from orchestrator.tools import RESULT_MAX_CHARS, ToolCall, ToolResult, ToolSpec, ToolStatus
from orchestrator.tools.builtin import AfterReply, builtin_specs, run_builtin

logger = logging.getLogger(__name__)


class ToolBox:
    def __init__(self, config: CallConfig) -> None:
        self._config = config
        self._specs: dict[str, ToolSpec] = {
            spec.name: spec for spec in (*builtin_specs(config), *config.tools)
        }
        # One HTTP client per call: connections are reused between its tool calls.
        self._client: httpx.AsyncClient | None = None
        self._client_lock = asyncio.Lock()

    async def _http(self) -> httpx.AsyncClient:
        async with self._client_lock:
            if self._client is None:
                # Building a client loads the TLS trust store (20-40 ms of CPU): not on the
                # event loop every call's audio is paced by.
                self._client = await asyncio.to_thread(httpx.AsyncClient)
            return self._client

    async def aclose(self) -> None:
        """Close the call's HTTP client; never raises (a client that fails to close loses
        nothing, and the call's end must go on)."""
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001
                logger.warning("closing the tools' HTTP client failed", exc_info=True)

    def summary(self) -> dict[str, Any] | None:
        """What the call's record keeps of the tools beyond their turns (a flow: its path)."""
        return None

    def __bool__(self) -> bool:
        return bool(self._specs)

    @property
    def names(self) -> list[str]:
        return list(self._specs)

    def schemas(self) -> list[dict[str, Any]]:
        return [spec.schema() for spec in self._specs.values()]

    def spec(self, name: str) -> ToolSpec | None:
        return self._specs.get(name)

    async def run(self, call: ToolCall) -> tuple[ToolResult, AfterReply | None]:
        """Run one call; never raises for a tool's own failure (it becomes the result)."""
        t = time.monotonic()
        spec = self._specs.get(call.name)
        after: AfterReply | None = None
        try:
            arguments = call.parsed_arguments()
        except ValueError as exc:
            result = ToolResult(
                status=ToolStatus.ERROR, content=f"Invalid arguments (not a JSON object): {exc}"
            )
        else:
            if spec is None:
                result = ToolResult(
                    status=ToolStatus.REFUSED,
                    content=f"Unknown tool {call.name!r}. Available: {', '.join(self.names)}.",
                )
            elif spec.kind == "builtin":
                result, after = run_builtin(self._config, call.name, arguments)
            else:
                from orchestrator.tools.http import run_http_tool

                result = await run_http_tool(
                    spec, arguments, call_id=self._config.call_id, client=await self._http()
                )
        result.latency_ms = round((time.monotonic() - t) * 1000.0, 1)
        if len(result.content) > RESULT_MAX_CHARS:
            result.content = result.content[:RESULT_MAX_CHARS] + "…(truncated)"
        if spec is None or spec.kind != "http":  # (http.py logs its own requests)
            logger.info("call %s: tool %s -> %s", self._config.call_id, call.name,
                        result.status, extra={"call_id": self._config.call_id})  # fmt: skip
        return result, after
