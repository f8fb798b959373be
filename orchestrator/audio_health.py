"""Audio health of one call: did the caller hear the agent stutter, did the caller's audio
reach us steadily, was the event loop keeping up?

Counted on the audio path with a few float/integer updates per frame, nothing allocated
and nothing logged; summarised once, when the call ends (``CallSession`` stores the
summary in the call's metrics as ``audio_health``):

- ``late_frames``, ``max_agent_gap_ms``: the agent's side, kept by ``PacedPlayout``
  (playout.py), which knows each frame's slot;
- ``inbound_*``: caller frames as they arrive at our socket (:class:`InboundTiming`);
- ``loop_lag_p99_ms``: this process's event-loop lag while the call ran (loop_lag.py).

docs/operations.md says what each figure means and how to find the calls that stuttered.
"""

from __future__ import annotations

from typing import Any

from orchestrator.contracts import INPUT_SAMPLE_RATE

# Bucket upper edges (ms): 1 ms wide up to 50 ms, 5 ms up to 250 ms, 50 ms up to 2 s,
# then one overflow bucket. Percentiles are read as a bucket's upper edge (capped by the
# exact maximum): 1 ms resolution where a 20 ms cadence lives, coarser for stalls.
_EDGES: tuple[float, ...] = (
    *(float(i + 1) for i in range(50)),
    *(50.0 + 5.0 * (i + 1) for i in range(40)),
    *(250.0 + 50.0 * (i + 1) for i in range(36)),
    float("inf"),
)
BUCKETS = len(_EDGES)


def bucket(ms: float) -> int:
    """Index of the bucket holding ``ms`` (>= 0): integer arithmetic, no search."""
    if ms < 50.0:
        return int(ms) if ms > 0.0 else 0
    if ms < 250.0:
        return 50 + int((ms - 50.0) / 5.0)
    if ms < 2050.0:
        return 90 + int((ms - 250.0) / 50.0)
    return BUCKETS - 1


class Histogram:
    """Fixed-size millisecond histogram: ``add`` is O(1), memory never grows."""

    __slots__ = ("counts", "max_ms", "n")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.n = 0
        self.max_ms = 0.0

    def add(self, ms: float) -> None:
        self.counts[bucket(ms)] += 1
        self.n += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def percentile(self, q: float) -> float | None:
        return percentile_of(self.counts, q, cap=self.max_ms)


def percentile_of(counts: list[int], q: float, *, cap: float | None = None) -> float | None:
    """Nearest-rank percentile of bucket ``counts``: the bucket's upper edge (ms), at most
    ``cap`` (the exact maximum, when known); None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, -(-int(q * total) // 100))  # ceil(q/100 * total), at least the first
    seen = 0
    for i, count in enumerate(counts):
        seen += count
        if seen >= rank:
            edge = _EDGES[i]
            if cap is not None and edge > cap:
                edge = cap
            elif edge == float("inf"):
                edge = _EDGES[-2]  # "2 s or more": JSON has no infinity
            return round(edge, 1)
    return None  # unreachable: seen reaches total


class InboundTiming:
    """Caller audio as it arrives: how far each arrival interval is from the duration of
    the audio that came before it (20 ms for a phone frame), and the gaps.

    Measured at our socket, so it is the network's jitter plus our own: a stalled event
    loop delivers frames late and in a bunch, and shows here as well as in loop lag.
    """

    GAP_S = 0.1  # an arrival later than this after the previous one is a gap (lost audio)
    _BYTES_PER_S = 2.0 * INPUT_SAMPLE_RATE  # 16 kHz mono PCM16

    __slots__ = ("_expected_s", "_last", "gaps", "jitter", "missing_s")

    def __init__(self) -> None:
        self.jitter = Histogram()
        self.gaps = 0
        self.missing_s = 0.0
        self._last = 0.0
        self._expected_s = 0.0

    def arrived(self, now: float, nbytes: int) -> None:
        """``nbytes`` of 16 kHz PCM16 arrived at ``now`` (monotonic seconds)."""
        if self._last:
            interval = now - self._last
            deviation = interval - self._expected_s
            self.jitter.add(deviation * 1000.0 if deviation > 0 else -deviation * 1000.0)
            if interval > self.GAP_S:
                self.gaps += 1
                self.missing_s += deviation if deviation > 0 else 0.0
        self._last = now
        self._expected_s = nbytes / self._BYTES_PER_S

    def pause(self) -> None:
        """The stream stops on purpose (e.g. the call is ending): the next arrival starts
        a new interval instead of counting the pause as lost audio."""
        self._last = 0.0


def summary(
    *,
    late_frames: int,
    max_agent_gap_s: float,
    inbound: InboundTiming,
    loop_lag_p99_ms: float | None,
) -> dict[str, Any]:
    """What is stored on the call as ``metrics["audio_health"]``."""
    return {
        "late_frames": late_frames,
        "max_agent_gap_ms": round(max_agent_gap_s * 1000.0, 1),
        "inbound_jitter_p95_ms": inbound.jitter.percentile(95),
        "inbound_jitter_max_ms": round(inbound.jitter.max_ms, 1) if inbound.jitter.n else None,
        "inbound_gaps": inbound.gaps,
        "inbound_missing_ms": round(inbound.missing_s * 1000.0, 1),
        "loop_lag_p99_ms": loop_lag_p99_ms,
    }


def issues(audio_health: dict[str, Any]) -> int:
    """One number that makes a stuttering call findable: late agent frames (each is a
    stall the caller heard or nearly heard) plus gaps in the caller's audio."""
    return int(audio_health.get("late_frames") or 0) + int(audio_health.get("inbound_gaps") or 0)
