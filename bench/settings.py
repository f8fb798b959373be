"""Settings for benchmarks and process-level tests: the app plus the scripted engines.

Scripted engines (fixed latencies, scripted words) live in bench/, never in the product;
this module registers them so profiles can name the engine "scripted".
"""

from orchestrator.engines import register
from voiceapp.settings import *  # noqa: F403

register("scripted", "bench.scripted_engines")
