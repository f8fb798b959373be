"""Log context: every line logged while handling a call carries its id, channel and profile.

Consumers set the context variables before starting the session task; tasks copy the
context when created, so the whole call (orchestrator included) is tagged without the
orchestrator knowing about Django.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

call_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "call_context", default=None
)

_FIELDS = ("call_id", "channel", "profile")


def bind_call(**values: str) -> None:
    current = dict(call_context.get() or {})
    current.update({k: v for k, v in values.items() if v})
    call_context.set(current)


class CallContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        ctx = call_context.get() or {}
        for field in _FIELDS:
            if not getattr(record, field, None) and field in ctx:
                setattr(record, field, ctx[field])
        tag = " ".join(f"{f}={getattr(record, f)}" for f in _FIELDS if getattr(record, f, None))
        record.call_tag = f"[{tag}] " if tag else ""
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in _FIELDS:
            value = getattr(record, field, None)
            if value:
                data[field] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)
