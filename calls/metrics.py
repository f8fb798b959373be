"""Prometheus metrics, exposed at ``/metrics``.

One process (``make run``, a plain daphne): its own series. Several workers on one port
(``python -m voiceapp.serve``): the supervisor gives them a ``PROMETHEUS_MULTIPROC_DIR``
and any worker's ``/metrics`` answers for all of them (counters and histograms summed,
gauges as their ``multiprocess_mode`` says); calls/views.py.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

ACTIVE_CALLS = Gauge(
    "voiceapp_active_calls",
    "Calls with a live session (summed over the live workers of a host)",
    ["channel"],
    multiprocess_mode="livesum",
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
# voiceapp_global_stop is read at scrape time from the shared stop state (calls/views.py).
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

# Audio health, one observation per call when it ends (metrics["audio_health"],
# orchestrator/audio_health.py; docs/operations.md "Audio health").
GAP_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
AUDIO_LATE_FRAMES = Histogram(
    "voiceapp_call_late_frames",
    "Agent frames per call sent after the far end ran out of audio (> 20 ms)",
    buckets=(0, 1, 2, 5, 10, 20, 50, 100, 500),
)
AUDIO_AGENT_GAP = Histogram(
    "voiceapp_call_max_agent_gap_seconds",
    "Longest gap in agent audio within a sentence, per call (beyond the 20 ms cadence)",
    buckets=GAP_BUCKETS,
)
AUDIO_INBOUND_JITTER = Histogram(
    "voiceapp_call_inbound_jitter_p95_seconds",
    "p95 deviation of caller frame arrival intervals from the audio they carry, per call",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
)
AUDIO_LOOP_LAG = Histogram(
    "voiceapp_call_loop_lag_p99_seconds",
    "p99 event-loop lag of the serving process while the call ran",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)

# The full garbage collection run after calls end (live/call_garbage.py; docs/operations.md
# "Memory"): its pause, one observation per pass.
GC_AFTER_CALLS = Histogram(
    "voiceapp_gc_after_calls_seconds",
    "Pause of the full garbage collection run after calls end (live/call_garbage.py)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16),
)

_STAGES = {
    "stt_ms": "stt",
    "llm_ttft_ms": "llm_ttft",
    "tts_ttfb_ms": "tts_ttfb",
    "voice_to_voice_ms": "voice_to_voice",
}


def observe_audio_health(health: dict[str, object]) -> None:
    """Once per call: its audio-health figures (None ones, e.g. no caller audio, skipped)."""
    for histogram, key, scale in (
        (AUDIO_LATE_FRAMES, "late_frames", 1.0),
        (AUDIO_AGENT_GAP, "max_agent_gap_ms", 1000.0),
        (AUDIO_INBOUND_JITTER, "inbound_jitter_p95_ms", 1000.0),
        (AUDIO_LOOP_LAG, "loop_lag_p99_ms", 1000.0),
    ):
        value = health.get(key)
        if isinstance(value, int | float):
            histogram.observe(float(value) / scale)


def observe_turn(metrics: dict[str, object]) -> None:
    for key, stage in _STAGES.items():
        value = metrics.get(key)
        if isinstance(value, int | float):
            TURN_LATENCY.labels(stage=stage).observe(float(value) / 1000.0)
