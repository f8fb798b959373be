"""Tool calls for the local LLM by grammar: how the offline model follows a flow.

llama.cpp cannot parse a tool call out of a 0.5B model's free text reliably, so the model
is *made* to answer in one shape, a JSON object a grammar built from the offered tools
allows (every token that would break it is masked out)::

    {"call": null | {"name": "<tool>", "arguments": {…}}, "say": "<words for the caller>"}

The words are spoken while they are being generated (:class:`SayStream` decodes the JSON
string as it grows); once the object is complete, ``call`` becomes a :class:`ToolCall`,
the item the OpenAI-compatible engines yield (after the words: the reply pipeline runs
tools once a round's words are out, as for any engine).

Only the reply pipeline of a call *with a flow* asks for this (``calls_tools_by_grammar``
on :class:`~orchestrator.engines.local.LocalLLM`, honoured by reply.py only for a flow's
tool box): a plain profile keeps the free-text path and its latency.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from orchestrator.engines.chatml import (
    ASSISTANT_START,
    PROMPT_TURNS,
    QWEN_DEFAULT_SYSTEM,
    split_example,
)
from orchestrator.engines.chatml import message_text as _text
from orchestrator.engines.errors import EngineError
from orchestrator.tools import ToolCall

log = logging.getLogger(__name__)

# Tokens the call part costs on top of the words (name, arguments, braces): the reply's
# ``max_tokens`` is for what is said, the JSON around it must not cut a call in half.
CALL_TOKENS = 80
# JSON Schema keywords llama.cpp's converter (llama_cpp.llama_grammar, 0.3.x) turns into
# grammar; anything else in an admin-written schema is dropped from the *grammar* (e.g.
# ``pattern``, which it asserts on, ``minimum``/``maximum``, which it ignores, ``format``).
# The arguments are still checked against the full schema when the call runs, and the
# model is told why they were refused (flows/toolbox.py).
_KEPT = ("type", "properties", "required", "items", "enum", "const", "anyOf", "oneOf",
         "minLength", "maxLength")  # fmt: skip
# A string argument without a maxLength gets this one: the 0.5B once wrote a booking
# reference "Lola_9PM9PM9PM…" until max_tokens cut the answer (and its call) off.
ARGUMENT_MAX_CHARS = 60
_PRIMITIVES = ("string", "integer", "number", "boolean", "null", "object", "array")

INSTRUCTION = {
    "en": (
        'Answer with one JSON object: "call" is null or the function to call: {"name": …, '
        '"arguments": {…}}; "say" is what you say to the caller now (one short spoken '
        "sentence). Call a function when its description fits what the caller said; never "
        "invent an argument the caller did not give: ask for it instead."
    ),
    "es": (
        'Responde con un objeto JSON: "call" es null o la función a llamar: {"name": …, '
        '"arguments": {…}}; "say" es lo que dices ahora a la persona (una frase breve). '
        "Llama a una función cuando su descripción encaje con lo que ha dicho la persona; "
        "nunca inventes un dato que no haya dado: pregúntalo."
    ),
}
FUNCTIONS_HEADER = {"en": "Functions you can call:", "es": "Funciones que puedes llamar:"}


def grammar_schema(tools: list[dict[str, Any]], *, must_call: bool = False) -> dict[str, Any]:
    """The JSON Schema of one answer when ``tools`` (OpenAI ``tools`` entries) are offered;
    with ``must_call`` (OpenAI's ``tool_choice="required"``) "no call" is not an answer."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": fn["name"]},
                "arguments": _plain(fn.get("parameters") or {}, top=True),
            },
            "required": ["name", "arguments"],
        }
        for fn in (tool["function"] for tool in tools)
    ]
    return {
        "type": "object",
        # ``call`` first: the model decides what to do, then words that fit it. With
        # ``say`` first a 1.5B talked itself out of the call ("Thank you for your booking")
        # and wrote null: the collect step called set_booking_details in 2 of 9 tries,
        # against 7 of 9 with the call first (measured, docs/flows.md). The words then wait
        # for the call's few tokens, and still stream as they are generated.
        # Words in every answer: a round that only calls a function is silent, and a reply
        # of two or three silent rounds on a slow CPU ran past the session's stall
        # watchdog (13 s without audio) and ended the call as busy (measured, 1.5B).
        "properties": {
            "call": {"anyOf": calls if must_call else [{"type": "null"}, *calls]},
            "say": {"type": "string", "minLength": 1},
        },
        "required": ["say", "call"],
    }


