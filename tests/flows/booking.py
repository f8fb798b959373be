"""A booking flow shared by the flow tests: greet → collect → confirm → book → goodbye, and
"speak to a person" from anywhere."""

from __future__ import annotations

import copy
from typing import Any

NOTHING: dict[str, Any] = {"type": "object", "properties": {}}
DETAILS = {
    "type": "object",
    "properties": {
        "party_size": {"type": "integer", "minimum": 1},
        "day": {"type": "string"},
        "time": {"type": "string"},
        "name": {"type": "string"},
    },
    "required": ["party_size", "day", "time", "name"],
}

FLOW: dict[str, Any] = {
    "start": "greet",
    "global_transitions": [
        {"name": "speak_to_person", "description": "The caller asks for a person.",
         "schema": NOTHING, "target": "transfer"},
    ],
    "nodes": [
        {"name": "greet", "task": "GREET: ask how you can help.",
         "transitions": [{"name": "wants_booking", "description": "The caller wants a table.",
                          "schema": NOTHING, "target": "collect"}]},
        {"name": "collect", "task": "COLLECT: ask for party size, day, time and name.",
         "max_turns": 3, "fallback": "transfer",
         "transitions": [{"name": "set_booking_details", "description": "All four known.",
                          "schema": DETAILS, "target": "confirm"}]},
        {"name": "confirm", "task": "CONFIRM: read the booking back.",
         "transitions": [{"name": "confirmed", "description": "The caller said yes.",
                          "schema": NOTHING, "target": "book"}]},
        {"name": "book", "task": "BOOK: call book_table with the collected values.",
         "tools": ["book_table"], "context": "values",
         "transitions": [{"name": "booked", "description": "book_table answered.",
                          "schema": {"type": "object", "properties": {"ref": {"type": "string"}}},
                          "target": "goodbye"}]},
        {"name": "goodbye", "task": "GOODBYE: say goodbye.", "tools": ["end_call"]},
        {"name": "transfer", "task": "", "on_enter": [{"say": "Putting you through."},
                                                      {"transfer": "Front desk"}]},
    ],
}


def flow(**changes: Any) -> dict[str, Any]:
    """A copy of FLOW to break in one test."""
    data = copy.deepcopy(FLOW)
    data.update(changes)
    return data
