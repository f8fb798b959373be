"""Call-level statistics: turn counts, interruptions, latency percentiles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.contracts import TurnMetrics


@dataclass(slots=True)
class CallStats:
    user_turns: int = 0
    assistant_turns: int = 0
    overlaps: int = 0  # caller speech over agent audio (each paused the agent)
    backchannels: int = 0  # overlaps that were only "mm-hmm": the agent resumed
    interruptions: int = 0  # overlaps that cut the agent's audio for good
    false_starts: int = 0  # a click or cough paused the agent for a moment, then it went on
    unanswered: int = 0  # user turns that got no reply
    tool_calls: int = 0
    tool_failures: int = 0  # tool calls whose result was not "ok"
    reply_metrics: list[TurnMetrics] = field(default_factory=list)  # one per answered turn

    def summary(self, duration_s: float) -> dict[str, Any]:
        """What is stored on the call when it ends."""

        def values(name: str) -> list[float]:
            return [v for m in self.reply_metrics if (v := getattr(m, name)) is not None]

        v2v = values("voice_to_voice_ms")
        return {
            "duration_s": round(duration_s, 3),
            "turns": self.user_turns + self.assistant_turns,
            "user_turns": self.user_turns,
            "assistant_turns": self.assistant_turns,
            "overlaps": self.overlaps,
            "backchannels": self.backchannels,
            "interruptions": self.interruptions,
            "false_starts": self.false_starts,
            "unanswered_turns": self.unanswered,
            "tool_calls": self.tool_calls,
            "tool_failures": self.tool_failures,
            "voice_to_voice_p50_ms": percentile(v2v, 50),
            "voice_to_voice_p95_ms": percentile(v2v, 95),
            "endpointing_p50_ms": percentile(values("endpointing_ms"), 50),
            "stt_p50_ms": percentile(values("stt_ms"), 50),
            "llm_ttft_p50_ms": percentile(values("llm_ttft_ms"), 50),
            "tts_ttfb_p50_ms": percentile(values("tts_ttfb_ms"), 50),
        }


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, rounded to 0.1 ms; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return round(ordered[k], 1)
