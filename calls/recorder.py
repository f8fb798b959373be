"""The Django side of the orchestrator's ``CallRecorder``: every report becomes a DB write.

Database connection failures are raised as ``RecorderUnavailable`` so the session's
recorder queue retries them in order (orchestrator/recorder_queue.py); anything else is
a bug or a constraint error, logged there and not retried.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError, connection

from calls import metrics as prom
from calls import selectors, services
from orchestrator.config import CallConfig
from orchestrator.recorder_queue import RecorderUnavailable
from orchestrator.session import EndReason, TurnRecord

logger = logging.getLogger(__name__)

SERVED_BY = f"{socket.gethostname()}:{os.getpid()}"

T = TypeVar("T")


class DjangoCallRecorder:
    def __init__(self, *, call_id: str, channel: str) -> None:
        self.call_id = call_id
        self.channel = channel
        self.ended_reason: str | None = None

    async def _write(self, service: Callable[..., T], **kwargs: Any) -> T:
        try:
            return await database_sync_to_async(_call_with_fresh_connection)(service, kwargs)
        except (OperationalError, InterfaceError) as exc:  # connection trouble: retry
            prom.RECORDER_RETRIES.labels(channel=self.channel).inc()
            raise RecorderUnavailable(f"{type(exc).__name__}: {exc}".strip()) from exc

    async def call_started(self, config: CallConfig) -> None:
        await self._write(
            services.call_activate,
            call_id=self.call_id,
            config_snapshot=selectors.config_snapshot(config),
        )

    async def turn_recorded(self, turn: TurnRecord) -> None:
        turn_metrics: dict[str, Any] = turn.metrics.as_dict() if turn.metrics else {}
        await self._write(
            services.turn_record,
            call_id=self.call_id,
            role=turn.role,
            text=turn.text,
            started_at=turn.started_at,
            ended_at=turn.ended_at,
            sequence=turn.sequence or None,
            interrupted=turn.interrupted,
            metrics=turn_metrics,
            tool=turn.tool.as_dict() if turn.tool is not None else None,
        )
        if turn_metrics:
            prom.observe_turn(turn_metrics)
        if turn.interrupted:
            prom.INTERRUPTIONS.labels(channel=self.channel).inc()

    async def turn_unanswered(self, *, sequence: int, reason: str) -> None:
        await self._write(
            services.turn_mark_unanswered, call_id=self.call_id, sequence=sequence, reason=reason
        )
        prom.UNANSWERED_TURNS.labels(channel=self.channel).inc()

    async def heartbeat(self) -> None:
        await self._write(services.call_heartbeat, call_id=self.call_id)

    async def call_ended(
        self, *, reason: EndReason, error: str, metrics: dict[str, Any], transferred_to: str = ""
    ) -> None:
        self.ended_reason = str(reason)
        # Which process held the call (several workers serve one port: voiceapp/serve.py).
        metrics = {**metrics, "served_by": SERVED_BY}
        await self._write(
            services.call_end,
            call_id=self.call_id,
            reason=str(reason),
            error=error,
            metrics=metrics,
            transferred_to=transferred_to,
        )
        prom.CALLS_ENDED.labels(channel=self.channel, reason=str(reason)).inc()
        if isinstance(health := metrics.get("audio_health"), dict):
            prom.observe_audio_health(health)


def _call_with_fresh_connection(service: Callable[..., T], kwargs: dict[str, Any]) -> T:
    try:
        return service(**kwargs)
    except (OperationalError, InterfaceError):
        # A broken connection stays broken for this thread until it is replaced: drop it
        # so the retry opens a new one (Django only does this between requests).
        with contextlib.suppress(Exception):
            connection.close()
        raise
