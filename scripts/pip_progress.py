"""Run ``pip install -v ...`` quietly, showing what takes time: compiling llama.cpp.

pip's normal output says nothing for minutes while a package compiles from source, and
``-v`` floods the terminal. This keeps the lines a person wants (what is collected, built
and installed), announces a known long compile with its expected duration, turns the
compiler's ``[n/N]`` steps into a progress line, and writes everything to a log, whose
end is printed if pip fails. Standard library only: it runs before anything is installed.

Usage: python scripts/pip_progress.py LOG -- pip install -v ARGS...
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

SHOWN = re.compile(r"^(Collecting |Successfully |Installing collected |ERROR|WARNING: Failed)")
BUILD = re.compile(r"Building wheel for (\S+) \(.*\): (started|finished.*)$")
STEP = re.compile(r"^\s*\[(\d+)/(\d+)\]\s")
# Measured on 2 cores (README, docs/engines.md); pip caches the wheel it builds.
SLOW_BUILDS = {"llama_cpp_python": "compiling llama.cpp (the offline LLM): about 6 minutes"}


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def run(log_path: Path, command: list[str]) -> int:
    tty = sys.stdout.isatty()
    started, building, last_decile = time.monotonic(), "", -1

    def say(text: str, end: str = "\n") -> None:
        print(text, end=end, flush=True)

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        log_path.open("w") as log,
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as pip,
    ):
        assert pip.stdout is not None
        for line in pip.stdout:
            log.write(line)
            if build := BUILD.search(line.rstrip()):
                building = build.group(1).replace("-", "_")
                if build.group(2) == "started":
                    note = SLOW_BUILDS.get(building, "")
                    say(f"Building {building}" + (f": {note} on 2 cores, once" if note else ""))
                    started, last_decile = time.monotonic(), -1
                else:
                    say(f"Built {building} in {_clock(time.monotonic() - started)}")
            elif step := STEP.match(line):
                done, total = int(step.group(1)), int(step.group(2))
                elapsed = _clock(time.monotonic() - started)
                text = f"  {building or 'compiling'}: {done}/{total}, {elapsed}"
                if tty:
                    say(f"\r{text}", end="\n" if done == total else "")
                elif done * 10 // total != last_decile:  # a log or CI: one line per 10 %
                    last_decile = done * 10 // total
                    say(text)
            elif SHOWN.match(line):
                say(line.rstrip()[:200])
        status = pip.wait()
    if status != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-60:]
        say("\n".join(["", f"pip failed ({status}); the last lines of {log_path}:", *tail]))
    return status


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    return run(Path(argv[0]), argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
