"""The flow format: nodes, transitions and actions, checked by :func:`parse_flow`.

A flow is stored as JSON on the profile (docs/flows.md)::

    {"start": "greet",
     "global_transitions": [{"name": "speak_to_person", "description": "...",
                             "schema": {"type": "object", "properties": {}},
                             "target": "transfer"}],
     "nodes": [{"name": "greet", "task": "Greet the caller ...",
                "tools": ["end_call"], "transitions": [...],
                "on_enter": [{"say": "..."}], "on_leave": [], "context": "keep",
                "max_turns": 4, "fallback": "transfer"}]}

Parsing reports every problem it finds at once (an admin form shows them all), each
naming the node or transition it is about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Always defined: the session's built-ins, and the demo booking store (demo_booking.py).
BUILTIN_TOOLS = ("end_call", "transfer_call", "demo_booking")
# What an LLM function name may be (the OpenAI API's own limit), as for HTTP tools
# (calls/models.py tool_name_validator). Used with fullmatch and \Z: a "$" also matches
# before a trailing newline, and "book\n" is no name the LLM can call.
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")


class FlowError(ValueError):
    """A flow that cannot run; ``problems`` lists each reason in words."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ContextStrategy(StrEnum):
    KEEP = "keep"  # the whole conversation goes on
    SUMMARY = "summary"  # earlier turns become a short digest in the node's prompt
    VALUES = "values"  # only the values collected so far


class ActionKind(StrEnum):
    SAY = "say"  # speak a fixed line
    END_CALL = "end_call"  # hang up once the reply has played
    TRANSFER = "transfer"  # transfer to a destination label of the profile


@dataclass(slots=True, kw_only=True, frozen=True)
class Action:
    kind: ActionKind
    text: str = ""  # say: the line; transfer: the destination's label

    def as_dict(self) -> dict[str, Any]:
        return {str(self.kind): True if self.kind is ActionKind.END_CALL else self.text}


@dataclass(slots=True, kw_only=True, frozen=True)
class Transition:
    """A function the LLM calls to move on, with the values it collected."""

    name: str
    description: str
    schema: dict[str, Any]
    target: str


@dataclass(slots=True, kw_only=True, frozen=True)
class Node:
    name: str
    task: str = ""  # added to the profile's role prompt while in this node
    tools: tuple[str, ...] = ()  # built-ins and the profile's HTTP tools offered here
    transitions: tuple[Transition, ...] = ()
    on_enter: tuple[Action, ...] = ()
    on_leave: tuple[Action, ...] = ()
    context: ContextStrategy = ContextStrategy.KEEP
    max_turns: int | None = None  # caller turns answered here before the fallback is taken
    fallback: str = ""  # node taken after max_turns
    # Whether the LLM is asked again as soon as the node is entered (Pipecat Flows' name).
    # False: the reply ends with the entering lines (a read-back that asks "is that
    # right?"), and the node's first request waits for the caller's answer.
    respond_immediately: bool = True

    @property
    def terminal(self) -> bool:
        """Entering it ends the reply: the call hangs up or is transferred."""
        return any(a.kind in (ActionKind.END_CALL, ActionKind.TRANSFER) for a in self.on_enter)


@dataclass(slots=True, kw_only=True, frozen=True)
class Flow:
    start: str
    nodes: dict[str, Node] = field(default_factory=dict)  # in the order written
    global_transitions: tuple[Transition, ...] = ()

    def transitions_of(self, node: str) -> tuple[Transition, ...]:
        """What the LLM may call to leave ``node``: its own transitions, then the global ones
        (a node's own transition wins a name both define)."""
        own = self.nodes[node].transitions
        names = {t.name for t in own}
        return (*own, *(t for t in self.global_transitions if t.name not in names))

    def edges(self) -> list[tuple[str, str, str]]:
        """(from, to, label) of every transition and fallback, for the diagram."""
        found = [(n.name, t.target, t.name) for n in self.nodes.values() for t in n.transitions]
        found += [(n.name, n.fallback, f"after {n.max_turns} turns")
                  for n in self.nodes.values() if n.fallback]  # fmt: skip
        return found


def parse_flow(
    data: object,
    *,
    known_tools: Iterable[str] | None = None,
    transfer_labels: Iterable[str] | None = None,
    builtins: Iterable[str] | None = None,
    check_lines: bool = True,
) -> Flow:
    """A checked :class:`Flow` from its JSON form; raises :class:`FlowError` listing every
    problem. ``known_tools``: the profile's HTTP tool names (None: not checked, e.g. at call
    time, where a tool removed since is just not offered); ``transfer_labels``: the profile's
    transfer destinations (None: not checked); ``builtins``: the built-in tools the profile
    has on (None: all of :data:`BUILTIN_TOOLS`); ``check_lines``: refuse a "say" line with
    a broken placeholder (False at call time: a flow saved before placeholders existed
    still runs, its braces said as written)."""
    parser = _Parser(known_tools, transfer_labels, builtins)
    parser.check_lines = check_lines
    return parser.parse(data)


