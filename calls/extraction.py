"""Post-call analysis: summary, intent, sentiment, entities, next action + the profile's fields.

Runs in a Celery task after the call ends. The LLM is Groq (``GROQ_EXTRACTION_MODEL``)
when ``GROQ_API_KEY`` is set, else an OpenAI-compatible server when the profile uses one,
else an offline heuristic (no small local model writes reliable JSON; the result is
labelled ``"engine": "offline-heuristic"`` so nobody mistakes it for an LLM analysis).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import jsonschema
from django.conf import settings

from calls import selectors
from calls.models import Call, ExtractionStatus
from calls.services import call_set_extraction
from orchestrator.config import EngineSpec
from orchestrator.engines import EngineError

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
    user_text = " ".join(t.text for t in call.turns.filter(role="user").order_by("sequence"))
    sentiment = (
        "negative"
        if _NEGATIVE.search(user_text)
        else "positive"
        if _POSITIVE.search(user_text)
        else "neutral"
    )
    result: dict[str, Any] = {
        "summary": f"The caller said: {user_text[:280]}",
        "intent": "unknown",
        "sentiment": sentiment,
        "extracted_entities": {"numbers": _NUMBER.findall(user_text)[:10]},
        "next_action": "review the transcript",
        "engine": "offline-heuristic",
    }
    for name in schema["properties"]:
        result.setdefault(name, None)
    return result


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
        data = heuristic_extraction(call, schema)
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
    call_set_extraction(call_id=call.pk, status=ExtractionStatus.DONE, data=data)
    logger.info("extraction done", extra={"call_id": str(call.pk)})
    return ExtractionStatus.DONE
