"""How a failed or stuck utterance ends the call: which reason, what the caller hears,
and whether it counts as a provider failure (the global stop). Pure decisions, logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestrator.config import CallConfig
from orchestrator.contracts import EndReason
from orchestrator.playout import TransportFailed
from orchestrator.reply import EngineFailed

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True, kw_only=True)
class Ending:
    reason: EndReason
    say: str | None  # what the caller hears before the close (None: just close)
    error: str
    failed_role: str = ""  # an engine role that failed for real: a provider failure
    vendor: str = ""
    tts_failed: bool = False  # nothing more can be spoken
    transport_dead: bool = False  # nothing more can be sent


def ending_for_error(exc: BaseException, config: CallConfig) -> Ending:
    extra = {"call_id": config.call_id}
    if isinstance(exc, EngineFailed) and exc.overloaded:
        # Our own overload (a local model's queue), not a provider failure: tell the
        # caller the lines are busy, never count it toward the global stop.
        logger.warning("call %s: overloaded: %s", config.call_id, exc, extra=extra)
        say = None if exc.role == "tts" else config.busy_message
        return Ending(reason=EndReason.BUSY, say=say, error=f"overloaded: {exc}")
    if isinstance(exc, EngineFailed):
        logger.error("call %s: engine failure: %s", config.call_id, exc, extra=extra)
        tts = exc.role == "tts"
        # If TTS itself failed, an apology cannot be spoken: just close.
        return Ending(reason=EndReason.ERROR, say=None if tts else config.apology_message,
                      error=str(exc), failed_role=exc.role, vendor=exc.vendor,
                      tts_failed=tts)  # fmt: skip
    if isinstance(exc, TransportFailed):
        logger.warning("call %s: %s", config.call_id, exc, extra=extra)
        return Ending(reason=EndReason.ERROR, say=None, error=f"transport: {exc}",
                      transport_dead=True)  # fmt: skip
    logger.error("call %s: reply crashed", config.call_id, exc_info=exc, extra=extra)
    return Ending(reason=EndReason.ERROR, say=config.apology_message, error=f"internal: {exc!r}")


def ending_for_stall(error: str, *, local: bool, config: CallConfig) -> Ending:
    """A reply that made no progress: a local model stuck means our CPU is saturated."""
    extra = {"call_id": config.call_id}
    if local:
        logger.warning("call %s: overloaded: %s", config.call_id, error, extra=extra)
        return Ending(reason=EndReason.BUSY, say=config.busy_message, error=f"overloaded: {error}")
    logger.error("call %s: %s", config.call_id, error, extra=extra)
    return Ending(reason=EndReason.ERROR, say=config.apology_message, error=error)
