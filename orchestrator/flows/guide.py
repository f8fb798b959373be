"""The local model's guide through a flow: what it may call this round, with which values,
and whether it must call something.

The offline models answer by grammar (engines/local_tools.py), so every answer is a
well-formed call, but a 0.5B or 1.5B model picks the *wrong* one: measured on the demo
flow (docs/flows.md), 0 of 8 scripted calls completed a booking: "speak to a person"
taken unasked, ``confirmed`` before the caller heard the read-back, the booking tool
skipped and a reference made up. The guide narrows the grammar to what the caller's own
words support, and the model writes the words:

1. **Values.** A parameter of a known kind (``caller_facts.field_kind``: party size, day,
   time, name) is pinned (``const``) to what the caller said — the last mention wins, and
   a short answer ("Four.") is read by the question it answers — else to a value a tool
   returned in this reply (the booking reference), else to one the flow collected. A
   function missing a *required* value of a known kind is not offered: the model asks.
2. **Intents.** A transition without parameters ("wants_booking", "confirmed") is offered
   only once the caller has spoken in the node, and only when their last words show it:
   a word shared with its name or description (stems of 4 letters, common words aside;
   two words for a global transition, which every node offers), or a yes / no where it is
   about confirming / changing.
3. **Must call.** A function with every value pinned and not called with them yet in
   this reply (the transition that collected everything, the booking tool with the
   collected values, ``booked`` with its reference) is due; else the one intent the
   caller's words show. A due call is made without a model round (:attr:`Offer.due`):
   the next node's round says the words. ``end_call`` in a node with nothing else to do
   is due too, with the model's goodbye: the grammar there has no "no call".

Only for a model that answers by grammar: a cloud model with tool calling is offered the
node's functions as they are (flows/toolbox.py). Plain data in, plain data out.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from orchestrator import caller_facts
from orchestrator.flows.spec import Transition
from orchestrator.tools import ToolSpec

END_CALL = "end_call"
STEM = 4  # letters compared of a word ("book" ~ "booking")
GLOBAL_STEM = 5  # for a global transition: "encantada" is not "encargado"
_UNSET = object()
# Words of a description that say nothing about what the caller wants.
_COMMON = {
    "the", "caller", "callers", "asks", "ask", "wants", "want", "said", "says", "say",
    "that", "this", "with", "from", "into", "about", "would", "like", "something", "someone",
    "some", "them", "they", "their", "there", "when", "what", "which", "have", "has", "been",
    "will", "shall", "should", "could", "other", "else", "more", "also", "just", "then",
    "quiere", "pide", "dice", "dicho", "algo", "alguien", "para", "como", "esta",
    "este", "todo", "toda", "quien", "cuando", "donde", "llama", "llamada",
}  # fmt: skip
# A transition about confirming is shown by a yes, one about changing by a no.
_ABOUT_YES = re.compile(r"\b(?:confirm\w*|right|correct|yes|agree\w*|ok|okay|correct[oa]|si|"
                        r"conforme|de acuerdo|vale)\b")  # fmt: skip
_ABOUT_NO = re.compile(r"\b(?:change\w*|wrong|fix\w*|not right|cambi\w*|mal|incorrect[oa]?|"
                       r"no)\b")  # fmt: skip
_YES = {
    "yes", "yeah", "yep", "yup", "right", "correct", "sure", "perfect", "ok", "okay", "fine",
    "exactly", "great", "good", "absolutely", "works", "spot", "mhm", "si", "vale", "claro",
    "correcto", "perfecto", "exacto", "bien", "conforme", "eso", "acuerdo", "asi",
}  # fmt: skip
_NO = {
    "no", "nope", "wrong", "change", "not", "incorrect", "instead", "cambiar", "cambia",
    "cambie", "mal", "incorrecto", "error", "equivocado",
}  # fmt: skip
# Phrases with a "no" in them that say everything is fine (folded text).
_SAYS_NO_HARM = re.compile(
    r"\b(?:no (?:problem|worries|hay (?:problema|nada que cambiar)|pasa nada)|"
    r"not a problem|sin problema|nothing to change|no, (?:esta|it's|it is|that's) (?:bien|fine))"
)


@dataclass(slots=True, kw_only=True)
class Offer:
    """What one round of a model answering by grammar may do."""

    schemas: list[dict[str, Any]]  # OpenAI ``tools`` entries, values pinned by ``const``
    required: bool = False  # a call is due: the grammar has no "no call"
    # For the system prompt: what the caller has given of the node's values and what is
    # still to ask, so a small model asks for the next missing one ("" when nothing is).
    note: str = ""

    @property
    def due(self) -> tuple[str, dict[str, Any]] | None:
        """The call to make without asking the model: a required one whose values are all
        pinned (words are the next node's to say), except ``end_call``, whose goodbye the
        model writes. Each model round costs seconds of CPU; a reply of four of them
        (confirmed, the booking, booked, goodbye) ran past the session's 13 s stall
        watchdog on a loaded machine (measured)."""
        if not self.required or len(self.schemas) != 1:
            return None
        function = self.schemas[0]["function"]
        properties = function["parameters"].get("properties") or {}
        if function["name"] == END_CALL or any(
            not isinstance(p, dict) or "const" not in p for p in properties.values()
        ):
            return None
        return function["name"], {name: p["const"] for name, p in properties.items()}


@dataclass(slots=True, kw_only=True)
class Conversation:
    """What the guide reads of the messages the model is about to be sent."""

    # Every caller turn the model sees, oldest first, with the agent's words just before it
    # (the question a short answer answers).
    answers: list[tuple[str, str]]
    tool_values: dict[str, Any]  # what tools returned since the caller last spoke
    calls: list[tuple[str, dict[str, Any]]]  # (name, arguments) since the caller last spoke
    earlier_calls: list[tuple[str, dict[str, Any]]]  # (name, arguments) before that

    @property
    def last_line(self) -> str:
        return self.answers[-1][1] if self.answers else ""

    @classmethod
    def of(cls, messages: list[dict[str, Any]]) -> Conversation:
        answers: list[tuple[str, str]] = []
        agent = ""
        tool_values: dict[str, Any] = {}
        calls: list[tuple[str, dict[str, Any]]] = []
        earlier: list[tuple[str, dict[str, Any]]] = []
        for message in messages:
            role, content = message.get("role"), message.get("content")
            text = content if isinstance(content, str) else ""
            if role == "user":
                answers.append((agent, text))
                earlier += calls
                agent, tool_values, calls = "", {}, []
            elif role == "assistant":
                agent = text or agent
                for call in message.get("tool_calls") or ():
                    fn = call.get("function", {})
                    calls.append((fn.get("name", ""), _json_object(fn.get("arguments"))))
            elif role == "tool":
                tool_values.update(_json_object(text))
        return cls(answers=answers, tool_values=tool_values, calls=calls, earlier_calls=earlier)


NOTE = {
    "en": ("The caller has given: {given}.", "Still to ask for, one at a time: {missing}."),
    "es": ("La persona ya ha dicho: {given}.", "Falta preguntar, de uno en uno: {missing}."),
}


def offer(
    tools: list[ToolSpec],
    transitions: tuple[Transition, ...],
    *,
    global_names: set[str],
    collected: dict[str, Any],
    caller_spoke_in_node: bool,
    messages: list[dict[str, Any]],
    language: str = "en",
) -> Offer:
    """The round's functions for a model answering by grammar (see the module docstring)."""
    talk = Conversation.of(messages)
    facts = _facts(talk)
    note = _note(transitions, global_names, facts=facts, language=language)
    ready: list[dict[str, Any]] = []  # every value pinned, not called with them yet
    offered: list[dict[str, Any]] = []
    intents: list[tuple[str, dict[str, Any]]] = []
    node_has_tools = bool(tools)
    functions = [(t.name, t.description, t.schema, True) for t in transitions]
    functions += [(s.name, s.description, s.parameters, False) for s in tools]
    for name, description, schema, is_transition in functions:
        properties = (schema or {}).get("properties") or {}
        if not properties:
            if not is_transition:
                offered.append(_entry(name, description, schema))
            elif caller_spoke_in_node and _shown(
                name, description, talk.last_line, is_global=name in global_names
            ):
                intents.append((name, _entry(name, description, schema)))
            continue
        pinned = _pinned(
            schema,
            facts=facts,
            tool_values=talk.tool_values,
            collected=collected,
            from_tools=is_transition and node_has_tools,
        )
        if pinned is None:
            continue  # a required value nobody gave: the model asks for it
        values, entry_schema = pinned
        if (
            is_transition
            and not caller_spoke_in_node
            and values
            and all(collected.get(k, _UNSET) == v for k, v in values.items())
        ):
            # Back in the node with nothing new (the caller asked to change something):
            # the same values again would repeat the read-back. The model asks what changes.
            continue
        entry = _entry(name, description, entry_schema)
        offered.append(entry)
        required = set(schema.get("required") or ())
        done = talk.calls if is_transition else talk.calls + talk.earlier_calls
        if required and required <= values.keys() and (name, values) not in done:
            # (A tool made earlier in the call, even cancelled by a barge-in, is not made
            # again unasked: a real booking endpoint is not idempotent.)
            ready.append(entry)
    if ready:
        return Offer(schemas=ready[:1], required=True)
    shown = [entry for name, entry in intents]
    if len(intents) == 1 and intents[0][0] not in global_names:
        return Offer(schemas=shown, required=True, note=note)
    offered += shown  # (a global one is the model's to take: words alone are thin evidence)
    # A node whose only way on is hanging up (global transitions aside): the goodbye.
    closing = all(t.name in global_names for t in transitions) and [
        spec.name for spec in tools
    ] == [END_CALL]
    return Offer(schemas=offered, required=closing and bool(offered), note=note)


def _note(
    transitions: tuple[Transition, ...],
    global_names: set[str],
    *,
    facts: dict[str, Any],
    language: str,
) -> str:
    """What the caller gave of the node's own transitions' values of a known kind, and
    which are still missing (in the schema's order), e.g. "The caller has given:
    party_size=4. Still to ask for, one at a time: day, time, name." """
    given: dict[str, Any] = {}
    missing: list[str] = []
    for transition in transitions:
        if transition.name in global_names:
            continue
        properties = (transition.schema or {}).get("properties") or {}
        required = set(transition.schema.get("required") or ())
        has_day = _has_day(properties)
        for name, prop in properties.items():
            kind = caller_facts.field_kind(name, prop if isinstance(prop, dict) else {})
            if kind is None or name not in required:
                continue
            value = facts.get("time_with_day" if kind == "time" and not has_day else kind)
            if value is not None and _fits(prop, value):
                given[name] = value
            elif name not in missing:
                # (A value the schema refuses, a party of 15 where 12 is the most: asked
                # again, and the model is told why.)
                missing.append(name if value is None else f"{name} ({_limits(prop, value)})")
    if not missing:
        return ""
    has, ask = NOTE["es" if language.lower().startswith("es") else "en"]
    parts = [has.format(given=", ".join(f"{k}={v}" for k, v in given.items()))] if given else []
    return " ".join([*parts, ask.format(missing=", ".join(missing))])


def _limits(prop: dict[str, Any], value: Any) -> str:
    bounds = [f"{word} {prop[key]}" for key, word in (("minimum", "at least"),
              ("maximum", "at most")) if key in prop]  # fmt: skip
    if "enum" in prop:
        bounds.append("one of " + "/".join(map(str, prop["enum"])))
    return f"not {value}: " + (", ".join(bounds) or "not allowed")


def _facts(talk: Conversation) -> dict[str, Any]:
    """Each kind of fact the caller gave, the latest winning: line by line, an explicit
    phrasing ("a table for four", "my name is Lola"), then the line as a short answer to
    the agent's question before it ("Four." to "How many people?")."""
    facts: dict[str, Any] = {}
    for question, line in talk.answers:
        found = caller_facts.booking_facts(line)
        explicit = {
            "party_size": found.party_size,
            "day": found.day,
            "time": caller_facts.booking_time(line, with_day=False),
            "name": found.name,
        }
        facts.update({kind: value for kind, value in explicit.items() if value is not None})
        facts.update(caller_facts.answer_facts(question, line))
    if "time" in facts:  # for a schema without a day field of its own: "Friday 21:00"
        facts["time_with_day"] = f"{facts.get('day', '')} {facts['time']}".strip()
    return facts


def _pinned(
    schema: dict[str, Any],
    *,
    facts: dict[str, Any],
    tool_values: dict[str, Any],
    collected: dict[str, Any],
    from_tools: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The values known for ``schema``'s properties and the schema with them as ``const``;
    None when a required one is missing that the guide can tell is missing: one of a known
    kind, one a tool returned or the flow collected before, or (``from_tools``: a transition
    of a node with tools of its own, like ``booked(ref)`` after the booking tool) any. A
    value the grammar cannot hold safely is left to the model, unpinned."""
    properties: dict[str, Any] = dict(schema.get("properties") or {})
    required = set(schema.get("required") or ())
    values: dict[str, Any] = {}
    has_day = _has_day(properties)
    for name, prop in list(properties.items()):
        prop = prop if isinstance(prop, dict) else {}
        kind = caller_facts.field_kind(name, prop)
        fact_kind = "time_with_day" if kind == "time" and not has_day else kind
        value = facts.get(fact_kind) if kind else None
        if value is None:
            value = tool_values.get(name, collected.get(name))
        if value is not None and not _grammar_safe(value):
            continue  # offered as written: the schema check still judges what is called
        if value is not None and _fits(prop, value):
            values[name] = value
            # (The type stays beside the const: a cloud engine behind the local one in a
            # fallback chain is sent these schemas too.)
            properties[name] = {**({"type": prop["type"]} if "type" in prop else {}),
                                "const": value}  # fmt: skip
        elif name in required and (
            kind or from_tools or name in tool_values or name in collected
        ):
            return None
    return values, {**schema, "properties": properties}


def _has_day(properties: dict[str, Any]) -> bool:
    """The schema has a field of its own for the day: its time field is the clock alone."""
    return any(caller_facts.field_kind(n, p) == "day" for n, p in properties.items()
               if isinstance(p, dict))  # fmt: skip


def _grammar_safe(value: Any) -> bool:
    """llama-cpp-python (0.3.x) writes a const string into its grammar without escaping
    backslashes, and a broken grammar crashes the process in C: no quotes, backslashes,
    control or non-BMP characters in a pinned string."""
    if not isinstance(value, str):
        return True
    return not any(ch in '"\\' or ord(ch) < 32 or ord(ch) > 0xFFFF for ch in value)


def _fits(prop: dict[str, Any], value: Any) -> bool:
    """``value`` is of the property's type and in its enum / bounds (else it is not pinned:
    the schema check tells the model why when it calls)."""
    kind = prop.get("type")
    kinds = set(kind) if isinstance(kind, list) else {kind} if kind else set()
    if kinds and not any(_is_type(value, k) for k in kinds):
        return False
    if "enum" in prop and value not in prop["enum"]:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in prop and value < prop["minimum"]:
            return False
        if "maximum" in prop and value > prop["maximum"]:
            return False
    return True


def _is_type(value: Any, kind: str) -> bool:
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    return checks.get(kind, lambda v: True)(value)


def _shown(name: str, description: str, line: str, *, is_global: bool) -> bool:
    """The caller's ``line`` shows the intent ``name`` / ``description`` describes."""
    line = _SAYS_NO_HARM.sub(" ", _fold(line))  # "no problem" is no "no"
    said = _words(line)
    if not said:
        return False
    about = f"{name.replace('_', ' ')} {description}"
    folded_about = _fold(about)
    no = bool(said & _NO)
    if not is_global:
        if _ABOUT_NO.search(folded_about) and no:
            return True
        if _ABOUT_YES.search(folded_about) and said & _YES and not no:
            return True
    # A global transition is offered in every node, so it needs two words of its own
    # compared on longer stems ("speak" + "person"; not "encantada" for "encargado").
    size, needed = (GLOBAL_STEM, 2) if is_global else (STEM, 1)
    stems = {w[:size] for w in _words(about) if len(w) >= STEM and w not in _COMMON}
    heard = {w[:size] for w in said if len(w) >= STEM and w not in _COMMON}
    return len(stems & heard) >= needed


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", _fold(text)))


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _entry(name: str, description: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    return ToolSpec(name=name, description=description, parameters=schema or {}).schema()


def _json_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
