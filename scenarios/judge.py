"""The LLM-judge check: a rubric in plain words, judged by a cloud LLM over the stored
transcript. Without a cloud key the check is skipped with its reason (the offline 0.5B
model is no judge); with ``GROQ_API_KEY`` the Groq engine of the profile list judges it
(model ``GROQ_LLM_MODEL``)."""

from __future__ import annotations

import re

from django.conf import settings

from calls.selectors import engine_credentials
from orchestrator.config import EngineSpec
from orchestrator.engines import EngineError, create_engine
from scenarios.assertions import FAILED, PASSED, CheckResult, Judge
from scenarios.stored_call import StoredCall

PROMPT = (
    "You judge a phone call between a caller and a voice agent. Read the transcript and "
    "decide whether the rubric holds. Answer with PASS or FAIL on the first line, then one "
    "sentence that says why."
)
VERDICT = re.compile(r"^\s*(PASS|FAIL)\b", re.IGNORECASE)


def cloud_judge() -> Judge | None:
    """The judge, or None when no cloud LLM key is set (the check is then skipped)."""
    if not settings.GROQ_API_KEY:
        return None

    async def judge(rubric: str, call: StoredCall) -> CheckResult:
        lines = [
            f"{'Caller' if t.role == 'user' else 'Agent'}: {t.text}"
            for t in call.turns
            if t.role in ("user", "assistant")
        ]
        messages = [
            {"role": "system", "content": PROMPT},
            {"role": "user", "content": f"Rubric: {rubric}\n\nTranscript:\n" + "\n".join(lines)},
        ]
        try:
            llm = create_engine("llm", EngineSpec(engine="groq"), engine_credentials())
            answer = "".join(
                [
                    part
                    async for part in llm.stream(messages, temperature=0.0, max_tokens=120)  # type: ignore[attr-defined]
                    if isinstance(part, str)
                ]
            )
        except EngineError as exc:
            return CheckResult(check="", status=FAILED, message=f"the judge failed: {exc}")
        match = VERDICT.match(answer)
        if match is None:
            return CheckResult(
                check="", status=FAILED, message=f"the judge gave no verdict: {answer[:200]!r}"
            )
        status = PASSED if match.group(1).upper() == "PASS" else FAILED
        return CheckResult(check="", status=status, message=answer.strip()[:500])

    return judge
