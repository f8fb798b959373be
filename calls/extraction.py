"""Post-call analysis: summary, intent, sentiment, entities, next action + the profile's fields.

Runs in a Celery task after the call ends. The LLM is Groq (``GROQ_EXTRACTION_MODEL``)
when ``GROQ_API_KEY`` is set, else an OpenAI-compatible server when the profile uses one.

Without either, offline (``EXTRACTION_OFFLINE_ENGINE``):

- ``local-llm`` (default): the local LLM of ``orchestrator/engines/local.py`` (the same
  loaded model and worker thread the calls use: Qwen2.5-Coder-Instruct through its chat
  template) writes JSON under a grammar built from the schema, so the answer always
  parses; two example exchanges in the call's language (es/en) keep the summary in that
  language. The small model can get facts wrong, so explicit
  booking phrasings found by ``orchestrator/caller_facts.py`` override its party size, time
  and name, and a summary not in the call's language is replaced by a template. The
  result says where each field came from (``"_sources"``). If the model fails or runs out
  of time, the heuristic below is used and the reason logged and stored.
- ``heuristic``: the caller's words as the summary, intent "unknown", sentiment from
  keywords, booking facts from the same rules. Labelled ``"engine": "offline-heuristic"``
  so nobody mistakes it for an LLM analysis.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import jsonschema
from django.conf import settings

from calls import selectors
from calls.models import Call, ExtractionStatus
from calls.services import call_set_extraction
from orchestrator import caller_facts
from orchestrator.config import EngineSpec
from orchestrator.engines import EngineError
from orchestrator.engines._pcm import language_code

logger = logging.getLogger(__name__)

BASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["summary", "intent", "sentiment", "extracted_entities", "next_action"],
    "properties": {
        "summary": {"type": "string", "description": "Two or three sentences."},
        "intent": {"type": "string", "description": "What the caller wanted, snake_case."},
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "extracted_entities": {
            "type": "object",
            "description": "Names, dates, times, numbers, places mentioned, as key: value.",
        },
        "next_action": {"type": "string", "description": "What the business should do next."},
    },
}


class TransientExtractionError(Exception):
    """A failure worth retrying (timeout, 429, 5xx)."""


def schema_for(call: Call) -> dict[str, Any]:
    """The base schema plus the top-level fields of the profile's extraction schema."""
    schema = json.loads(json.dumps(BASE_SCHEMA))
    extra = (call.profile.extraction_schema if call.profile else None) or {}
    for name, prop in (extra.get("properties") or {}).items():
        schema["properties"].setdefault(name, prop)
    for name in extra.get("required") or []:
        if name not in schema["required"]:
            schema["required"].append(name)
    return schema


def _transcript(call: Call) -> str:
    lines = []
    for turn in selectors.call_turns(call_id=call.pk):
        if turn.role == "tool":
            # What the agent did (a booking made, a transfer) is part of the outcome.
            lines.append(f"[Tool {turn.tool_name} {turn.tool_status}: {turn.text}; "
                         f"result: {turn.tool_result[:500]}]")  # fmt: skip
            continue
        who = "Caller" if turn.role == "user" else "Agent"
        cut = " [interrupted]" if turn.interrupted else ""
        lines.append(f"{who}: {turn.text}{cut}")
    return "\n".join(lines)


def build_messages(call: Call, schema: dict[str, Any]) -> list[dict[str, str]]:
    system = (
        "You analyse phone call transcripts for a business. Reply with ONE JSON object and "
        "nothing else, valid against this JSON Schema:\n"
        f"{json.dumps(schema, ensure_ascii=False)}\n"
        "Use null for fields the call does not mention. Write the summary in the call's language."
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Transcript:\n{_transcript(call)}"},
    ]


