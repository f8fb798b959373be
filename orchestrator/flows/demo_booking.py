"""``demo_booking``: a built-in booking tool for demo flows, so the shipped demo books a
table without an endpoint to set up.

It checks the values against its schema and answers with a reference, as a real booking
endpoint would (docs/tools.md); the booking itself is kept only where every flow's values
are: on the call record (``metrics["flow"]``). A profile's own HTTP tool of the same name
takes its place, which is how a deployment connects the demo flow to a real system.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from orchestrator.tools import ToolResult, ToolSpec, ToolStatus, schema_problems

DEMO_BOOKING = ToolSpec(
    name="demo_booking",
    kind="builtin",
    description=(
        "Book the table once the caller has confirmed the party size, day, time and name. "
        "Tell the caller the reference it returns."
    ),
    parameters={
        "type": "object",
        "properties": {
            "party_size": {"type": "integer", "minimum": 1, "maximum": 12},
            "day": {"type": "string", "description": "The day, as the caller said it"},
            "time": {"type": "string", "description": "The time, e.g. 21:00"},
            "name": {"type": "string", "description": "The name of the booking"},
        },
        "required": ["party_size", "day", "time", "name"],
    },
)


def book(call_id: str, arguments: dict[str, Any]) -> ToolResult:
    if problems := schema_problems(DEMO_BOOKING.parameters, arguments):
        return ToolResult(
            status=ToolStatus.ERROR,
            content=f"Invalid arguments for demo_booking: {'; '.join(problems)}. Ask the "
            "caller for what is missing, then call it again.",
        )
    # The same call and values give the same reference: a retried booking is not a second one.
    seed = json.dumps([call_id, arguments], sort_keys=True).encode()
    ref = "CL-" + hashlib.sha256(seed).hexdigest()[:5].upper()
    return ToolResult(
        status=ToolStatus.OK, content=json.dumps({"booked": True, "ref": ref, **arguments})
    )
