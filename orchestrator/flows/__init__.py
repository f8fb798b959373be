"""Conversation flows: a per-profile state machine the agent follows (docs/flows.md).

``spec.py`` is the format and its checks (:func:`parse_flow`), ``state.py`` where a call
stands (node, path, values, turns), ``toolbox.py`` the node's tools and transitions offered
to the LLM, ``diagram.py`` the SVG drawing the admin shows. Plain Python (no Django).
"""

from orchestrator.flows.spec import (
    Action,
    ActionKind,
    ContextStrategy,
    Flow,
    FlowError,
    Node,
    Transition,
    parse_flow,
)

__all__ = [
    "Action",
    "ActionKind",
    "ContextStrategy",
    "Flow",
    "FlowError",
    "Node",
    "Transition",
    "parse_flow",
]