# Why a built-in may be off on a profile: said in the problem, so the fix is plain.
_BUILTIN_OFF = {
    "end_call": "“agent may hang up” is off",
    "transfer_call": "the profile has no transfer destinations",
}


class _Parser:
    def __init__(
        self,
        known_tools: Iterable[str] | None,
        labels: Iterable[str] | None,
        builtins: Iterable[str] | None = None,
    ) -> None:
        on = BUILTIN_TOOLS if builtins is None else tuple(builtins)
        self._tools = None if known_tools is None else {*on, *known_tools}
        self._labels = None if labels is None else {label.casefold() for label in labels}
        self.problems: list[str] = []
        self.check_lines = True

    def parse(self, data: object) -> Flow:
        if not isinstance(data, dict):
            raise FlowError(["A flow must be a JSON object with “start” and “nodes”."])
        raw_nodes = data.get("nodes")
        if not isinstance(raw_nodes, list) or not raw_nodes:
            self.problems.append("The flow has no nodes (“nodes” must be a non-empty list).")
            raw_nodes = []
        nodes: dict[str, Node] = {}
        for i, raw in enumerate(raw_nodes):
            node = self._node(raw, i)
            if node is None:
                continue
            if node.name in nodes:
                self.problems.append(f"Two nodes are named “{node.name}”.")
            nodes[node.name] = node
        globals_ = self._transitions(data.get("global_transitions", []), "global transitions")
        start = data.get("start")
        if not start:
            self.problems.append("The flow has no start node (“start”).")
        elif not isinstance(start, str):
            # (A list or object is unhashable: "in nodes" would raise, a 500 in the admin.)
            self.problems.append("The start node (“start”) must be a node's name.")
            start = ""
        elif start not in nodes:
            self.problems.append(f"The start node “{start}” is not a node.")
        self._check_links(nodes, globals_)
        if start in nodes:
            self._check_reachable(nodes, globals_, str(start))
        if self.problems:
            raise FlowError(self.problems)
        return Flow(start=str(start), nodes=nodes, global_transitions=globals_)

    def _node(self, raw: object, i: int) -> Node | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            self.problems.append(f"Node {i + 1} must be an object with a “name”.")
            return None
        name = raw["name"]
        where = f"node “{name}”"
        if not NAME_RE.fullmatch(name):
            self.problems.append(f"The name of {where} must be letters, digits, _ or -.")
        task = raw.get("task", "")
        if not isinstance(task, str):
            self.problems.append(f"The task of {where} must be text.")
            task = ""
        tools = raw.get("tools", [])
        if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
            self.problems.append(f"The tools of {where} must be a list of tool names.")
            tools = []
        for tool in tools:
            if self._tools is None or tool in self._tools:
                continue
            if tool in _BUILTIN_OFF:
                # (At call time a turned-off built-in is just not offered: the node would
                # silently lack it, so the profile page refuses it instead.)
                self.problems.append(
                    f"Tool “{tool}” in {where} is turned off on the profile "
                    f"({_BUILTIN_OFF[tool]})."
                )
            else:
                self.problems.append(f"Tool “{tool}” in {where} is not defined on the profile.")
        try:
            context = ContextStrategy(raw.get("context", "keep"))
        except ValueError:
            self.problems.append(
                f"The context of {where} must be one of: {', '.join(ContextStrategy)}."
            )
            context = ContextStrategy.KEEP
        max_turns = raw.get("max_turns")
        fallback = raw.get("fallback", "") or ""
        if not isinstance(fallback, str):
            # (str() of a list would name a node that cannot exist, in brackets.)
            self.problems.append(f"The fallback of {where} must be a node's name.")
            fallback = ""
            max_turns = None  # (one problem is enough, not "needs both" as well)
        if max_turns is not None and (
            not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 1
        ):
            self.problems.append(f"max_turns of {where} must be a whole number of at least 1.")
            max_turns = None
        if (max_turns is None) != (not fallback):
            self.problems.append(
                f"{where.capitalize()} needs both max_turns and fallback, or neither."
            )
        respond = raw.get("respond_immediately", True)
        if not isinstance(respond, bool):
            self.problems.append(f"respond_immediately of {where} must be true or false.")
            respond = True
        transitions = self._transitions(raw.get("transitions", []), where)
        for transition in transitions:
            if transition.name in tools or transition.name in BUILTIN_TOOLS:
                self.problems.append(
                    f"Transition “{transition.name}” in {where} has a tool's name."
                )
        return Node(
            name=name,
            task=task,
            tools=tuple(tools),
            transitions=transitions,
            on_enter=self._actions(raw.get("on_enter", []), f"on_enter of {where}"),
            on_leave=self._actions(raw.get("on_leave", []), f"on_leave of {where}"),
            context=context,
            max_turns=max_turns,
            fallback=fallback,
            respond_immediately=respond,
        )

    def _transitions(self, raw: object, where: str) -> tuple[Transition, ...]:
        if not isinstance(raw, list):
            self.problems.append(f"The transitions of {where} must be a list.")
            return ()
        found: list[Transition] = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                self.problems.append(
                    f"Transition {i + 1} of {where} must be an object with a “name”."
                )
                continue
            name = item["name"]
            label = f"transition “{name}” of {where}"
            if not NAME_RE.fullmatch(name):
                self.problems.append(f"The name of {label} must be letters, digits, _ or -.")
            if any(t.name == name for t in found):
                self.problems.append(f"Two transitions of {where} are named “{name}”.")
            if not isinstance(item.get("description"), str) or not item["description"].strip():
                self.problems.append(f"{label.capitalize()} has no description.")
            schema = item.get("schema")
            if schema is None:
                self.problems.append(f"{label.capitalize()} has no schema.")
                schema = {}
            else:
                self._check_schema(schema, label)
            target = item.get("target")
            if not isinstance(target, str) or not target:
                self.problems.append(f"{label.capitalize()} has no target node.")
                target = ""
            found.append(
                Transition(
                    name=name,
                    description=str(item.get("description") or ""),
                    schema=schema if isinstance(schema, dict) else {},
                    target=target,
                )
            )
        return tuple(found)

    def _check_schema(self, schema: object, label: str) -> None:
        import jsonschema

        if not isinstance(schema, dict) or schema.get("type") != "object":
            self.problems.append(
                f'The schema of {label} must be a JSON Schema with "type": "object".'
            )
            return
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            self.problems.append(f"The schema of {label} is not a valid JSON Schema: {exc.message}")

    def _actions(self, raw: object, where: str) -> tuple[Action, ...]:
        if not isinstance(raw, list):
            self.problems.append(f"The {where} must be a list of actions.")
            return ()
        found: list[Action] = []
        for item in raw:
            action = self._action(item)
            if action is None:
                self.problems.append(
                    f"Unknown action {item!r} in the {where}: use {{\"say\": \"…\"}}, "
                    '"end_call" or {"transfer": "<destination label>"}.'
                )
                continue
            if (
                self.check_lines
                and action.kind is ActionKind.SAY
                and (bad := _placeholder_problem(action.text))
            ):
                self.problems.append(f"The line “{action.text}” in the {where} {bad}.")
            if (
                action.kind is ActionKind.TRANSFER
                and self._labels is not None
                and action.text.casefold() not in self._labels
            ):
                self.problems.append(
                    f"Transfer to “{action.text}” in the {where} is not one of the profile's "
                    "transfer destinations."
                )
            found.append(action)
        return tuple(found)

    @staticmethod
    def _action(item: object) -> Action | None:
        if item == "end_call" or item == {"end_call": True}:
            return Action(kind=ActionKind.END_CALL)
        if isinstance(item, dict) and len(item) == 1:
            ((key, value),) = item.items()
            if key in ("say", "transfer") and isinstance(value, str) and value.strip():
                return Action(kind=ActionKind(key), text=value.strip())
        return None

    def _check_links(self, nodes: dict[str, Node], globals_: tuple[Transition, ...]) -> None:
        for transition in globals_:
            if transition.target and transition.target not in nodes:
                self.problems.append(
                    f"Global transition “{transition.name}” goes to an unknown node "
                    f"“{transition.target}”."
                )
        for node in nodes.values():
            for transition in node.transitions:
                if transition.target and transition.target not in nodes:
                    self.problems.append(
                        f"Transition “{transition.name}” of node “{node.name}” goes to an "
                        f"unknown node “{transition.target}”."
                    )
            if node.fallback and node.fallback not in nodes:
                self.problems.append(
                    f"The fallback of node “{node.name}” is an unknown node “{node.fallback}”."
                )

    def _check_reachable(
        self, nodes: dict[str, Node], globals_: tuple[Transition, ...], start: str
    ) -> None:
        everywhere = {t.target for t in globals_}
        seen = {start}
        todo = [start]
        while todo:
            node = nodes[todo.pop()]
            for target in {*everywhere, node.fallback, *(t.target for t in node.transitions)}:
                if target in nodes and target not in seen:
                    seen.add(target)
                    todo.append(target)
        for name in nodes:
            if name not in seen:
                self.problems.append(f"Node “{name}” cannot be reached from the start node.")


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


def fill_line(text: str, values: dict[str, Any]) -> str:
    """A "say" line with ``{name}`` placeholders filled from the collected values ("So
    that is {party_size} people on {day}"); ``{{`` and ``}}`` are literal braces. A name
    not collected (yet), or anything else in braces, stays as written."""

    def fill(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        return str(values[name]) if name in values else token

    return _PLACEHOLDER.sub(fill, text)


def _placeholder_problem(text: str) -> str:
    """Why ``text``'s placeholders cannot be filled ("" when they can)."""
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1)
        if name is not None and not NAME_RE.fullmatch(name):
            return f"has a placeholder “{{{name}}}” that is not a value's name"
    rest = _PLACEHOLDER.sub("", text)
    if "{" in rest or "}" in rest:
        return "has a lone brace (write {{ and }} for a brace)"
    return ""
