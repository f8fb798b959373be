"""Celery task: run scenarios from the admin (thin: the batch does the work)."""

from __future__ import annotations

from celery import shared_task

from scenarios import selectors
from scenarios.batch import run_and_store


@shared_task(name="scenarios.tasks.run_scenarios")
def run_scenarios(scenario_ids: list[int], base_url: str = "") -> str:
    """Run these scenarios once and store their results; returns the batch id. Not retried:
    a batch places real calls, and a second run would be a second set of results."""
    scenarios = selectors.scenarios_matching(ids=scenario_ids)
    return str(run_and_store(scenarios=scenarios, base_url=base_url).id)
