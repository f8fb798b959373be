"""The session's reports to its ``CallRecorder``, written in order, off the audio path.

A database blip must not lose what was said: a write that fails with
:class:`RecorderUnavailable` (or times out) is retried, in order, with backoff, for as
long as the call runs and for ``retry_for_s`` after it ended. If the database is still
away when the session ends, the queue keeps flushing in the background (tracked in
``PENDING``, awaited by :func:`flush_pending` at process shutdown) instead of holding the
caller's socket open. Only the process dying loses queued turns; what is given up is
logged with its content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# Queues still flushing after their session ended; kept referenced until done.
PENDING: set[asyncio.Task[None]] = set()


class RecorderUnavailable(Exception):
    """The recorder's store cannot be reached right now (the write may be retried)."""


@dataclass(slots=True, frozen=True)
class _Write:
    what: str  # recorder method, for logs
    call: Callable[[], Awaitable[None]]
    retry: bool  # heartbeats are not worth retrying: the next one replaces them
    describe: str = ""  # logged if the write is given up (e.g. the turn's text)


class RecorderQueue:
    TIMEOUT_S = 10.0  # per attempt: a hung database call counts as unavailable
    BACKOFF_S = (0.2, 0.5, 1.0, 2.0)

    def __init__(
        self,
        call_id: str,
        *,
        retry_for_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._call_id = call_id
        self._retry_for_s = retry_for_s
        self._clock = clock
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._give_up_at: float | None = None  # set when the session ends
        self._task: asyncio.Task[None] | None = None
        self.failed_writes = 0  # given up (logged with their content)
        self.retried_writes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"recorder-{self._call_id}")

    def put(
        self,
        what: str,
        call: Callable[[], Awaitable[None]],
        *,
        retry: bool = True,
        describe: str = "",
    ) -> None:
        self._queue.put_nowait(_Write(what, call, retry, describe))

    async def close(self, *, wait_s: float) -> bool:
        """No more writes. Wait up to ``wait_s`` for the queue to drain; if it has not,
        leave it flushing in the background (see ``PENDING``). True when drained."""
        self._give_up_at = self._clock() + self._retry_for_s
        self._queue.put_nowait(None)
        task = self._task
        if task is None:
            return True
        done, _ = await asyncio.wait([task], timeout=wait_s)
        if done:
            return True
        logger.warning(
            "call %s: %d recorder write(s) still pending; retrying in the background for up "
            "to %.0f s",
            self._call_id,
            self._queue.qsize(),
            self._retry_for_s,
            extra={"call_id": self._call_id},
        )
        PENDING.add(task)
        task.add_done_callback(PENDING.discard)
        return False

    async def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _loop(self) -> None:
        while (write := await self._queue.get()) is not None:
            await self._write(write)

    async def _write(self, write: _Write) -> None:
        attempt = 0
        while True:
            try:
                async with asyncio.timeout(self.TIMEOUT_S):
                    await write.call()
                if attempt:
                    logger.info(
                        "call %s: recorder.%s succeeded after %d retries",
                        self._call_id,
                        write.what,
                        attempt,
                        extra={"call_id": self._call_id},
                    )
                return
            except (RecorderUnavailable, TimeoutError) as exc:
                if not write.retry or self._gave_up():
                    self._give_up(write, exc)
                    return
                if attempt == 0:
                    logger.warning(
                        "call %s: recorder.%s failed (%s); retrying",
                        self._call_id,
                        write.what,
                        exc or type(exc).__name__,
                        extra={"call_id": self._call_id},
                    )
                self.retried_writes += 1
                await asyncio.sleep(self.BACKOFF_S[min(attempt, len(self.BACKOFF_S) - 1)])
                attempt += 1
            except Exception:
                # A bug or a constraint error: retrying cannot help; never end the call.
                logger.exception(
                    "call %s: recorder.%s failed", self._call_id, write.what,
                    extra={"call_id": self._call_id},
                )  # fmt: skip
                self.failed_writes += 1
                return

    def _gave_up(self) -> bool:
        return self._give_up_at is not None and self._clock() >= self._give_up_at

    def _give_up(self, write: _Write, exc: BaseException) -> None:
        if not write.retry:
            logger.warning(
                "call %s: recorder.%s skipped: %s", self._call_id, write.what, exc,
                extra={"call_id": self._call_id},
            )  # fmt: skip
            return
        self.failed_writes += 1
        logger.error(
            "call %s: recorder.%s given up after %.0f s (%s); lost: %s",
            self._call_id,
            write.what,
            self._retry_for_s,
            exc,
            write.describe or "-",
            extra={"call_id": self._call_id},
        )


async def flush_pending(timeout: float) -> int:
    """Process shutdown: give background flushes up to ``timeout`` s; returns how many
    were still pending (and are cancelled)."""
    tasks = list(PENDING)
    if not tasks:
        return 0
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        logger.error("%d call(s) had recorder writes lost at shutdown", len(pending))
    return len(pending)