def parse_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in an LLM answer (tolerates code fences and chatter around it)."""
    start = text.find("{")
    if start < 0:
        raise ValueError("the answer holds no JSON object")
    obj, _ = json.JSONDecoder().raw_decode(text[start:])
    if not isinstance(obj, dict):
        raise ValueError("the answer's JSON is not an object")
    return obj


def _engine_spec(call: Call) -> EngineSpec | None:
    if settings.GROQ_API_KEY:
        return EngineSpec(engine="groq", model=settings.GROQ_EXTRACTION_MODEL)
    profile = call.profile
    if (
        profile is not None
        and profile.llm_engine == "openai"
        and (settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)
    ):
        return EngineSpec(engine="openai", model=profile.llm_model)
    return None


def _complete(spec: EngineSpec, messages: list[dict[str, str]], *, timeout_s: float) -> str:
    """One non-streaming completion in JSON mode (Groq and OpenAI speak the same API).

    One request, no SDK retries: the task owns retries and the time budget of them all."""
    if spec.engine == "groq":
        import groq as sdk

        client = sdk.Groq(
            api_key=settings.GROQ_API_KEY,
            base_url=settings.GROQ_BASE_URL or None,
            timeout=timeout_s,
            max_retries=0,
        )
    else:
        import openai as sdk  # type: ignore[no-redef]

        client = sdk.OpenAI(
            api_key=settings.OPENAI_API_KEY or "not-needed",
            base_url=settings.OPENAI_BASE_URL or None,
            timeout=timeout_s,
            max_retries=0,
        )
    try:
        completion = client.chat.completions.create(
            model=spec.model,
            messages=messages,  # type: ignore[arg-type]
            temperature=0.0,
            max_tokens=800,
            response_format={"type": "json_object"},
        )
    except sdk.APIStatusError as exc:
        retryable = exc.status_code == 429 or exc.status_code >= 500
        raise EngineError(
            exc.message, vendor=spec.engine, status=exc.status_code, retryable=retryable
        ) from exc
    except (sdk.APIConnectionError, sdk.APITimeoutError) as exc:
        raise EngineError(str(exc), vendor=spec.engine, retryable=True) from exc
    finally:
        client.close()
    return completion.choices[0].message.content or ""


_NUMBER = re.compile(r"\b\d+(?:[.,:]\d+)?\b")
_NEGATIVE = re.compile(
    r"\b(angry|bad|terrible|cancel|complain|problem|malo|queja|cancelar|problema)\b", re.I
)
_POSITIVE = re.compile(r"\b(thanks|thank you|great|perfect|gracias|perfecto|genial)\b", re.I)


def heuristic_extraction(call: Call, schema: dict[str, Any]) -> dict[str, Any]:
    user_text = _caller_text(call)
    sentiment = (
        "negative"
        if _NEGATIVE.search(user_text)
        else "positive"
        if _POSITIVE.search(user_text)
        else "neutral"
    )
    lang = _language(call)
    result: dict[str, Any] = {
        "summary": f"{_HEURISTIC_SUMMARY.get(lang, _HEURISTIC_SUMMARY['en'])} {user_text[:280]}",
        "intent": "unknown",
        "sentiment": sentiment,
        "extracted_entities": {"numbers": _NUMBER.findall(user_text)[:10]},
        "next_action": _HEURISTIC_NEXT.get(lang, _HEURISTIC_NEXT["en"]),
    }
    for name in schema["properties"]:
        result.setdefault(name, None)
    sources = dict.fromkeys(result, "heuristic")
    facts = caller_facts.booking_facts(user_text)
    for name, prop in schema["properties"].items():
        fact = caller_facts.fact_for_field(facts, name, prop)
        if fact is not None and name not in BASE_SCHEMA["properties"]:
            result[name], sources[name] = fact, "rules"
    result["engine"] = "offline-heuristic"
    result["_sources"] = sources
    return result


_HEURISTIC_SUMMARY = {"en": "The caller said:", "es": "El cliente dijo:"}
_HEURISTIC_NEXT = {"en": "review the transcript", "es": "revisar la transcripción"}


def _caller_text(call: Call) -> str:
    return " ".join(t.text for t in call.turns.filter(role="user").order_by("sequence"))


def _language(call: Call) -> str:
    """The call's language code ("es", "en"): what it ran with, else its profile's."""
    tag = (call.config_snapshot or {}).get("language") or (
        call.profile.language if call.profile else ""
    )
    return language_code(str(tag or "en"))


# --- offline: the local LLM under a JSON-schema grammar ---------------------------------

LOCAL_MAX_TOKENS = 400  # the longest answer the grammar allows is shorter (see _grammar_schema)
SUMMARY_MAX_CHARS = 300
FIELD_MAX_CHARS = 80
ENTITIES_MAX = 6

# Few-shot examples by language, given to the instruct model as chat turns (transcript ->
# JSON analysis) before the real call; the examples' language is the summary's. Fields of
# the profile's schema take the example's booking facts where a rule maps them, else null.
# The booking comes last because most calls are bookings (the facts are checked against
# the caller's words, the summary and intent are not).
_EXAMPLES: dict[str, dict[str, Any]] = {
    "en": {
        "header": "You analyse phone calls to a restaurant. For each call transcript, answer "
        "with its analysis as one JSON object: summary (one or two sentences, in English), "
        "intent (snake_case), sentiment, extracted_entities, next_action, and the booking "
        "fields said in the call (null when not said). Use only what the call says.",
        "call": "Call",
        "analysis": "Analysis",
        "labels": ("Caller", "Agent"),
        "shots": [
            {
                "turns": [
                    ("user", "Hi, are you open on Sunday evening?"),
                    ("assistant", "Yes, from seven to eleven."),
                    ("user", "Great, thanks. Bye."),
                ],
                "facts": caller_facts.BookingFacts(),
                "answer": {
                    "summary": "The caller asked whether the restaurant opens on Sunday "
                    "evening and was told from seven to eleven.",
                    "intent": "ask_opening_hours",
                    "sentiment": "neutral",
                    "extracted_entities": {"day": "Sunday"},
                    "next_action": "none",
                },
            },
            {
                "turns": [
                    ("user", "Hello, can I get a table for two on Saturday?"),
                    ("assistant", "Of course. At what time?"),
                    ("user", "Nine pm, please. My name is Maria Lopez."),
                    ("assistant", "Done, see you on Saturday."),
                ],
                "facts": caller_facts.BookingFacts(2, "Saturday 21:00", "Maria Lopez"),
                "answer": {
                    "summary": "Maria Lopez booked a table for two on Saturday at 9 pm.",
                    "intent": "book_table",
                    "sentiment": "positive",
                    "extracted_entities": {"day": "Saturday", "time": "21:00"},
                    "next_action": "confirm the booking",
                },
            },
        ],
    },
    "es": {
        "header": "Analizas llamadas a un restaurante. Para cada transcripción, responde con "
        "su análisis en un objeto JSON: summary (una o dos frases, en español), intent "
        "(snake_case), sentiment, extracted_entities, next_action y los datos de la reserva "
        "dichos en la llamada (null si no se dijeron). Usa solo lo que dice la llamada.",
        "call": "Llamada",
        "analysis": "Análisis",
        "labels": ("Cliente", "Agente"),
        "shots": [
            {
                "turns": [
                    ("user", "Buenas, ¿abren el domingo por la noche?"),
                    ("assistant", "Sí, de siete a once."),
                    ("user", "Perfecto, gracias. Adiós."),
                ],
                "facts": caller_facts.BookingFacts(),
                "answer": {
                    "summary": "El cliente preguntó si el restaurante abre el domingo por la "
                    "noche y se le dijo que de siete a once.",
                    "intent": "ask_opening_hours",
                    "sentiment": "neutral",
                    "extracted_entities": {"dia": "domingo"},
                    "next_action": "ninguna",
                },
            },
            {
                "turns": [
                    ("user", "Hola, ¿tienen mesa para dos el sábado?"),
                    ("assistant", "Claro. ¿A qué hora?"),
                    ("user", "A las nueve de la noche. Me llamo María López."),
                    ("assistant", "Hecho, les esperamos el sábado."),
                ],
                "facts": caller_facts.BookingFacts(2, "sábado 21:00", "María López"),
                "answer": {
                    "summary": "María López ha reservado una mesa para dos el sábado a las "
                    "nueve de la noche.",
                    "intent": "book_table",
                    "sentiment": "positive",
                    "extracted_entities": {"dia": "sábado", "hora": "21:00"},
                    "next_action": "confirmar la reserva",
                },
            },
        ],
    },
}

# Words frequent in any summary of the language and rare in the other: a summary with
# more of the other language's is in the wrong language.
_STOPWORDS = {
    "en": frozenset(
        "the a an and of to for on at in is was with his her their they he she caller "
        "wants asked booked table people would".split()
    ),
    "es": frozenset(
        "el la los las un una y de del para en con por que se su es ha cliente quiere "
        "mesa personas reserva reservado".split()
    ),
}
_TEMPLATES = {
    "en": {
        "intro": "Call about {intent}.",
        "party_size": "Party of {value}.",
        "time": "Time: {value}.",
        "name": "Name: {value}.",
    },
    "es": {
        "intro": "Llamada sobre {intent}.",
        "party_size": "Para {value} personas.",
        "time": "Hora: {value}.",
        "name": "A nombre de {value}.",
    },
}


def in_language(text: str, lang: str) -> bool:
    """Whether ``text`` reads as ``lang`` by a stopword count (es/en; other languages are
    not checked)."""
    if lang not in _STOPWORDS:
        return True
    words = re.findall(r"[^\W\d_]+", text.lower())
    own = sum(word in _STOPWORDS[lang] for word in words)
    other = max(
        sum(word in stop for word in words) for code, stop in _STOPWORDS.items() if code != lang
    )
    return own > other


def _grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema the grammar enforces: stricter than the stored one so that a tiny model
    cannot ramble (bounded strings, a flat entities object of a few entries) and writes
    every field (null where nothing was said)."""
    strict = json.loads(json.dumps(schema))
    strict["required"] = list(strict["properties"])
    strict["additionalProperties"] = False
    for name, prop in strict["properties"].items():
        if name == "extracted_entities":
            strict["properties"][name] = {
                "type": "object",
                "additionalProperties": {
                    "type": ["string", "integer"],
                    "maxLength": FIELD_MAX_CHARS,
                },
                "maxProperties": ENTITIES_MAX,
            }
        elif _allows(prop, "string") and "enum" not in prop and "maxLength" not in prop:
            prop["maxLength"] = SUMMARY_MAX_CHARS if name == "summary" else FIELD_MAX_CHARS
    return strict


