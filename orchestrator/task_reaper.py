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


async def cancel_all(*tasks: asyncio.Task[Any] | None) -> None:
    live = [t for t in tasks if t is not None and not t.done()]
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live)
