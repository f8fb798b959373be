"""Development mode's stand-in for a Celery worker: eager tasks run in a few background threads.

Without a broker (no ``REDIS_URL``) Celery runs a task eagerly, in the thread that enqueues
it. Post-call extraction is enqueued when a call ends, from the thread that does every
call's database work under daphne, so an extraction LLM that hangs would stall every other
call, and a non-daemon thread stuck in it would keep the process alive after SIGTERM.
:func:`enqueue` sends such a task to one of ``INLINE_TASK_WORKERS`` daemon threads instead:
the caller returns at once, the task bounds itself (``EXTRACTION_TIMEOUT_SECONDS``), and the
process exits without waiting for it (an extraction cut short by an exit stays ``pending``;
the admin's "re-run extraction" action runs it again). With a broker, it is ``task.delay``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from celery import Task, current_app
from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

# Beyond this many waiting tasks the process is not keeping up: drop (logged) rather than grow.
MAX_QUEUED = 1000


def enqueue(task: Task, *args: Any) -> None:
    """``task.delay(*args)``, but never on the caller's thread when Celery runs eagerly."""
    if not task.app.conf.task_always_eager:
        task.delay(*args)
        return
    _pool().submit(f"{task.name}{args}", lambda: task.delay(*args))


def enqueue_by_name(name: str, *args: Any) -> None:
    """:func:`enqueue` the task registered as ``name``: a service can queue a task whose
    module imports the service (``calls/tasks.py`` is imported by ``CallsConfig.ready``)."""
    enqueue(current_app.tasks[name], *args)


def wait_idle(timeout_s: float) -> bool:
    """Wait until every queued task has run (tests, tools); False if some still run."""
    return _pool().wait_idle(timeout_s)


class InlinePool:
    def __init__(self, *, workers: int) -> None:
        self._jobs: queue.Queue[tuple[str, Callable[[], object]]] = queue.Queue(MAX_QUEUED)
        self._workers = max(1, workers)
        self._started = False
        self._unfinished = 0
        self._idle = threading.Condition()

    def submit(self, name: str, job: Callable[[], object]) -> bool:
        with self._idle:
            if not self._started:
                for index in range(self._workers):
                    threading.Thread(
                        target=self._work, name=f"inline-task-{index}", daemon=True
                    ).start()
                self._started = True
            try:
                self._jobs.put_nowait((name, job))
            except queue.Full:
                logger.error("inline task %s dropped: %d tasks already wait", name, MAX_QUEUED)
                return False
            self._unfinished += 1
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout=timeout_s)

    def _work(self) -> None:
        while True:
            name, job = self._jobs.get()
            try:
                job()
            except Exception:  # a task's own failure; the thread goes on with the next one
                logger.exception("inline task %s failed", name)
            finally:
                # This thread's database connections end with the task: an idle pool holds
                # none open (PostgreSQL could not drop a test database otherwise).
                connections.close_all()
                with self._idle:
                    self._unfinished -= 1
                    self._idle.notify_all()


_lock = threading.Lock()
_shared: InlinePool | None = None


def _pool() -> InlinePool:
    global _shared
    with _lock:
        if _shared is None:
            _shared = InlinePool(workers=settings.INLINE_TASK_WORKERS)
        return _shared
