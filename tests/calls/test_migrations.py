"""Data steps of migrations, run against the real database."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("calls", "0002_turn_unanswered_busy")]
AFTER = [("calls", "0003_profile_turn_taking")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_profiles_on_the_old_barge_in_default_move_to_the_new_one():
    try:
        apps = migrate(BEFORE)
        AgentProfile = apps.get_model("calls", "AgentProfile")
        AgentProfile.objects.create(name="Old default", slug="old", barge_in_min_ms=250)
        AgentProfile.objects.create(name="Tuned", slug="tuned", barge_in_min_ms=400)

        apps = migrate(AFTER)
        AgentProfile = apps.get_model("calls", "AgentProfile")
        minimums = dict(AgentProfile.objects.values_list("slug", "barge_in_min_ms"))
        assert minimums == {"old": 900, "tuned": 400}
        old = AgentProfile.objects.get(slug="old")
        assert (old.turn_detection, old.vad_stop_ms, old.noise_suppression) == ("smart", 250, True)
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
