"""Runs scenarios as real calls: for each one, the call placed on its channel as that
channel's callers place it (``scenarios/dialing.py``: Twilio, Telnyx or the browser
simulator), the media socket driven by the scripted caller, then the checks on the call as
the server stored it.

    results = await run_batch(jobs, target, repeat=2, parallel=3, on_result=print)

``jobs`` are :class:`Job` (a parsed spec plus what the database knows about it); the
caller of this module (management command, Celery task, tests) loads them and stores the
results (``scenarios.services``). Scenarios of one batch run ``parallel`` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from channels.db import database_sync_to_async
from websockets.exceptions import WebSocketException

from orchestrator.contracts import EndReason
from orchestrator.engines import EngineError
from scenarios.assertions import FAILED, Judge, evaluate
from scenarios.caller_line import CallRef
from scenarios.caller_script import ScriptedCaller, ScriptOutcome
from scenarios.dialing import NotPlaceable, dial, new_ref
# The batch's data types live in jobs.py (services reads them without the runner); they
# are this module's API too.
from scenarios.jobs import Job, RunResult, Target  # noqa: F401 - re-exported
from scenarios.persona import PersonaCaller
from scenarios.spec import OverAgent, Say
from scenarios.stored_call import StoredCall, load, wait_until_finished
from scenarios.telnyx_api import TelnyxRig
from scenarios.voice import LINE_FORMATS, CallerVoice

logger = logging.getLogger(__name__)
PASSED, ERROR, SKIPPED = "passed", "error", "skipped"
# The server ending the call itself is part of a conversation, not a crash.
SERVER_ENDINGS = {
    EndReason.AGENT_HANGUP,
    EndReason.IDLE_TIMEOUT,
    EndReason.MAX_DURATION,
    EndReason.TRANSFERRED,
}
STORED_WAIT_S = 20.0  # the call record ends within moments of the socket closing
BUSY_PAUSE_S = 5.0  # before placing a call again that the server ended as busy
EXTRACTION_WAIT_S = 90.0  # the offline LLM's post-call analysis takes seconds of CPU


async def run_batch(
    jobs: list[Job],
    target: Target,
    *,
    repeat: int = 1,
    parallel: int = 1,
    judge: Judge | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    busy_retries: int = 0,
) -> list[RunResult]:
    """Every job ``repeat`` times, ``parallel`` calls at a time, results in job order.

    A run the server ended as busy (its own overload protection: a local model too slow on
    a loaded machine) says nothing about the agent; with ``busy_retries`` it is placed
    again, up to that many times, after a pause, and its notes say so."""
    await warm_voices(jobs)
    gate = asyncio.Semaphore(max(1, parallel))
    limits = httpx.Limits(max_connections=max(4, parallel * 2))
    async with httpx.AsyncClient(timeout=30, limits=limits) as http, _serving(target.telnyx):

        async def one(job: Job, index: int) -> RunResult:
            async with gate:
                try:
                    result = await _run_with_retries(
                        job, target, http=http, index=index, judge=judge, retries=busy_retries
                    )
                except Exception as exc:  # noqa: BLE001 - one run's bug must not lose the batch
                    logger.exception("scenario %s crashed the runner", job.label)
                    result = RunResult(
                        label=job.label,
                        scenario_id=job.scenario_id,
                        repeat_index=index,
                        status=ERROR,
                        started_at=datetime.now(UTC),
                        error=f"the runner crashed: {exc!r}",
                    )
            if on_result is not None:
                on_result(result)
            return result

        tasks: list[asyncio.Task[RunResult]] = []  # kept: gathered, or cancelled below
        for job in jobs:
            for index in range(repeat):
                task = asyncio.create_task(one(job, index), name=f"scenario-{job.label}-{index}")
                tasks.append(task)
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def _serving(rig: TelnyxRig | None) -> AsyncIterator[None]:
    """The runner's Telnyx Call Control API, served for the batch."""
    if rig is None:
        yield
        return
    await rig.start()
    try:
        yield
    finally:
        await rig.close()


async def _run_with_retries(
    job: Job,
    target: Target,
    *,
    http: httpx.AsyncClient,
    index: int,
    judge: Judge | None,
    retries: int,
) -> RunResult:
    notes: list[str] = []
    for attempt in range(retries + 1):
        result = await run_scenario(job, target, http=http, repeat_index=index, judge=judge)
        if not result.busy or attempt == retries:
            break
        notes.append(f"attempt {attempt + 1} ended busy ({result.error}); placed again")
        await asyncio.sleep(BUSY_PAUSE_S)  # let the server finish what it was chewing on
    result.notes = notes + result.notes
    return result


async def warm_voices(jobs: list[Job]) -> None:
    """Synthesize every line of the batch before the first call: a caller must send its
    audio on the wall clock, and a TTS model loading or speaking mid-call would stall it
    (the server cuts a caller that then bursts to catch up)."""
    for job in jobs:
        try:
            await _speak_all(job, _voice(job))
        except (EngineError, OSError, RuntimeError) as exc:
            # The job's own run reports it (its voice fails again, before dialling).
            logger.warning("caller voice of %s: %s", job.label, exc)