def _plain(schema: dict[str, Any], *, top: bool = False) -> dict[str, Any]:
    """``schema`` reduced to what the grammar converter compiles (see ``_KEPT``)."""
    if not isinstance(schema, dict):
        return {}
    kept: dict[str, Any] = {k: v for k, v in schema.items() if k in _KEPT}
    kind = kept.get("type")
    if isinstance(kind, list):
        kept["type"] = [t for t in kind if t in _PRIMITIVES] or "string"
    elif kind is not None and kind not in _PRIMITIVES:
        kept.pop("type")
    if kept.get("type") == "string" and not {"enum", "const"} & kept.keys():
        kept.setdefault("maxLength", ARGUMENT_MAX_CHARS)
    if isinstance(kept.get("properties"), dict):
        kept["properties"] = {k: _plain(v) for k, v in kept["properties"].items()}
        # Every property is written: an optional one the converter would let the model skip
        # is one more decision for a small model; the schema check still sees all of them.
        kept["required"] = list(kept["properties"])
    if isinstance(kept.get("items"), dict):
        kept["items"] = _plain(kept["items"])
    for key in ("anyOf", "oneOf"):
        if isinstance(kept.get(key), list):
            kept[key] = [_plain(s) for s in kept[key] if isinstance(s, dict)]
    if top and "properties" not in kept:
        kept = {"type": "object", "properties": {}}  # arguments are always an object
    return kept


def functions_note(tools: list[dict[str, Any]], language: str) -> str:
    """The offered functions, one line each (``name(arg: type, …): description``), and how
    to answer: short, so the prompt a slow CPU evaluates stays small."""
    lang = "es" if language.lower().startswith("es") else "en"
    lines = [FUNCTIONS_HEADER[lang]]
    for fn in (tool["function"] for tool in tools):
        params = (fn.get("parameters") or {}).get("properties") or {}
        args = ", ".join(f"{name}: {_type_name(spec)}" for name, spec in params.items())
        lines.append(f"- {fn['name']}({args}): {fn.get('description', '').strip()}")
    return "\n".join([*lines, INSTRUCTION[lang]])


def _type_name(spec: Any) -> str:
    if isinstance(spec, dict) and "const" in spec:  # pinned by the flow guide (flows/guide.py)
        return json.dumps(spec["const"], ensure_ascii=False)
    kind = spec.get("type", "string") if isinstance(spec, dict) else "string"
    return "/".join(kind) if isinstance(kind, list) else str(kind)


def tool_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]], *, rule: str,
                language: str, turns: int) -> str:  # fmt: skip
    """ChatML for an answer by grammar: the system block (the flow's prompt, the language
    rule, the functions), then the last ``turns`` messages with the tool exchanges the
    free-text prompt drops: the model's own earlier calls in the JSON it writes (its words
    as plain text), and each
    result as a ``<tool_response>`` user turn (Qwen2.5's own chat template does the same),
    so it sees what its call did (a refusal and why, the booking reference)."""
    system = "\n".join(
        m["content"].strip()
        for m in messages
        if m.get("role") == "system" and isinstance(m.get("content"), str) and m["content"].strip()
    )
    system, example = split_example(system)
    note = functions_note(tools, language)
    system = "\n".join(part for part in (system or QWEN_DEFAULT_SYSTEM, rule, note) if part)
    parts = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    names = {}  # tool_call_id -> function name, for the result lines
    dialogue: list[tuple[str, str]] = [(m["role"], m["content"]) for m in example]
    for message in messages:
        role = message.get("role")
        if role == "user" and (text := _text(message)):
            dialogue.append(("user", text))
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            for call in calls:
                names[call.get("id")] = call["function"]["name"]
            if calls:
                dialogue.append(("assistant", _as_answer(_text(message), calls)))
            elif _text(message):
                # Plain words, not {"call": null, …}: the 0.5B copied an earlier null
                # answer and never took greet's transition (0 of 3, against 3 of 3).
                dialogue.append(("assistant", _text(message)))
        elif role == "tool":
            result = " ".join(str(message.get("content", "")).split())
            name = names.get(message.get("tool_call_id"), "")
            dialogue.append(("user", f"<tool_response>\n{name}: {result}\n</tool_response>"))
    for role, text in dialogue[-turns:]:
        parts.append(f"<|im_start|>{role}\n{text}<|im_end|>\n")
    parts.append(ASSISTANT_START)
    return "".join(parts)


