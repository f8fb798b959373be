"""Caller audio between the socket and the VAD: a bounded backlog, fed to the turn
detector in its own task so the socket's ``receive`` never waits on the model. The
call's optional :class:`InboundCleaner` (noise suppression) runs in that task too. The
VAD model scores this call's windows together with the other calls' of the same loop turn
(``TurnDetector.feed_async``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orchestrator.audio import frame_bytes
from orchestrator.contracts import INPUT_SAMPLE_RATE
from orchestrator.noise import InboundCleaner
from orchestrator.vad import TurnDetector, TurnEvent

logger = logging.getLogger(__name__)


class CallerAudio:
    MAX_BACKLOG_BYTES = frame_bytes(INPUT_SAMPLE_RATE, 30_000)  # only if the loop stalls
    # More than this much audio still queued: the VAD scores it without waiting to batch
    # with other calls (a frame or two queued behind is the loop's usual jitter).
    BEHIND_BYTES = frame_bytes(INPUT_SAMPLE_RATE, 100)

    def __init__(self, call_id: str, *, cleaner: InboundCleaner | None = None) -> None:
        self._call_id = call_id
        self._cleaner = cleaner
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._backlog = 0  # bytes queued, not yet fed to the VAD
        self._dropped = False

    def push(self, pcm16_16k_mono: bytes) -> None:
        """Queue caller audio (16 kHz mono PCM16, any length); dropped past the bound."""
        if self._backlog + len(pcm16_16k_mono) > self.MAX_BACKLOG_BYTES:
            if not self._dropped:
                logger.warning("call %s: input backlog full, dropping audio", self._call_id,
                               extra={"call_id": self._call_id})  # fmt: skip
                self._dropped = True
            return
        self._backlog += len(pcm16_16k_mono)
        self._queue.put_nowait(pcm16_16k_mono)

    async def feed(self, detector: TurnDetector, on_event: Callable[[TurnEvent], None]) -> None:
        """Run the VAD over the audio as it comes (the session's input task)."""
        while True:
            pcm = await self._queue.get()
            self._backlog -= len(pcm)
            if self._cleaner is not None:
                pcm = self._cleaner.process(pcm)
            for event in await detector.feed_async(pcm, behind=self._backlog > self.BEHIND_BYTES):
                on_event(event)
