"""Prometheus metrics of this process, exposed at ``/metrics``.

Each daphne process exposes its own counters; scrape every web process (or run one).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

ACTIVE_CALLS = Gauge(
    "voiceapp_active_calls", "Calls with a live session in this process", ["channel"]
)
CALLS_STARTED = Counter("voiceapp_calls_started_total", "Calls started", ["channel"])
CALLS_ENDED = Counter("voiceapp_calls_ended_total", "Calls ended", ["channel", "reason"])
TURN_LATENCY = Histogram(
    "voiceapp_turn_latency_seconds",
    "Per-turn latency by stage (stt, llm_ttft, tts_ttfb, voice_to_voice)",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
ENGINE_ERRORS = Counter("voiceapp_engine_errors_total", "Engine failures", ["vendor"])
GLOBAL_STOP = Gauge("voiceapp_global_stop", "1 while calls are globally stopped")
INTERRUPTIONS = Counter("voiceapp_interruptions_total", "Agent turns cut by barge-in", ["channel"])
UNANSWERED_TURNS = Counter(
    "voiceapp_unanswered_turns_total",
    "User turns that got no reply (engine failure, stall, hang-up while thinking)",
    ["channel"],
)
RECORDER_RETRIES = Counter(
    "voiceapp_recorder_retries_total",
    "Call/turn writes retried because the database was unreachable",
    ["channel"],
)

_STAGES = {
    "stt_ms": "stt",
    "llm_ttft_ms": "llm_ttft",
    "tts_ttfb_ms": "tts_ttfb",
    "voice_to_voice_ms": "voice_to_voice",
}


def observe_turn(metrics: dict[str, object]) -> None:
    for key, stage in _STAGES.items():
        value = metrics.get(key)
        if isinstance(value, int | float):
            TURN_LATENCY.labels(stage=stage).observe(float(value) / 1000.0)