def _as_answer(text: str, calls: list[dict[str, Any]]) -> str:
    """An earlier assistant message as the JSON the model writes (its first call only: the
    grammar allows one per answer)."""
    call = None
    if calls:
        fn = calls[0]["function"]
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            arguments = {}
        call = {"name": fn["name"], "arguments": arguments}
    return json.dumps({"call": call, "say": text}, ensure_ascii=False)


class SayStream:
    """Decodes ``{"call": …, "say": "…"}`` as the model writes it: :meth:`push` returns the
    newly completed characters of ``say`` (escapes decoded), :meth:`finish` the whole answer.

    The grammar guarantees the shape (the call object, then ``"say"``, ``:``, the string;
    single spaces at most between tokens), so a tiny state machine is enough: ``"say"`` is
    looked for only where a key can be, after the call value is complete."""

    def __init__(self) -> None:
        self.raw = ""
        self._pos = 0  # next index of ``raw`` to look at
        self._in_say = False
        self._say_done = False
        self._key_at: int | None = None  # where the "say" key starts, once seen

    def push(self, chunk: str) -> str:
        self.raw += chunk
        out: list[str] = []
        raw = self.raw
        if not self._in_say and not self._say_done:
            found = _say_value_at(raw)
            if found is None:
                return ""
            self._key_at, start = found
            self._in_say, self._pos = True, start
        while self._in_say and self._pos < len(raw):
            ch = raw[self._pos]
            if ch == '"':
                self._in_say, self._say_done = False, True
                self._pos += 1
                break
            if ch != "\\":
                out.append(ch)
                self._pos += 1
                continue
            # An escape: decoded once all of it has arrived (``\uXXXX`` is six characters).
            size = 6 if raw[self._pos + 1 : self._pos + 2] == "u" else 2
            escape = raw[self._pos : self._pos + size]
            if len(escape) < size:
                break
            try:
                out.append(json.loads(f'"{escape}"'))
            except ValueError:
                pass  # a lone surrogate half: dropped (the final parse has the text)
            self._pos += size
        return "".join(out)

    def finish(self) -> tuple[str, ToolCall | None]:
        """``(say, call)`` of the whole answer; a cut-off or broken object keeps the words
        streamed so far and calls nothing."""
        try:
            answer = json.loads(self.raw)
        except ValueError:
            answer = self._call_only()
        if not isinstance(answer, dict):
            return self._streamed(), None
        if "say" not in answer:  # stopped while speaking: the words are those streamed
            answer["say"] = self._streamed()
        say = answer.get("say") if isinstance(answer.get("say"), str) else ""
        call = answer.get("call")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return say, None
        arguments = call.get("arguments") if isinstance(call.get("arguments"), dict) else {}
        return say, ToolCall(
            id=f"local-{uuid.uuid4().hex[:12]}",
            name=call["name"],
            arguments=json.dumps(arguments, ensure_ascii=False),
        )

    def _call_only(self) -> dict[str, Any] | None:
        """The object without its ``say``: the call is complete once ``say`` has begun
        (it comes first), so an answer stopped while speaking still has it."""
        if self._key_at is None:
            return None
        try:
            answer = json.loads(self.raw[: self._key_at].rstrip().removesuffix(",") + "}")
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def _streamed(self) -> str:
        partial = SayStream()
        return partial.push(self.raw)


