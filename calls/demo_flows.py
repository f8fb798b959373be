"""The demo booking flow (docs/flows.md), seeded on the ``demo-flow`` (English) and
``demo-flow-es`` (Spanish) profiles.

greet → collect (party size, day, time, name; one node that asks only for what is
missing) → confirm → book (the built-in ``demo_booking`` store) → goodbye and hang up;
"speak to a person" from any node → transfer to the front desk. The Spanish flow is the
same graph (same node and transition names, which the LLM reads as function names) with
its tasks and lines in Spanish.
"""

from __future__ import annotations

from typing import Any

NOTHING: dict[str, Any] = {"type": "object", "properties": {}}

DEMO_FLOW_EN: dict[str, Any] = {  # (the Spanish one is derived from it below)
    "start": "greet",
    "global_transitions": [
        {
            "name": "speak_to_person",
            "description": "The caller asks to speak or talk to a person, a human, a manager or "
            "the staff.",
            "schema": NOTHING,
            "target": "transfer",
        }
    ],
    "nodes": [
        {
            "name": "greet",
            "task": "You have greeted the caller. Find out what they want. For a booking, "
            "call wants_booking. Answer questions about opening hours in one sentence.",
            "transitions": [
                {
                    "name": "wants_booking",
                    "description": "The caller wants to book or reserve a table.",
                    "schema": NOTHING,
                    "target": "collect",
                }
            ],
        },
        {
            "name": "collect",
            "task": "Collect the booking: number of people, day, time and name. Ask only for "
            "the first one still missing, one question at a time, never invent one. When "
            "you have all four, call set_booking_details.",
            "max_turns": 8,
            "fallback": "transfer",
            "transitions": [
                {
                    "name": "set_booking_details",
                    "description": "All four booking details are known.",
                    "schema": {
                        "type": "object",
                        "properties": {
                            "party_size": {"type": "integer", "minimum": 1, "maximum": 12},
                            "day": {"type": "string", "description": "As the caller said it"},
                            "time": {"type": "string", "description": "e.g. 21:00"},
                            "name": {"type": "string"},
                        },
                        "required": ["party_size", "day", "time", "name"],
                    },
                    "target": "confirm",
                }
            ],
        },
        {
            "name": "confirm",
            # The read-back is a fixed line with the collected values: every engine says it
            # right, and the caller's answer is the next request (respond_immediately).
            "on_enter": [
                {"say": "So that is a table for {party_size} on {day} at {time}, under the "
                 "name {name}. Is that right?"}
            ],
            "respond_immediately": False,
            "task": "The booking was read back to the caller. If they say it is right, call "
            "confirmed; if something is wrong, call change_details.",
            "max_turns": 3,
            "fallback": "transfer",
            "transitions": [
                {
                    "name": "confirmed",
                    "description": "The caller said the booking is right.",
                    "schema": NOTHING,
                    "target": "book",
                },
                {
                    "name": "change_details",
                    "description": "The caller wants to change something.",
                    "schema": NOTHING,
                    "target": "collect",
                },
            ],
        },
        {
            "name": "book",
            "task": "Call demo_booking with the collected values now, then call booked with "
            "the reference it returns.",
            "tools": ["demo_booking"],
            "context": "values",
            "transitions": [
                {
                    "name": "booked",
                    "description": "demo_booking confirmed the booking.",
                    "schema": {
                        "type": "object",
                        "properties": {"ref": {"type": "string"}},
                        "required": ["ref"],
                    },
                    "target": "goodbye",
                }
            ],
        },
        {
            "name": "goodbye",
            # Fixed lines: the reference said exactly, and no LLM request between the
            # booking and the goodbye (the 0.5B took over 10 s there on a busy CPU).
            "on_enter": [
                {"say": "Your table is booked, the reference is {ref}. Thank you for calling, "
                 "goodbye!"},
                "end_call",
            ],
        },
        {
            "name": "transfer",
            "on_enter": [
                {"say": "I'll put you through to a person. One moment, please."},
                {"transfer": "Front desk"},
            ],
        },
    ],
}


# Node tasks and lines in Spanish, by node name; everything else is DEMO_FLOW_EN's.
_ES_TASKS = {
    "greet": "Ya has saludado. Averigua qué quiere la persona. Para una reserva, llama a "
    "wants_booking. Responde a preguntas sobre el horario en una frase.",
    "collect": "Recoge la reserva: número de personas, día, hora y nombre. Pregunta solo por el "
    "primer dato que falte, de uno en uno, y nunca inventes ninguno. Cuando tengas los "
    "cuatro, llama a set_booking_details.",
    "confirm": "Se ha leído la reserva a la persona. Si dice que es correcta, llama a "
    "confirmed; si algo está mal, llama a change_details.",
    "book": "Llama ahora a demo_booking con los datos recogidos y después a booked con la "
    "referencia que devuelva.",
}
# Fixed lines in Spanish, by node name.
_ES_LINES = {
    "confirm": [
        {"say": "Entonces es una mesa para {party_size} el {day} a las {time}, a nombre de "
         "{name}. ¿Es correcto?"}
    ],
    "goodbye": [
        {"say": "Su mesa está reservada, la referencia es {ref}. Gracias por llamar, ¡adiós!"},
        "end_call",
    ],
    "transfer": [{"say": "Le paso con una persona. Un momento, por favor."},
                 {"transfer": "Recepción"}],
}  # fmt: skip
# Transition descriptions in Spanish, by name: the LLM reads them to decide, and the local
# model's guide (orchestrator/flows/guide.py) matches the caller's words against them.
_ES_DESCRIPTIONS = {
    "speak_to_person": "Pide hablar con una persona, un humano, el encargado o el personal.",
    "wants_booking": "Quiere reservar una mesa o hacer una reserva.",
    "set_booking_details": "Se conocen los cuatro datos de la reserva.",
    "confirmed": "Ha dicho que la reserva es correcta.",
    "change_details": "Quiere cambiar algún dato.",
    "booked": "demo_booking ha confirmado la reserva.",
}


def _spanish(flow: dict[str, Any]) -> dict[str, Any]:
    def described(transitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**t, "description": _ES_DESCRIPTIONS.get(t["name"], t["description"])}
                for t in transitions]  # fmt: skip

    nodes = []
    for node in flow["nodes"]:
        node = {**node}
        if "transitions" in node:
            node["transitions"] = described(node["transitions"])
        if node["name"] in _ES_TASKS:
            node["task"] = _ES_TASKS[node["name"]]
        if node["name"] in _ES_LINES:
            node["on_enter"] = _ES_LINES[node["name"]]
        nodes.append(node)
    return {**flow, "nodes": nodes, "global_transitions": described(flow["global_transitions"])}


DEMO_FLOW_ES: dict[str, Any] = _spanish(DEMO_FLOW_EN)
