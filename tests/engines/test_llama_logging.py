"""Loading the local LLM must not silence the rest of the process (llama-cpp-python's
verbose=False redirected the process's stdout/stderr to /dev/null during the load)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, threading, time
    from orchestrator.engines.local import LLM, MODELS

    loader = threading.Thread(target=MODELS[LLM].get)
    loader.start()
    ticks = 0
    while loader.is_alive() or ticks < 3:
        ticks += 1
        print(f"out-tick {ticks}", flush=True)
        os.write(2, f"err-tick {ticks}\\n".encode())
        time.sleep(0.02)
    loader.join()
    print(f"TICKS {ticks}", flush=True)
    """
)


@pytest.mark.slow
def test_other_threads_output_survives_the_llm_load():
    pytest.importorskip("llama_cpp")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ticks = int(done.stdout.rsplit("TICKS ", 1)[1])
    assert done.stdout.count("out-tick") == ticks
    assert done.stderr.count("err-tick") == ticks
    assert "llama_model_load" not in done.stderr  # llama.cpp's own chatter stays out