async def _speak_all(job: Job, voice: CallerVoice) -> None:
    for step in job.spec.script:
        texts = [p for p in step.parts if isinstance(p, str)] if isinstance(step, Say) else []
        texts += [step.text] if isinstance(step, OverAgent) else []
        for text in texts:
            await voice.speech(text)  # cached: the call itself only reads the cache


def _voice(job: Job) -> CallerVoice:
    spec = job.spec
    return CallerVoice(
        language=job.language,
        voice=spec.voice,
        noise_dbfs=spec.line_noise_dbfs,
        line=LINE_FORMATS[spec.channel],
    )


async def run_scenario(
    job: Job,
    target: Target,
    *,
    http: httpx.AsyncClient,
    repeat_index: int = 0,
    judge: Judge | None = None,
) -> RunResult:
    spec = job.spec
    started, clock = datetime.now(UTC), time.monotonic()
    ref = new_ref(spec.channel)
    result = RunResult(
        label=job.label,
        scenario_id=job.scenario_id,
        repeat_index=repeat_index,
        status=ERROR,
        started_at=started,
        call_sid=ref.external_id,
    )
    outcome: ScriptOutcome | None = None
    try:
        async with asyncio.timeout(spec.timeout_s):
            outcome = await _place_call(job, target, http, ref)
    except NotPlaceable as exc:
        result.status, result.error = SKIPPED, str(exc)
        return result
    except TimeoutError:
        result.error = f"the scenario did not finish within timeout_s={spec.timeout_s:g} s"
    except (
        httpx.HTTPError,
        OSError,
        RuntimeError,
        ValueError,
        EngineError,
        WebSocketException,
    ) as exc:
        # The call could not be placed, its socket failed or the caller's voice failed.
        result.error = f"{type(exc).__name__}: {exc}"
    if outcome is not None:
        result.notes = outcome.notes
    if outcome is None and await database_sync_to_async(load, thread_sensitive=False)(ref) is None:
        result.duration_s = time.monotonic() - clock  # never placed: nothing stored to wait for
        return result
    need_extraction = any(c.kind == "extraction" for c in spec.checks)
    stored = await wait_until_finished(
        ref,
        extraction=need_extraction,
        timeout_s=EXTRACTION_WAIT_S if need_extraction else STORED_WAIT_S,
    )
    result.error = result.error or _call_error(outcome, stored)
    result.busy = stored is not None and stored.end_reason == EndReason.BUSY
    if stored is not None:
        result.call_id = stored.id
        result.call_sid = stored.external_id
        result.call_duration_s = stored.duration_s
        if not result.error:
            result.checks = await evaluate(spec.checks, stored, judge=judge)
    if not result.error:
        result.status = FAILED if result.failed_checks else PASSED
    result.duration_s = time.monotonic() - clock
    return result


async def _place_call(
    job: Job, target: Target, http: httpx.AsyncClient, ref: CallRef
) -> ScriptOutcome:
    spec = job.spec
    # The voice first: a missing TTS fails here, before a call is placed for nothing.
    voice = _voice(job)
    await _speak_all(job, voice)
    async with dial(spec, target, http, ref) as caller:
        player = ScriptedCaller(caller, voice, spec.script)
        if spec.persona is not None:
            return await PersonaCaller(player, spec.persona, language=job.language).run()
        return await player.run()


def _call_error(outcome: ScriptOutcome | None, stored: StoredCall | None) -> str:
    """Why this run cannot be judged ("" when it can)."""
    if stored is None:
        return "the server stored no call for this call id"
    if not stored.finished:
        return f"the stored call did not end (status {stored.status})"
    if stored.end_reason == EndReason.BUSY:
        return (
            f"the server refused or dropped the call as busy ({stored.error_detail[:200]}): "
            "run fewer scenarios in parallel, or give the server more room"
        )
    if stored.end_reason == EndReason.ERROR:
        unanswered = [t.unanswered_reason for t in stored.turns if t.unanswered_reason]
        detail = stored.error_detail or "; ".join(unanswered) or "no detail stored"
        closed = (
            f", the server closed the stream ({outcome.server_closed})"
            if outcome and outcome.server_closed
            else ""
        )
        return f"the call ended in error: {detail[:300]}{closed}"
    if outcome is not None and outcome.server_closed and not outcome.expected_end:
        if stored.end_reason in SERVER_ENDINGS:
            step = (outcome.closed_at_step or 0) + 1
            outcome.notes.append(
                f"the server ended the call ({stored.end_reason}) during step {step}; "
                "the rest of the script was not played"
            )
            return ""
        return (
            f"the server closed the stream ({outcome.server_closed}) during step "
            f"{(outcome.closed_at_step or 0) + 1}, end reason {stored.end_reason or 'none'}"
        )
    return ""


def summarize(results: list[RunResult]) -> dict[str, int]:
    counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts


def as_row(result: RunResult) -> dict[str, Any]:
    checks = [c for c in result.checks if c.status != "skipped"]
    return {
        "scenario": result.label + (f" #{result.repeat_index + 1}" if result.repeat_index else ""),
        "status": result.status,
        "checks": f"{sum(c.status == 'passed' for c in checks)}/{len(checks)}",
        "seconds": f"{result.duration_s:.1f}",
        "call": result.call_id or "-",
    }
