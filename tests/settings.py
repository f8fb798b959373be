"""Settings of the test process: the app's own, minus the start-up model preload and the
local LLM's post-call extraction.

Tests import ``voiceapp.asgi`` in-process; the preload would load every local model in
a background thread of the test run. It has its own test (tests/lifecycle/test_preload.py).
"""

from voiceapp.settings import *  # noqa: F403

PRELOAD_ENGINES = False
# Every test call that ends without a cloud key would otherwise run the local LLM's
# post-call analysis (seconds of CPU each); its own tests (tests/lifecycle/
# test_extraction_offline.py) switch it back on.
EXTRACTION_OFFLINE_ENGINE = "heuristic"
# Admission by loop lag: the test process blocks its loop on purpose (model loads, database
# flushes) and a call refused for a previous test's lag would fail an unrelated test. The
# admission tests switch it on.
ADMISSION_MAX_LOOP_LAG_MS = 0
# The collection after calls end (live/call_garbage.py) runs only where the startup heap is
# frozen, which the test process never is; its own tests freeze it and switch it on.
GC_AFTER_CALLS_SECONDS = 0
