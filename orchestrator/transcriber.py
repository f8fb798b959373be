"""Transcribing the caller while they speak, so that little is left at the end of turn.

- **At each pause** the turn so far is transcribed at once, before the end of turn is
  even decided: if the caller is done, the reply's STT step is already under way
  (``UserTurn.transcript``); if they go on, the work is dropped.
- **While they speak**, every ``stt_partial_interval_ms`` of speech the growing utterance
  is transcribed again and shown as a partial transcript (simulator page), only on a
  local STT engine (re-sending audio to a paying API every second would multiply its
  cost) and only when no other transcription of this call is running, so partials never
  queue in front of the one the reply waits for.

Every task is kept here and cancelled on ``drop``/``close``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from orchestrator.contracts import INPUT_SAMPLE_RATE
from orchestrator.task_reaper import DroppedTasks

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], Awaitable[None]]


class Transcriber:
    def __init__(self, stt: Any, *, language: str, partials: bool, emit: Emit, call_id: str) -> None:
        self._stt = stt
        self._language = language
        self.partials = partials
        self._emit = emit
        self._log_extra = {"call_id": call_id}
        self._early: asyncio.Task[str] | None = None  # of the turn so far, from the pause
        self._early_audio = b""
        self._partial: asyncio.Task[None] | None = None
        self._last_partial = ""
        self._dropped = DroppedTasks()

    def transcribe(self, audio: bytes, *, prompt: str = "") -> asyncio.Task[str]:
        """One transcription task (the caller awaits or cancels it)."""
        work = self._stt.transcribe(
            audio, sample_rate=INPUT_SAMPLE_RATE, language=self._language, prompt=prompt
        )
        task = asyncio.create_task(work, name="stt")
        # Early work may be dropped unseen: its failure is not an error of the call.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    def early(self, audio: bytes, *, heard: Callable[[str], None] | None = None) -> None:
        """The caller paused: start transcribing the turn so far; ``heard`` gets the text
        (if it comes before the turn is taken)."""
        self.drop()
        self._drop_partial()  # the reply will wait on this one: nothing queued before it
        task = self.transcribe(audio)
        self._early, self._early_audio = task, audio
        if heard is not None:

            def done(t: asyncio.Task[str]) -> None:
                # Only while it is still the pause's transcript (not taken, not dropped).
                if t is self._early and not t.cancelled() and t.exception() is None:
                    heard(t.result() or "")

            task.add_done_callback(done)

    def take(self, audio: bytes) -> asyncio.Task[str] | None:
        """The early transcription of exactly ``audio``, now owned by the reply. A partial
        still running is dropped: it would show words after the final transcript."""
        self._drop_partial()
        self._last_partial = ""
        task, self._early = self._early, None
        if task is not None and self._early_audio == audio:
            return task
        self._dropped.drop(task)
        return None

    def partial(self, audio: bytes) -> None:
        """More speech: show what we have heard so far, if nothing else is running."""
        if not self.partials or self._partial is not None or self._early is not None:
            return
        self._partial = asyncio.create_task(self._run_partial(audio), name="stt-partial")

    def drop(self) -> None:
        """The caller went on, or the turn was answered: early work is stale."""
        task, self._early = self._early, None
        self._dropped.drop(task)

    def _drop_partial(self) -> None:
        task, self._partial = self._partial, None
        self._dropped.drop(task)

    async def _run_partial(self, audio: bytes) -> None:
        try:
            text = (await self.transcribe(audio)).strip()
            if text and text != self._last_partial:
                self._last_partial = text
                await self._emit(
                    {"type": "transcript", "role": "user", "text": text, "final": False}
                )
        except Exception as exc:  # noqa: BLE001 - a partial is a display nicety
            logger.info("partial transcript failed: %r", exc, extra=self._log_extra)
        finally:
            # (A cancelled partial may finish after a newer one started: keep that one.)
            if self._partial is asyncio.current_task():
                self._partial = None

    async def close(self) -> None:
        self.drop()
        self._drop_partial()
        await self._dropped.close()
