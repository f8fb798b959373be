"""Stopping an utterance's task without letting it hold the call.

A task stuck in something that ignores cancellation (a native call that cannot be
interrupted) is given ``wait_s``, then abandoned: kept referenced here and given one last
bounded wait when the call shuts down.
"""

from __future__ import annotations

import asyncio
from typing import Any


class TaskReaper:
    def __init__(self) -> None:
        self._abandoned: set[asyncio.Task[Any]] = set()

    async def stop(self, task: asyncio.Task[Any], *, wait_s: float) -> bool:
        """Cancel ``task`` if needed and wait for it; False if it was abandoned."""
        if not task.done():
            task.cancel()
        done, _ = await asyncio.wait([task], timeout=wait_s)
        if not done:
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
        return bool(done)

    async def drain(self, *, wait_s: float) -> None:
        if self._abandoned:
            await asyncio.wait(list(self._abandoned), timeout=wait_s)


class DroppedTasks:
    """Tasks whose result is no longer wanted (the caller went on, a newer one replaced
    them): cancelled at once, kept referenced until they finish, awaited by ``close``."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def drop(self, task: asyncio.Task[Any] | None) -> None:
        if task is not None and not task.done():
            task.cancel()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks, self._tasks = list(self._tasks), set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def cancel_all(*tasks: asyncio.Task[Any] | None) -> None:
    live = [t for t in tasks if t is not None and not t.done()]
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live)