_SAY_KEY = re.compile(r'"say" ?: ?"')
MAX_SAY_SENTENCES = 2  # the instruction asks for one; a second is tolerated
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s|$)")  # in a whole text
# While ``say`` streams, a stop ends a sentence only once a space follows: the model writes
# "8.30" as "8" "." "30", and "8." at the end of what came so far is not a sentence yet.
_SENTENCE_END_STREAMING = re.compile(r"[.!?…]+[\"')\]]*(?=\s)")


def _say_value_at(raw: str) -> tuple[int, int] | None:
    """Where the top-level ``say`` key starts in ``raw`` and where its text starts (after
    the opening quote), once written; a ``"say"`` inside the call's arguments is not it."""
    depth, in_string, escaped = 0, False, False
    for i, ch in enumerate(raw):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            if depth == 1 and (match := _SAY_KEY.match(raw, i)):
                return i, match.end()
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return None


def stream_completion(completion: Any, emit: Callable[[str], None], stop: threading.Event) -> None:
    """A streamed llama.cpp completion's text to ``emit``, stopping between tokens once
    ``stop`` is set (barge-in, timeout); the generator is closed either way."""
    try:
        for chunk in completion:
            if stop.is_set():
                return
            if text := chunk["choices"][0]["text"]:
                emit(text)
    finally:
        completion.close()


def complete_by_grammar(
    model: Any,
    emit: Callable[[str], None],
    stop: threading.Event,
    prompt: str,
    schema_json: str,
    temperature: float,
    max_tokens: int,
) -> None:
    """The job on the model's thread (``_Model.iterate``): raw JSON text as it is generated,
    stopping between tokens once ``stop`` is set (barge-in, timeout), as the free-text
    ``_complete`` does. The grammar is compiled here too (cached per node): compiling
    takes milliseconds that the event loop, serving every call, must not spend."""
    grammar = grammar_for(schema_json)
    completion = model.create_completion(
        prompt, max_tokens=max_tokens, temperature=temperature, grammar=grammar, stream=True
    )
    stream_completion(completion, emit, stop)


async def stream_calls(
    model: Any,  # local._Model: its ``iterate`` runs the job on the model's thread
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    *,
    rule: str,
    language: str,
    temperature: float,
    max_tokens: int,
    fallback: str,
    queue_timeout_s: float | None,
    must_call: bool = False,
) -> AsyncIterator[str | ToolCall]:
    """One answer by grammar: the words of ``say`` as they are generated, then the
    :class:`ToolCall` if the answer has one. Runs on the model's thread like every other
    job (``_Model.iterate``): closing this iterator stops the generation between tokens.
    A reply with neither words nor a call says ``fallback``, as the free-text path does."""
    prompt = tool_prompt(messages, tools, rule=rule, language=language, turns=PROMPT_TURNS)
    raw = model.iterate(
        complete_by_grammar,
        prompt,
        # (compiled on the model's thread)
        json.dumps(grammar_schema(tools, must_call=must_call), sort_keys=False),
        temperature,
        max_tokens + CALL_TOKENS,
        queue_timeout_s=queue_timeout_s,
    )
    answer = SayStream()
    earlier = _said_since_caller(messages)
    words = _Words(already_said=earlier)
    async with aclosing(raw) as chunks:
        async for chunk in chunks:
            # "" while the call is written: the reply's per-step timeout sees the model
            # working (a slow CPU takes seconds over the call's tokens), yet nothing is
            # said and the first-token time is the first word's (reply.py skips "").
            yield words.push(answer.push(chunk))
            if words.enough:
                # The 0.5B looped "Please call for a booking." until max_tokens
                # (measured). The call, written first, is already complete.
                break
    if tail := words.flush():
        yield tail
    said = words.said
    say, call = answer.finish()
    if call is not None:
        call = heard_only(call, messages)
        if _repeated(call, messages):
            # The same call again in one reply gets the same result: the 0.5B repeated a
            # refused set_booking_details round after round (seconds each) instead of
            # asking. Its words are said; the next turn is the caller's.
            log.info("local llm (grammar): %s repeated with the same arguments; dropped",
                     call.name)  # fmt: skip
            call = None
    if call is None and not said.strip() and not earlier:  # (else this round adds nothing)
        log.warning("local llm (grammar) answered nothing usable: %r", answer.raw[:200])
        yield fallback
        return
    if call is not None:
        yield call


