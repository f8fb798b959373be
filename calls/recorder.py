"""The Django side of the orchestrator's ``CallRecorder``: every report becomes a DB write."""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async

from calls import metrics as prom
from calls import selectors, services
from orchestrator.config import CallConfig
from orchestrator.session import EndReason, TurnRecord

logger = logging.getLogger(__name__)


class DjangoCallRecorder:
    def __init__(self, *, call_id: str, channel: str) -> None:
        self.call_id = call_id
        self.channel = channel
        self.ended_reason: str | None = None

    async def call_started(self, config: CallConfig) -> None:
        await database_sync_to_async(services.call_activate)(
            call_id=self.call_id, config_snapshot=selectors.config_snapshot(config)
        )

    async def turn_recorded(self, turn: TurnRecord) -> None:
        turn_metrics: dict[str, Any] = turn.metrics.as_dict() if turn.metrics else {}
        await database_sync_to_async(services.turn_record)(
            call_id=self.call_id,
            role=turn.role,
            text=turn.text,
            started_at=turn.started_at,
            ended_at=turn.ended_at,
            interrupted=turn.interrupted,
            metrics=turn_metrics,
        )
        if turn_metrics:
            prom.observe_turn(turn_metrics)
        if turn.interrupted:
            prom.INTERRUPTIONS.labels(channel=self.channel).inc()

    async def heartbeat(self) -> None:
        await database_sync_to_async(services.call_heartbeat)(call_id=self.call_id)

    async def call_ended(self, *, reason: EndReason, error: str, metrics: dict[str, Any]) -> None:
        self.ended_reason = str(reason)
        await database_sync_to_async(services.call_end)(
            call_id=self.call_id, reason=str(reason), error=error, metrics=metrics
        )
        prom.CALLS_ENDED.labels(channel=self.channel, reason=str(reason)).inc()
