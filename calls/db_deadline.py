"""Database work with a deadline, for requests that must answer while the database is away.

Twilio gives a voice webhook about 15 s and a load balancer gives readiness a few; a hung
PostgreSQL (a stopped server still ACKs TCP, so neither keepalives nor ``tcp_user_timeout``
notice it) would hold them forever. psycopg has no client-side query timeout, so the
deadline is ours: the work runs in a short-lived daemon thread with its own connection,
the caller waits at most ``DB_REQUEST_TIMEOUT_SECONDS`` and then cuts that connection's socket,
which ends the blocked query (the server rolls back whatever it had begun). A connection
attempt cannot be cut that way; ``DB_CONNECT_TIMEOUT_SECONDS`` ends it soon after.

Each call pays one fresh connection (a few ms on a LAN): it is used by low-rate requests
(a webhook per call event, a readiness probe), never per audio frame or per turn.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, connections

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database did not answer within the deadline, or refused or dropped the connection."""


def run_with_deadline(work: Callable[[], T], *, what: str, timeout_s: float | None = None) -> T:
    """``work()`` on its own connection, or :class:`DatabaseUnavailable` after the deadline.

    Other exceptions of ``work`` (a missing row, an integrity error) are raised as they are.
    """
    timeout = settings.DB_REQUEST_TIMEOUT_SECONDS if timeout_s is None else timeout_s
    if connection.in_atomic_block:
        # Inside the caller's transaction (an atomic block, a test case) the work must see
        # and join that transaction, which only the caller's own connection can do.
        return _unavailable_on_connection_errors(work, what=what)
    job = _Job(work)
    threading.Thread(target=job.run, name=f"db-deadline {what}", daemon=True).start()
    if not job.done.wait(timeout):
        job.abort()
        raise DatabaseUnavailable(f"{what}: no answer from the database within {timeout:g}s")
    return _unavailable_on_connection_errors(job.result, what=what)


def _unavailable_on_connection_errors(work: Callable[[], T], *, what: str) -> T:
    try:
        return work()
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnavailable(f"{what}: {type(exc).__name__}: {exc}"[:300]) from exc


class _Job:
    """One piece of work in its own thread, whose connection the waiter can cut."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._work = work
        self._value: object = None
        self._error: BaseException | None = None
        self._finished = False
        self._lock = threading.Lock()  # abort() never cuts a socket the thread has closed
        self._wrapper = None
        self.done = threading.Event()

    def run(self) -> None:
        # A new thread gets its own connection wrapper (Django's are per thread).
        self._wrapper = connections["default"]
        try:
            self._value = self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._error = exc
        finally:
            with self._lock:
                self._finished = True
            connections.close_all()  # this thread's connections only; it ends here
            self.done.set()

    def result(self):  # type: ignore[no-untyped-def]
        if self._error is not None:
            raise self._error
        return self._value

    def abort(self) -> None:
        """Shut the socket of the thread's connection down, so a hung query returns."""
        with self._lock:
            if self._finished or self._wrapper is None:
                return
            raw = self._wrapper.connection  # None while psycopg is still connecting
            fileno = getattr(raw, "fileno", None)  # psycopg has one, sqlite3 has none
            if fileno is None:
                return
            try:
                # A duplicate of the descriptor: shutdown acts on the socket itself, and
                # closing the duplicate leaves psycopg's descriptor to psycopg.
                with socket.socket(fileno=os.dup(fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
            except (OSError, psycopg.Error) as exc:
                logger.debug("could not cut a timed-out database connection: %s", exc)
                return
        logger.warning("cut a database connection that did not answer in time")
