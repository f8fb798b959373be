"""One engine step of a reply (an STT result, the next LLM delta, the next TTS chunk),
bounded by a backstop sized to the role's whole fallback chain.

Engines own the timeout of their own requests, so a hanging primary fails by itself and
its fallback gets the turn; the backstop only catches what no engine's timeout did. A
step that fails, by the backstop or by the engine, raises :class:`EngineFailed`, which
says whether a local model's slowness (our CPU) or a vendor is to blame.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from orchestrator.config import CallConfig
from orchestrator.contracts import TurnMetrics
from orchestrator.engines import EngineError, Engines

T = TypeVar("T")


class EngineFailed(Exception):
    """An engine step failed (its own error, or the backstop timeout)."""

    def __init__(self, role: str, message: str, *, vendor: str, overloaded: bool) -> None:
        super().__init__(message)
        self.role = role
        self.vendor = vendor
        self.overloaded = overloaded  # our own overload (local model queue), not a vendor


class EngineSteps:
    BACKSTOP_GRACE_S = 1.0  # above a whole chain of engine timeouts

    def __init__(self, config: CallConfig, engines: Engines) -> None:
        self._config = config
        self._engines = engines

    def budget_s(self, role: str) -> float:
        """Backstop for one engine step: every engine of the role's chain may use its own
        timeout before the step is given up."""
        engine = getattr(self._engines, role)
        tries = len(getattr(engine, "engines", ())) or 1
        return self._config.engine_timeout_s * tries + self.BACKSTOP_GRACE_S

    def runs_locally(self, role: str) -> bool:
        """A local model serves ``role``: its timeouts mean our CPU is saturated."""
        return bool(getattr(getattr(self._engines, role), "runs_locally", False))

    async def run(self, role: str, awaitable: Awaitable[T]) -> T:
        budget = self.budget_s(role)
        try:
            async with asyncio.timeout(budget):
                return await awaitable
        except TimeoutError as exc:
            raise EngineFailed(
                role,
                f"{role} timed out after {budget:g}s",
                vendor=engine_name(getattr(self._engines, role)),
                overloaded=self.runs_locally(role),
            ) from exc
        except EngineError as exc:
            raise EngineFailed(
                role, f"{role}: {exc}", vendor=exc.vendor, overloaded=exc.overloaded
            ) from exc


def engine_name(engine: object) -> str:
    return str(getattr(engine, "name", "") or type(engine).__name__)


def note_engine(metrics: TurnMetrics, role: str, engine: object) -> None:
    """Record which engine served ``role`` and any fallback switch a chain made for it."""
    metrics.engines[role] = engine_name(engine)
    metrics.fallbacks.extend(
        f"{role}: {switch}" for switch in getattr(engine, "last_fallbacks", ())
    )


async def aclose_stream(stream: object) -> None:
    """Close an engine's async generator so its HTTP stream is released at once."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
