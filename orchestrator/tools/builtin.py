"""The built-in tools: ``end_call`` and ``transfer_call``.

Both are *terminal*: the LLM is not asked again after them. What it said with the call
(or, if nothing, the profile's goodbye / transfer announcement) is spoken, and once the
caller has heard it the session hangs up or transfers (session.py). A caller who speaks
over that last line cancels the action: the conversation goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config import CallConfig
from orchestrator.tools import ToolResult, ToolSpec, ToolStatus

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"


@dataclass(slots=True, frozen=True)
class HangUp:
    """After this reply: end the call (agent hang-up)."""


@dataclass(slots=True, frozen=True)
class Transfer:
    """After this reply: hand the call to ``destination`` (E.164 or SIP URI)."""

    destination: str
    label: str


AfterReply = HangUp | Transfer


def builtin_specs(config: CallConfig) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    if config.end_call_enabled:
        specs.append(
            ToolSpec(
                name=END_CALL,
                kind="builtin",
                description=(
                    "Hang up the call. Use it only when the conversation is over (the caller "
                    "said goodbye or has nothing more to ask). Say your goodbye in the same "
                    "reply; the call ends once the caller has heard it."
                ),
            )
        )
    if config.transfer_targets:
        labels = [label for label, _ in config.transfer_targets]
        specs.append(
            ToolSpec(
                name=TRANSFER_CALL,
                kind="builtin",
                description=(
                    "Transfer the caller to a person. Use it when the caller asks for a "
                    "person or you cannot help. Tell the caller you are transferring them "
                    "in the same reply. Allowed destinations: " + ", ".join(labels) + "."
                ),
                parameters={
                    "type": "object",
                    "properties": {
                        "destination": {
                            "type": "string",
                            "enum": labels,
                            "description": "Who to transfer the caller to.",
                        }
                    },
                    "required": ["destination"],
                },
            )
        )
    return specs


def run_builtin(
    config: CallConfig, name: str, arguments: dict[str, object]
) -> tuple[ToolResult, AfterReply | None]:
    """Check a built-in call; the action is carried out by the session after the reply."""
    if name == END_CALL and config.end_call_enabled:
        ended = ToolResult(status=ToolStatus.OK, content="The call ends after your goodbye.")
        return ended, HangUp()
    if name == TRANSFER_CALL and config.transfer_targets:
        requested = str(arguments.get("destination", "")).strip()
        for label, destination in config.transfer_targets:
            if requested.casefold() in (label.casefold(), destination.casefold()):
                result = ToolResult(
                    status=ToolStatus.OK, content=f"Transferring the caller to {label}."
                )
                return result, Transfer(destination=destination, label=label)
        allowed = ", ".join(label for label, _ in config.transfer_targets)
        return (
            ToolResult(
                status=ToolStatus.REFUSED,
                content=f"Refused: {requested or 'no destination'} is not an allowed "
                f"destination. Allowed: {allowed}.",
            ),
            None,
        )
    return ToolResult(status=ToolStatus.REFUSED, content=f"Unknown tool {name}."), None
