"""Database work with a deadline (calls/db_deadline.py). The outage end-to-end tests, through a
proxy in front of PostgreSQL, are in tests/lifecycle/test_db_outage.py."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections, transaction

from calls.db_deadline import DatabaseUnavailable, run_with_deadline
from calls.models import AgentProfile
from calls.services import profile_ensure_demo


def test_work_past_the_deadline_is_given_up_as_database_unavailable():
    release = threading.Event()
    started = time.monotonic()

    with pytest.raises(DatabaseUnavailable, match="within 0.3s"):
        run_with_deadline(lambda: release.wait(10), what="slow work", timeout_s=0.3)

    assert time.monotonic() - started < 2
    release.set()


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_work_uses_its_own_connection_and_closes_it():
    seen: list[object] = []

    def work() -> int:
        seen.append(connections["default"])
        return AgentProfile.objects.count()

    assert run_with_deadline(work, what="count") == 0
    assert seen[0] is not connections["default"]  # another thread's connection ...
    assert seen[0].connection is None  # ... closed when its work ended


@pytest.mark.django_db
def test_inside_a_transaction_the_work_sees_it_on_the_callers_connection():
    with transaction.atomic():
        profile_ensure_demo()
        assert run_with_deadline(lambda: AgentProfile.objects.count(), what="count") == 1


def test_errors_of_the_work_itself_reach_the_caller_unchanged():
    def work() -> None:
        raise KeyError("no such thing")

    with pytest.raises(KeyError):
        run_with_deadline(work, what="failing work", timeout_s=5)