@functools.lru_cache(maxsize=64)
def grammar_for(schema_json: str) -> Any:
    """The grammar of one node's answer (cached: a node offers the same tools every turn).
    A tool whose parameters still do not compile gets free-form arguments instead, checked
    when the call runs."""
    schema = json.loads(schema_json)
    try:
        return json_grammar(schema)
    except EngineError as exc:
        log.warning("local llm: a tool's parameters have no grammar (%s); any object instead",
                    exc)  # fmt: skip
    for option in schema["properties"]["call"]["anyOf"]:
        if "properties" in option:  # (not the null option)
            option["properties"]["arguments"] = {"type": "object"}
    return json_grammar(schema)


# --- what the caller said: a small model's invented values are left out ----------------

# Number words a caller says for a count (party size, nights, tickets), en and es.
NUMBER_WORDS = {
    word: n
    for n, words in enumerate(
        [("zero", "cero"), ("one", "uno", "una", "un"), ("two", "dos"), ("three", "tres"),
         ("four", "cuatro"), ("five", "cinco"), ("six", "seis"), ("seven", "siete"),
         ("eight", "ocho"), ("nine", "nueve"), ("ten", "diez"), ("eleven", "once"),
         ("twelve", "doce")]
    )
    for word in words
}  # fmt: skip
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+")


def heard_only(call: ToolCall, messages: list[dict[str, Any]]) -> ToolCall:
    """``call`` without the argument values nobody gave: a 1.5B model called
    set_booking_details after "Four people." with a day, time and name it made up
    (measured). The values kept are those found in the caller's words or in a tool's
    result (a booking reference, the values a transition collected); a string is checked
    by its words of three or more characters with a letter (any one heard keeps it:
    "Lola Smith" for "Lola"), else by its numbers ("21:00" for "nine in the evening",
    not "13:00"), an integer as digits or a number word. Dropping a value leaves the call
    to the schema check, whose refusal ("'day' is a required property … ask the caller")
    the model reads next round: it asks.
    The system prompt is not evidence (its opening hours are not the caller's day), nor
    are the agent's own words."""
    try:
        arguments = call.parsed_arguments()
    except ValueError:
        return call
    tokens = _heard_tokens(messages)
    kept = {key: value for key, value in arguments.items() if _is_heard(value, tokens)}
    if kept == arguments:
        return call
    log.info("local llm (grammar): %s without values nobody said: %s", call.name,
             sorted(set(arguments) - set(kept)))  # fmt: skip
    return ToolCall(id=call.id, name=call.name, arguments=json.dumps(kept, ensure_ascii=False))


class _Words:
    """The words of ``say`` to pass on: streamed as they come, at most
    ``MAX_SAY_SENTENCES`` sentences, and without a sentence already said in this reply (a
    reply of several rounds repeated "Thank you for your booking." in each). A sentence
    that starts like one already said is held until it is complete, then dropped if it is
    the same; any other streams at once."""

    def __init__(self, *, already_said: set[str]) -> None:
        self._seen = set(already_said)
        self._text = ""
        self._sent = 0  # characters of _text passed on (or dropped)
        self._start = 0  # where the current sentence starts
        self._sentences = 0
        self.said = ""

    @property
    def enough(self) -> bool:
        return self._sentences >= MAX_SAY_SENTENCES

    def push(self, words: str) -> str:
        self._text += words
        if not self._sent:
            self._text = self._text.lstrip()  # the first delta is what TTS starts on
        out = []
        while not self.enough:
            ends = _SENTENCE_END_STREAMING.finditer(self._text, self._start)
            end = next((m.end() for m in ends if m.end() > self._start), None)
            key = _normal(self._text[self._start : end])
            if end is None:
                if not (key and any(seen.startswith(key) for seen in self._seen)):
                    out.append(self._text[self._sent :])
                    self._sent = len(self._text)
                break
            self._sentences += 1
            if key in self._seen and self._sent <= self._start:
                self._sent = end  # a repeat not begun: dropped
            else:
                out.append(self._text[self._sent : end])
                self._sent = end
            self._seen.add(key)
            self._start = end
        text = "".join(out)
        self.said += text
        return text

    def flush(self) -> str:
        """What is left when the answer ends: its last sentence, unless a repeat."""
        if self.enough:
            return ""
        rest = self._text[self._sent :]
        if _normal(self._text[self._start :]) in self._seen and self._sent <= self._start:
            rest = ""
        self._sent = len(self._text)
        self.said += rest
        return rest


