"""How a call ends: the first end request wins (:class:`CallEnd`), and how a failed or
stuck utterance ends it: which reason, what the caller hears, and whether it counts as a
provider failure (the global stop). Pure decisions, logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from orchestrator.config import CallConfig
from orchestrator.contracts import CriticalCallError, EndReason
from orchestrator.engine_steps import EngineFailed
from orchestrator.playout import TransportFailed

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


@dataclass(slots=True)
class CallEnd:
    """How this call ends, decided once: the first request wins; later ones (a hang-up
    after an error, a shutdown after a transfer) are ignored, except that a transfer the
    carrier carried out is how the call ended whatever was asked meanwhile."""

    call_id: str
    reason: EndReason | None = None
    say: str | None = None  # spoken before the close (None: just close)
    error: str = ""
    critical: CriticalCallError | None = None  # an engine failure: raised by run()
    tts_failed: bool = False  # nothing more can be spoken
    transferred_to: str = ""

    def request(self, reason: EndReason, *, say: str | None = None, error: str = "") -> bool:
        """True when this request decides the ending (the session then wakes up)."""
        if self.reason is not None:
            return False
        self.reason, self.say, self.error = reason, say or None, error
        logger.info("call %s: ending (%s) %s", self.call_id, reason, error,
                    extra={"call_id": self.call_id})  # fmt: skip
        return True

    def apply(self, ending: Ending) -> bool:
        """A failed or stuck utterance's ending (``ending_for_error`` / ``_stall``)."""
        self.tts_failed = self.tts_failed or ending.tts_failed
        decided = self.request(ending.reason, say=ending.say, error=ending.error)
        if decided and ending.failed_role:
            self.critical = CriticalCallError(
                ending.error, self.call_id, role=ending.failed_role, vendor=ending.vendor
            )
        return decided

    def transferred(self, destination: str) -> bool:
        """The carrier took the call: that is how it ended, and nothing more is said."""
        self.transferred_to = destination
        if self.reason not in (None, EndReason.TRANSFERRED):
            logger.info("call %s: transferred; %s asked meanwhile does not apply",
                        self.call_id, self.reason, extra={"call_id": self.call_id})  # fmt: skip
            self.reason, self.say, self.error = EndReason.TRANSFERRED, None, ""
            return False
        return self.request(EndReason.TRANSFERRED)


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
