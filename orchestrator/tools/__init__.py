"""What the agent can do besides talking: tools the LLM calls during a reply.

    LLM stream ─► text deltas (spoken) + ToolCall items
                                   │
                  ToolBox.run(call) ├─► built-in: end_call, transfer_call (builtin.py) → an
                                   │     action the session carries out after the reply plays
                                   └─► HTTP tools defined in the admin (http.py): a signed
                                         request, the response is the result
    ToolResult ─► a ``tool`` turn in the transcript, and a ``tool`` message for the LLM

Plain Python (no Django): ``calls/`` turns a profile's tools into :class:`ToolSpec`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ToolStatus(StrEnum):
    OK = "ok"
    ERROR = "error"  # the tool failed: HTTP error, bad response, invalid arguments
    TIMEOUT = "timeout"
    REFUSED = "refused"  # not allowed (unknown tool, destination not on the allow-list)
    CANCELLED = "cancelled"  # the call ended or the caller interrupted before it finished


@dataclass(slots=True, kw_only=True, frozen=True)
class ToolSpec:
    """One tool the LLM may call. ``kind``: ``http`` (defined in the admin) or ``builtin``."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    kind: str = "http"
    url: str = ""
    method: str = "POST"
    timeout_s: float = 5.0
    secret: str = ""  # HMAC-SHA256 key: X-Voiceapp-Signature over the request body

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters or {"type": "object", "properties": {}},
            },
        }


@dataclass(slots=True, kw_only=True)
class ToolCall:
    """A call the LLM asked for: ``arguments`` is the raw JSON text it produced."""

    id: str
    name: str
    arguments: str = ""

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as an object; raises ``ValueError`` if they are not one."""
        value = json.loads(self.arguments or "{}")
        if not isinstance(value, dict):
            raise ValueError("tool arguments must be a JSON object")
        return value

    def as_message(self) -> dict[str, Any]:
        """The ``tool_calls`` entry of the assistant message that asked for it."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments or "{}"},
        }


@dataclass(slots=True, kw_only=True)
class ToolResult:
    status: ToolStatus
    content: str  # what the LLM reads (JSON or text), size-capped
    latency_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is ToolStatus.OK


RESULT_MAX_CHARS = 4000  # a tool result the LLM reads is cut to this


def schema_problems(schema: dict[str, Any], value: Any, *, limit: int = 5) -> list[str]:
    """Why ``value`` does not fit the JSON Schema ``schema`` ("party_size: 'four' is not of
    type 'integer'"), at most ``limit`` reasons; empty when it fits. Shared by HTTP tools and
    flow transitions, so the LLM reads the same kind of sentence from both."""
    import jsonschema  # (only where arguments are checked: keeps this module light)

    validator = jsonschema.Draft202012Validator(schema or {"type": "object", "properties": {}})
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    problems = []
    for error in errors[:limit]:
        where = ".".join(str(part) for part in error.absolute_path)
        problems.append(f"{where}: {error.message}" if where else error.message)
    return problems


def tool_exchange(
    text: str, calls: list[ToolCall], results: list[ToolResult]
) -> list[dict[str, Any]]:
    """The messages that tell the LLM what it called and what came back."""
    # content null, not "": what the APIs themselves return for a tool-call message.
    asked: dict[str, Any] = {
        "role": "assistant",
        "content": text if text.strip() else None,
        "tool_calls": [c.as_message() for c in calls],
    }
    answers = [
        {"role": "tool", "tool_call_id": call.id, "content": result.content}
        for call, result in zip(calls, results, strict=True)
    ]
    return [asked, *answers]

