"""Where a server's memory goes over a soak: Python allocations, the C heap and its mappings.

    .venv/bin/python -m bench.soak --minutes 12 --trace-memory --label probe   # records
    .venv/bin/python -m bench.memtrace bench/results/memtrace-probe            # reports

``bench.soak --trace-memory`` starts the server with this module loaded first (a
``sitecustomize`` on ``PYTHONPATH`` calls ``start()``): tracemalloc runs with
``MEMTRACE_FRAMES`` frames (1: the allocating line; 12 frames cost so much CPU that 20
calls no longer fit on this machine's core; 0: no tracemalloc, so RSS is as in production
and only the samples below are written), and every ``MEMTRACE_EVERY_S`` a thread
writes, per process,

- a line to ``samples-<pid>.jsonl``: RSS, the memory tracemalloc traces (Python objects,
  numpy buffers), glibc's ``mallinfo2`` (bytes in use vs free inside the malloc arenas, and
  in mmap'd blocks) and the resident size of ``/proc/self/smaps`` grouped by mapping
  (``[heap]``, anonymous, each shared library), plus gc's object count;
- a tracemalloc snapshot, ``snap-<pid>-<n>.pickle``.

The report compares the snapshot nearest ``--from-min`` (2, the soak's RSS baseline) with
the last one: what grew, by allocating traceback, and how RSS growth splits between traced
Python memory, untraced C heap (a library's own ``malloc``), free space the allocator keeps
(fragmentation or high-water marks) and other mappings. Diagnostic only: tracemalloc costs
CPU, so timings of a traced run mean nothing. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

SITE = """\
# Written by bench.soak --trace-memory: trace this process's memory (bench/memtrace.py).
import os, sys
if os.environ.get("MEMTRACE_DIR"):
    sys.path.insert(0, os.environ["MEMTRACE_ROOT"])
    import bench.memtrace
    bench.memtrace.start()
"""


# --- recording (inside the traced process) -----------------------------------------------------


_MALLINFO2 = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2.split()]


def mallinfo() -> dict[str, int]:
    """glibc's view of its heap: ``arena`` = bytes from sbrk/arena mmaps, ``uordblks`` = in use,
    ``fordblks`` = free but kept, ``hblkhd`` = large blocks mmap'd on their own."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {name: int(getattr(info, name)) for name, _ in _MallInfo2._fields_}


_MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")


def smaps_by_mapping() -> dict[str, int]:
    """Resident kB per mapping name; anonymous mappings are summed as ``[anon]``."""
    out: dict[str, int] = {}
    name = "[anon]"
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                if (m := _MAPPING.match(line)) is not None:
                    path = m.group(1).strip()
                    name = os.path.basename(path) if path.startswith("/") else (path or "[anon]")
                elif line.startswith("Rss:"):
                    out[name] = out.get(name, 0) + int(line.split()[1])
    except OSError:
        pass
    return out


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _record(directory: Path, every_s: float) -> None:
    pid = os.getpid()
    t0 = time.monotonic()
    n = 0
    while True:
        time.sleep(every_s)
        n += 1
        traced, peak = tracemalloc.get_traced_memory()
        line = {
            "n": n,
            "t_s": round(time.monotonic() - t0, 1),
            "rss_kb": _rss_kb(),
            "traced": traced,
            "traced_peak": peak,
            "tracemalloc_overhead": tracemalloc.get_tracemalloc_memory(),
            "mallinfo": mallinfo(),
            "smaps_kb": smaps_by_mapping(),
            "gc_objects": len(gc.get_objects()),
        }
        with open(directory / f"samples-{pid}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")
        if not tracemalloc.is_tracing():
            continue
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(directory / f"snap-{pid}-{n:03d}.pickle"))
        del snapshot


