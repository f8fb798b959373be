"""One batch, from start to stored results: the server (given, or started here), the
calls, and a ScenarioResult row per run. The management command and the Celery task both
run batches through :func:`run_and_store`."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from scenarios import services
from scenarios.judge import cloud_judge
from scenarios.local_server import LocalServer
from scenarios.models import Scenario
from scenarios.runner import RunResult, Target, run_batch
from scenarios.telnyx_api import TelnyxRig


@dataclass(slots=True, kw_only=True)
class Batch:
    id: uuid.UUID
    results: list[RunResult]


def target_for(base_url: str) -> Target:
    """A running server: signed with this process's Twilio token, over its public URL; its
    Telnyx calls go through the rig it was configured for (docs/scenarios.md), if any."""
    return Target(
        base_url=base_url,
        auth_token=settings.TWILIO_AUTH_TOKEN,
        public_base_url=settings.PUBLIC_BASE_URL or base_url,
        # Read here, not in settings.py: the runner's own Telnyx is a test rig of this
        # command, never configuration of the server.
        telnyx=TelnyxRig.from_env(os.environ),
    )


def run_and_store(
    *,
    scenarios: list[Scenario],
    base_url: str = "",
    repeat: int = 1,
    parallel: int = 1,
    busy_retries: int = 0,
    on_result: Callable[[RunResult], None] | None = None,
    on_server: Callable[[str], None] | None = None,
) -> Batch:
    """Run ``scenarios`` (``repeat`` times each), store and return the results. Without
    ``base_url`` a server is started for the batch and stopped after it."""
    batch = uuid.uuid4()
    jobs = [services.scenario_job(scenario=s) for s in scenarios]
    server = None
    if base_url:
        target = target_for(base_url)
    else:
        server = LocalServer().start()
        target = server.target
        if on_server is not None:
            on_server(server.base_url)
    try:
        results = asyncio.run(
            run_batch(
                jobs,
                target,
                repeat=repeat,
                parallel=parallel,
                judge=cloud_judge(),
                on_result=on_result,
                busy_retries=busy_retries,
            )
        )
    finally:
        if server is not None:
            server.stop()
    for result in results:
        services.result_record(result=result, batch=batch)
    return Batch(id=batch, results=results)
