"""How fast a caller may send audio: a token bucket counted in seconds of audio.

A phone or browser sends audio in real time. Networks bunch it up now and then (a
carrier flushes a few seconds after a stall), so a burst is allowed; a caller that keeps
sending faster than ``max_speed`` times real time is abusing the line: its audio would
pile up in the session faster than it can be processed.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class AudioBudget:
    """``take(seconds)`` is False once the stream has run ahead of its allowance."""

    def __init__(
        self,
        *,
        burst_s: float,
        max_speed: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst_s = burst_s
        self.max_speed = max_speed
        self._clock = clock
        self._tokens = burst_s  # a full bucket: the first burst is allowed at once
        self._at = clock()
        self.received_s = 0.0  # audio seen in all, for the log line of a refusal
        self.started_at = self._at

    def take(self, seconds: float) -> bool:
        now = self._clock()
        self._tokens = min(self.burst_s, self._tokens + (now - self._at) * self.max_speed)
        self._at = now
        self.received_s += seconds
        self._tokens -= seconds
        return self._tokens >= 0.0

    def speed(self) -> float:
        """Audio received per second of wall time so far (e.g. 10.0 = ten times real time)."""
        elapsed = max(self._clock() - self.started_at, 1e-3)
        return self.received_s / elapsed
