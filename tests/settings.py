"""Settings of the test process: the app's own, minus the start-up model preload.

Tests import ``voiceapp.asgi`` in-process; the preload would load every local model in
a background thread of the test run. It has its own test (tests/lifecycle/test_preload.py).
"""

from voiceapp.settings import *  # noqa: F403

PRELOAD_ENGINES = False
