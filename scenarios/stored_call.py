"""The call as the server stored it (the Call and its Turns), read once it is over.

Assertions judge this record, never what the client thinks it heard: the admin shows the
same call, so a failing scenario can be opened and read there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async

from calls import selectors
from calls.models import CallStatus, EndReason, ExtractionStatus
from scenarios.caller_line import CallRef

FINISHED = (CallStatus.ENDED, CallStatus.FAILED)
# Endings whose error detail is worth waiting a moment for (it may be written second).
DETAILED_ENDINGS = (EndReason.BUSY, EndReason.ERROR)
DETAIL_GRACE_S = 2.0


@dataclass(slots=True, kw_only=True)
class StoredTurn:
    sequence: int
    role: str  # user | assistant | tool
    text: str
    interrupted: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    tool_name: str = ""
    tool_arguments: Any = None
    unanswered_reason: str = ""


@dataclass(slots=True, kw_only=True)
class StoredCall:
    id: str
    external_id: str = ""
    status: str
    end_reason: str
    error_detail: str = ""
    duration_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    dtmf_digits: str = ""
    extraction_status: str = ""
    extraction: dict[str, Any] | None = None
    turns: list[StoredTurn] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def load(ref: CallRef) -> StoredCall | None:
    """The call ``ref`` names: by its id once known (the simulator tells the caller), else by
    the carrier's id for it on its channel (Twilio CallSid, Telnyx call_control_id)."""
    if ref.call_id:
        call = selectors.call_get(call_id=ref.call_id)
    else:
        call = selectors.call_by_external_id(channel=ref.channel, external_id=ref.external_id)
    if call is None:
        return None
    duration = (
        (call.ended_at - call.started_at).total_seconds()
        if call.ended_at and call.started_at
        else None
    )
    return StoredCall(
        id=str(call.id),
        external_id=call.external_id,
        status=call.status,
        end_reason=call.end_reason,
        error_detail=call.error_detail,
        duration_s=duration,
        metrics=dict(call.metrics or {}),
        dtmf_digits=call.dtmf_digits,
        extraction_status=call.extraction_status,
        extraction=call.extraction if isinstance(call.extraction, dict) else None,
        turns=[
            StoredTurn(
                sequence=t.sequence,
                role=t.role,
                text=t.text,
                interrupted=t.interrupted,
                metrics=dict(t.metrics or {}),
                tool_name=t.tool_name,
                tool_arguments=t.tool_arguments,
                unanswered_reason=t.unanswered_reason,
            )
            for t in selectors.call_turns(call_id=call.id)
        ],
    )


async def wait_until_finished(
    ref: CallRef, *, extraction: bool, timeout_s: float
) -> StoredCall | None:
    """The stored call once it ended (and, if asked, its extraction is no longer pending);
    the last state read if ``timeout_s`` passes first (None: never stored)."""
    deadline = time.monotonic() + timeout_s
    ended_seen: float | None = None
    # Not thread-sensitive: the runner may run inside a sync view's thread (the admin's
    # eager Celery task), whose thread-sensitive executor is busy waiting for it.
    read = database_sync_to_async(load, thread_sensitive=False)
    while True:
        stored = await read(ref)
        ended = stored is not None and stored.finished and bool(stored.end_reason)
        if ended and ended_seen is None:
            ended_seen = time.monotonic()
        settled = (
            stored is not None
            and ended
            # Whoever ends a call first sets its reason; the session's error detail (a busy
            # refusal's) may follow in a second write: judged without it, the report lies.
            and (
                stored.error_detail
                or stored.end_reason not in DETAILED_ENDINGS
                or time.monotonic() - (ended_seen or 0.0) > DETAIL_GRACE_S
            )
            and (not extraction or stored.extraction_status != ExtractionStatus.PENDING)
        )
        if settled or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.2)
