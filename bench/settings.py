"""Settings for benchmarks and process-level tests: the app plus the scripted engines.

Scripted engines (fixed latencies, scripted words) live in bench/, never in the product;
this module registers them so profiles can name the engine "scripted".
"""

from orchestrator.engines import register
from voiceapp.settings import *  # noqa: F403

register("scripted", "bench.scripted_engines")

# Benchmarks measure live calls: the local model's post-call extraction (seconds of CPU
# per ended call) would compete with them. Set EXTRACTION_OFFLINE_ENGINE to measure it.
EXTRACTION_OFFLINE_ENGINE = env.str("EXTRACTION_OFFLINE_ENGINE", default="heuristic")  # noqa: F405