def _said_since_caller(messages: list[dict[str, Any]]) -> set[str]:
    """The sentences the agent said since the caller last spoke (earlier rounds)."""
    said: set[str] = set()
    for message in reversed(messages):
        if message.get("role") == "user":
            break
        if message.get("role") == "assistant" and (text := _text(message)):
            start = 0
            for match in _SENTENCE_END.finditer(text):
                said.add(_normal(text[start : match.end()]))
                start = match.end()
            said.add(_normal(text[start:]))
    said.discard("")
    return said


def _normal(sentence: str) -> str:
    return " ".join(_WORD.findall(sentence.casefold()))


def _repeated(call: ToolCall, messages: list[dict[str, Any]]) -> bool:
    """``call`` was already made, with the same arguments, since the caller last spoke."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return False
        for earlier in message.get("tool_calls") or ():
            fn = earlier.get("function", {})
            if fn.get("name") == call.name and _same_json(fn.get("arguments"), call.arguments):
                return True
    return False


def _same_json(a: str | None, b: str | None) -> bool:
    try:
        return json.loads(a or "{}") == json.loads(b or "{}")
    except ValueError:
        return a == b


def _heard_tokens(messages: list[dict[str, Any]]) -> set[str]:
    tokens: set[str] = set()
    for message in messages:
        if message.get("role") in ("user", "tool") and isinstance(message.get("content"), str):
            tokens.update(_fold(word) for word in _WORD.findall(message["content"]))
    tokens.update(str(NUMBER_WORDS[word]) for word in tokens & NUMBER_WORDS.keys())
    return tokens


def _is_heard(value: Any, tokens: set[str]) -> bool:
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return str(value) in tokens
    if isinstance(value, str):
        words = [w for w in map(_fold, _WORD.findall(value)) if len(w) >= 3 and _has_letter(w)]
        if words:
            return any(w in tokens for w in words)
        numbers = [int(n) for n in _NUMBER.findall(value) if int(n)]
        return not numbers or any(_number_heard(n, tokens) for n in numbers)
    return True  # numbers with decimals, lists, objects: not checked


def _number_heard(n: int, tokens: set[str]) -> bool:
    """``n`` said, or ``n`` is a 24-hour time of an hour said ("21:00" for "nine in the
    evening": the model writes the time it understood, and that is no invention)."""
    return str(n) in tokens or (13 <= n <= 24 and str(n - 12) in tokens)


def _fold(word: str) -> str:
    """Case and accents folded: "Sábado" and "sabado" are the same word."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _has_letter(word: str) -> bool:
    return any(ch.isalpha() for ch in word)


def json_grammar(schema: dict[str, Any]) -> Any:
    """The llama.cpp grammar of ``schema`` (also the post-call extraction's, local.py)."""
    try:
        from llama_cpp import LlamaGrammar
    except ImportError as exc:
        raise EngineError(f"llama-cpp-python is not installed: {exc}", vendor="local") from exc
    try:
        return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    except (ValueError, KeyError, TypeError, RuntimeError, AssertionError) as exc:
        # An admin-written schema may use JSON Schema features llama.cpp cannot turn into
        # a grammar (its converter *asserts* on some patterns); no retry will change that.
        raise EngineError(f"no grammar for this JSON schema: {exc!r}", vendor="local") from exc