def start() -> None:
    """Called from the generated sitecustomize: trace from the first import on."""
    directory = Path(os.environ["MEMTRACE_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    if (frames := int(os.environ.get("MEMTRACE_FRAMES", "1"))) > 0:
        tracemalloc.start(frames)
    every_s = float(os.environ.get("MEMTRACE_EVERY_S", "60"))
    recorder = threading.Thread(target=_record, args=(directory, every_s), daemon=True)
    recorder.start()


# --- report ------------------------------------------------------------------------------------


def _load_samples(directory: Path, pid: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (directory / f"samples-{pid}.jsonl").read_text().splitlines()]


def _mb(n: float) -> str:
    return f"{n / 2**20:+.2f} MB"


def report(directory: Path, from_min: float, top: int) -> None:
    pids = sorted({p.name.split("-")[1].split(".")[0] for p in directory.glob("samples-*.jsonl")})
    for pid in pids:
        samples = _load_samples(directory, pid)
        if len(samples) < 2:
            continue
        base = min(samples, key=lambda s: abs(s["t_s"] - from_min * 60))
        last = samples[-1]
        if last["rss_kb"] < 100_000:
            print(f"pid {pid}: small process ({last['rss_kb'] / 1024:.0f} MB), skipped\n")
            continue
        print(f"pid {pid}: {base['t_s'] / 60:.1f} -> {last['t_s'] / 60:.1f} min")
        print("  min   RSS MB  traced MB  heap-in-use MB  heap-free MB  mmap'd MB  gc objects*")
        for s in samples:
            mi = s["mallinfo"]
            print(
                f"  {s['t_s'] / 60:4.1f}  {s['rss_kb'] / 1024:7.1f}  {s['traced'] / 2**20:9.1f}"
                f"  {mi.get('uordblks', 0) / 2**20:14.1f}  {mi.get('fordblks', 0) / 2**20:12.1f}"
                f"  {mi.get('hblkhd', 0) / 2**20:9.1f}  {s['gc_objects']:11d}"
            )
        print("  (* objects the collector tracks, the frozen startup heap not counted)")
        d_rss = (last["rss_kb"] - base["rss_kb"]) * 1024
        d_traced = last["traced"] - base["traced"]
        d_tm = last["tracemalloc_overhead"] - base["tracemalloc_overhead"]
        mb, ml = base["mallinfo"], last["mallinfo"]
        print(f"  RSS growth {_mb(d_rss)}:")
        print(f"    Python allocations traced  {_mb(d_traced)}")
        print(f"    tracemalloc's own tables   {_mb(d_tm)} (absent in production)")
        if mb and ml:
            print(f"    malloc in use (all)        {_mb(ml['uordblks'] - mb['uordblks'])}")
            print(f"    malloc free, kept          {_mb(ml['fordblks'] - mb['fordblks'])}")
            print(f"    mmap'd blocks              {_mb(ml['hblkhd'] - mb['hblkhd'])}")
        grew = {
            k: last["smaps_kb"].get(k, 0) - base["smaps_kb"].get(k, 0)
            for k in set(base["smaps_kb"]) | set(last["smaps_kb"])
        }
        print("  resident growth by mapping:")
        for name, kb in sorted(grew.items(), key=lambda kv: -abs(kv[1]))[:8]:
            if kb:
                print(f"    {kb / 1024:+8.2f} MB  {name}")
        first, latest = (directory / f"snap-{pid}-{s['n']:03d}.pickle" for s in (base, last))
        if not (first.exists() and latest.exists()):
            continue  # (no tracemalloc in this run, or the process died before its dump)
        old, new = tracemalloc.Snapshot.load(str(first)), tracemalloc.Snapshot.load(str(latest))
        skip = [tracemalloc.Filter(False, f) for f in (tracemalloc.__file__, __file__)]
        old, new = old.filter_traces(skip), new.filter_traces(skip)
        print(f"  Python allocations that grew most ({first.name} -> {latest.name}), by line:")
        for stat in new.compare_to(old, "lineno")[:top]:
            frame = stat.traceback[0]
            print(
                f"    {_mb(stat.size_diff)} ({stat.count_diff:+d} blocks)  "
                f"{_short(frame.filename)}:{frame.lineno}"
            )
        print("  ... the three largest by whole traceback:")
        for stat in new.compare_to(old, "traceback")[:3]:
            print(f"    {_mb(stat.size_diff)} ({stat.count_diff:+d} blocks)")
            for frame in list(stat.traceback)[-8:]:
                print(f"        {_short(frame.filename)}:{frame.lineno}")
        print()


def _short(path: str) -> str:
    root = str(Path(__file__).resolve().parent.parent) + "/"
    for marker in ("site-packages/", root, "lib/python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--from-min", type=float, default=2.0)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    report(args.directory, args.from_min, args.top)


if __name__ == "__main__":
    main()
