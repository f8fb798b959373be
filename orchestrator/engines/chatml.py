"""ChatML, the chat template of the local Qwen2.5 models: the prompt of a free-text reply
(``chat_prompt``) and the pieces the grammar path (local_tools.py) builds its prompt from.
Plain text functions, no model."""

from __future__ import annotations

import re
from typing import Any

PROMPT_TURNS = 12  # latest messages kept in the prompt (n_ctx is 2048 tokens)

# ChatML, the chat template of the Qwen2.5 GGUFs (checked at load; a test renders the
# GGUF's own Jinja template and compares).
ASSISTANT_START = "<|im_start|>assistant\n"
# A blank line ends the reply too: a spoken answer has no paragraphs (the 0.5B starts
# markdown lists and tables after one).
CHAT_STOPS = ["<|im_end|>", "<|im_start|>", "<|endoftext|>", "\n\n"]
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chat_prompt(messages: list[dict[str, Any]], *, rule: str = "") -> str:
    """``messages`` in ChatML, ending with the assistant's turn opened for the model.

    System texts are joined into the one system block (plus ``rule``, e.g. the reply
    language), then the last ``PROMPT_TURNS`` user/assistant messages, each on one line.
    Only text is kept: the history also holds OpenAI tool-call messages (an assistant
    message with ``tool_calls`` and no content, ``tool`` results) that this engine does
    not use; an assistant message with both keeps its text."""
    system = "\n".join(
        m["content"].strip()
        for m in messages
        if m.get("role") == "system" and isinstance(m.get("content"), str) and m["content"].strip()
    )
    system, example = split_example(system)
    system = "\n".join(part for part in (system, rule) if part) or QWEN_DEFAULT_SYSTEM
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    dialogue = [m for m in messages if m.get("role") in ("user", "assistant") and message_text(m)]
    for message in [*example, *dialogue[-PROMPT_TURNS:]]:
        parts.append(f"<|im_start|>{message['role']}\n{message_text(message)}<|im_end|>\n")
    parts.append(ASSISTANT_START)
    return "".join(parts)


_EXAMPLE_HEADER = re.compile(r"^(?:example|ejemplo)s?\s*:\s*$", re.I)
_EXAMPLE_LINE = re.compile(
    r"^(?:(?P<user>caller|user|customer|cliente|usuario)|"
    r"(?P<assistant>you|agent|assistant|receptionist|t[úu]|agente|asistente|recepcionista))"
    r"\s*:\s*(?P<text>\S.*)$",
    re.I,
)


def split_example(system: str) -> tuple[str, list[dict[str, str]]]:
    """(system text, example turns): a system prompt that *ends* with an example exchange,

        Example:
        Caller: A table for two on Saturday, please.
        You: Of course. At what time on Saturday?

    (``Ejemplo:`` / ``Cliente:`` / ``Tú:`` in Spanish) gives the exchange as real chat turns
    after the system block: a 0.5B model imitates turns, while an example described in the
    system text was answered with the same sentence on every turn. Anything else (no
    header, a line that is not ``<speaker>: <text>``) is left in the system text as is;
    other engines always get the text as written."""
    lines = system.splitlines()
    headers = [i for i, line in enumerate(lines) if _EXAMPLE_HEADER.match(line.strip())]
    if not headers:
        return system, []
    turns = []
    for line in (line.strip() for line in lines[headers[-1] + 1 :]):
        if not line:
            continue
        match = _EXAMPLE_LINE.match(line)
        if match is None:
            return system, []
        role = "user" if match["user"] else "assistant"
        turns.append({"role": role, "content": " ".join(match["text"].split())})
    if len(turns) < 2:
        return system, []
    return "\n".join(lines[: headers[-1]]).strip(), turns


def message_text(message: dict[str, Any]) -> str:
    """A message's text on one line; "" when it has none (content None, missing, or a
    list of parts)."""
    content = message.get("content")
    return " ".join(content.split()) if isinstance(content, str) else ""