def _allows(prop: dict[str, Any], kind: str) -> bool:
    declared = prop.get("type")
    return kind in declared if isinstance(declared, list) else declared == kind


def _example_answer(shot: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if name in shot["answer"]:
            answer[name] = shot["answer"][name]
        else:
            answer[name] = caller_facts.fact_for_field(shot["facts"], name, prop)
    return answer


def _dialogue(turns: list[tuple[str, str]], labels: tuple[str, str]) -> str:
    user, agent = labels
    return "\n".join(
        f"{user if role == 'user' else agent}: {' '.join(text.split())}" for role, text in turns
    )


def local_messages(
    turns: list[tuple[str, str]], schema: dict[str, Any], *, lang: str
) -> list[dict[str, str]]:
    """The chat the local instruct model answers with the analysis of ``turns``
    (``(role, text)`` of the caller and agent only): the task, two analysed example calls
    as user/assistant turns, then the real transcript."""
    examples = _EXAMPLES.get(lang, _EXAMPLES["en"])
    messages = [{"role": "system", "content": examples["header"]}]
    for shot in examples["shots"]:
        answer = json.dumps(_example_answer(shot, schema), ensure_ascii=False)
        messages += [
            {"role": "user", "content": _dialogue(shot["turns"], examples["labels"])},
            {"role": "assistant", "content": answer},
        ]
    messages.append({"role": "user", "content": _dialogue(turns, examples["labels"])})
    return messages


def _local_model_key(call: Call) -> str:
    """Always the small default model, whatever size the call used: its prompt evaluation
    cannot be interrupted, and on the 1.5B a 3-turn call's analysis takes ~5.6 s here, long
    enough for a live caller's turn on that model to time out; the 0.5B takes about a
    third of that, and the booking rules fill what it misses."""
    from orchestrator.engines import local

    del call  # (the profile's size is deliberately not used)
    return local.LLM


def local_llm_extraction(call: Call, schema: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    """The local model's analysis of ``call``, checked against ``schema``, with the rules'
    booking facts and a summary in the call's language. Raises ``EngineError``,
    ``ValueError`` or ``jsonschema.ValidationError``: the caller falls back."""
    from orchestrator.engines import local

    lang = _language(call)
    turns = [
        (turn.role, turn.text)
        for turn in selectors.call_turns(call_id=call.pk)
        if turn.role in ("user", "assistant") and turn.text.strip()  # not tool turns
    ]
    model_key = _local_model_key(call)
    answer = local.generate_json(
        local_messages(turns, schema, lang=lang),
        _grammar_schema(schema),
        max_tokens=LOCAL_MAX_TOKENS,
        timeout_s=timeout_s,
        model_key=model_key,
    )
    # The grammar makes it parse unless cut at max_tokens; llama.cpp's string rule still
    # lets a raw newline through, which strict JSON refuses.
    data = json.loads(answer, strict=False)
    if not isinstance(data, dict):
        raise ValueError("the answer's JSON is not an object")
    for name, value in data.items():
        if isinstance(value, str):
            data[name] = " ".join(value.split())
    sources = dict.fromkeys(schema["properties"], "llm")
    caller_text = " ".join(text for role, text in turns if role == "user")
    facts = caller_facts.booking_facts(caller_text)
    for name, prop in schema["properties"].items():
        kind = caller_facts.field_kind(name, prop)
        if kind is None or name in BASE_SCHEMA["properties"]:
            continue
        fact = getattr(facts, kind)
        if fact is not None:
            data[name], sources[name] = fact, "rules"
        elif data.get(name) is not None and not caller_facts.grounded(
            kind, data[name], " ".join(text for _role, text in turns)
        ):
            # Not said in the call: copied from the example or made up. A field that may
            # not be null keeps it, labelled.
            if _allows(prop, "null"):
                data[name], sources[name] = None, "llm-dropped"
            else:
                sources[name] = "llm-ungrounded"
    if _NEGATIVE.search(caller_text) and data.get("sentiment") != "negative":
        # The few-shot examples are friendly calls, and the model keeps their sentiment.
        data["sentiment"], sources["sentiment"] = "negative", "rules"
    if not in_language(str(data.get("summary") or ""), lang):
        data["summary"], sources["summary"] = _template_summary(data, schema, lang), "template"
    jsonschema.validate(data, schema)
    data["engine"] = f"local-llm:{local.MODELS[model_key].label}"
    data["_sources"] = sources
    return data


def _template_summary(data: dict[str, Any], schema: dict[str, Any], lang: str) -> str:
    template = _TEMPLATES.get(lang, _TEMPLATES["en"])
    intent = str(data.get("intent") or "unknown").replace("_", " ")
    parts = [template["intro"].format(intent=intent)]
    for name, prop in schema["properties"].items():
        kind = caller_facts.field_kind(name, prop)
        if kind and data.get(name) is not None:
            parts.append(template[kind].format(value=data[name]))
    return " ".join(parts)


def offline_extraction(call: Call, schema: dict[str, Any], *, timeout_s: float) -> dict[str, Any]:
    if settings.EXTRACTION_OFFLINE_ENGINE == "local-llm":
        started = time.perf_counter()
        try:
            data = local_llm_extraction(call, schema, timeout_s=timeout_s)
        except (EngineError, ValueError, jsonschema.ValidationError) as exc:
            reason = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
            logger.warning(
                "extraction of %s: local LLM failed (%s); using the heuristic", call.pk, reason
            )
            data = heuristic_extraction(call, schema)
            data["fallback_reason"] = f"local LLM: {reason}"[:500]
            return data
        logger.info(
            "extraction of %s: local LLM in %.1f s", call.pk, time.perf_counter() - started
        )
        return data
    return heuristic_extraction(call, schema)


def extract_call_data(*, call_id: str, timeout_s: float) -> str:
    """Run the analysis once, its LLM request bounded by ``timeout_s``. Idempotent: a done or
    skipped call is left alone.

    Raises ``TransientExtractionError`` for failures worth retrying; the task retries.
    """
    call = Call.objects.select_related("profile").filter(pk=call_id).first()
    if call is None:
        logger.warning("extraction: call %s does not exist", call_id)
        return "missing"
    if call.extraction_status in (ExtractionStatus.DONE, ExtractionStatus.SKIPPED):
        return call.extraction_status
    if not call.turns.filter(role="user").exists():
        call_set_extraction(call_id=call.pk, status=ExtractionStatus.SKIPPED)
        return ExtractionStatus.SKIPPED
    schema = schema_for(call)
    spec = _engine_spec(call)
    if spec is None:
        data = offline_extraction(call, schema, timeout_s=timeout_s)
    else:
        try:
            answer = _complete(spec, build_messages(call, schema), timeout_s=timeout_s)
        except EngineError as exc:
            if exc.retryable:
                raise TransientExtractionError(str(exc)) from exc
            call_set_extraction(call_id=call.pk, status=ExtractionStatus.FAILED, error=str(exc))
            return ExtractionStatus.FAILED
        try:
            data = parse_json_object(answer)
            jsonschema.validate(data, schema)
        except (ValueError, jsonschema.ValidationError) as exc:
            message = exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)
            call_set_extraction(
                call_id=call.pk,
                status=ExtractionStatus.FAILED,
                error=f"invalid answer from {spec.engine}: {message}; answer: {answer[:500]}",
            )
            return ExtractionStatus.FAILED
        data["engine"] = f"{spec.engine}:{spec.model}"
    if (flow := (call.metrics or {}).get("flow")) is not None:
        # A flow's collected values were checked against their schemas during the call: the
        # call's structured result as it is, beside what the analysis read (docs/flows.md).
        data["flow"] = {"path": [step["node"] for step in flow["path"]], "values": flow["values"]}
    call_set_extraction(call_id=call.pk, status=ExtractionStatus.DONE, data=data)
    logger.info("extraction done", extra={"call_id": str(call.pk)})
    return ExtractionStatus.DONE
