"""Soak: N concurrent Twilio-protocol calls held for many minutes, calls ending and starting.

    .venv/bin/python -m bench.soak --calls 20 --minutes 30 --label run

The server is started as ``bench/load.py`` starts ours (``--server``: uvicorn, the
production default, one worker; the first three soaks ran daphne; ``bench.settings``, a
temporary SQLite database, the scripted engines with fixed latencies, so the load is the
server's own and not a model's). ``--calls`` callers each run calls back to back until
``--minutes`` have passed: a call lasts a random ``--min-call-s``..``--max-call-s``
(20-90 s), a few turns of the caller's scripted speech over the Twilio protocol, then
``stop``; its slot starts the next call at once, so calls keep ending and starting.

Every ``--sample-s`` (30 s) the server's process tree is sampled (psutil, children
included): RSS, open file descriptors, threads, CPU; plus, from the server's own
``/metrics``, the calls it holds a live session for and its started/ended counters, and on
the client side calls started, ended and failed so far. Asyncio tasks inside the server are
not sampled (they are not visible from outside without instrumenting the product); the
server's live-session gauge stands in for leaked sessions. After the deadline the calls in
flight are ended, and once the server is idle again a last "drained" sample is taken.

Verdict: RSS growth from the first sample after ``--warmup-min`` (2 min) to the last sample
under load (target < 5 %), and descriptor growth over the same span (target: none beyond
a few), and descriptors when drained against the idle server before the load.
Results go to ``bench/results/soak-<label>.json``. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench import memtrace
from bench.load import (
    RESULTS,
    CallResult,
    Clips,
    Endpoint,
    OursServer,
    Reply,
    Script,
    TwilioCaller,
    machine_info,
    parse_twiml,
    process_tree_usage,
    run_calls,
    webhook,
)

TURN_RESERVE_S = 9.0  # start another caller turn only with this much of the call left


class SoakServer(OursServer):
    """Ours, as bench/load.py starts it, with /metrics enabled (a bearer token)."""

    def __init__(
        self, script: Script, workdir: Path, server: str = "uvicorn", trace_to: Path | None = None
    ) -> None:
        super().__init__(script, workdir, server=server)
        self.metrics_token = uuid.uuid4().hex
        self.trace_to = trace_to

    def env(self) -> dict[str, str]:
        return {**super().env(), "METRICS_TOKEN": self.metrics_token}

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command()
        if self.trace_to is None:
            return cmd, env
        # bench/memtrace.py: a sitecustomize that starts tracemalloc in the server's processes.
        site = self.workdir / "memtrace-site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(memtrace.SITE)
        return cmd, {
            **env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")])),
            "MEMTRACE_DIR": str(self.trace_to),
            "MEMTRACE_ROOT": str(Path(__file__).resolve().parent.parent),
            "MEMTRACE_EVERY_S": env.get("MEMTRACE_EVERY_S", "60"),
        }


@dataclass(slots=True)
class Counters:
    started: int = 0
    ended: int = 0
    failed: int = 0  # calls with at least one error
    turns: int = 0
    replies: int = 0  # turns answered with agent audio
    active: int = 0
    errors: list[str] = field(default_factory=list)


def tree_figures(proc: psutil.Process) -> dict[str, Any]:
    cpu, rss = process_tree_usage(proc)
    fds = threads = 0
    procs = [proc]
    with contextlib.suppress(psutil.Error):
        procs += proc.children(recursive=True)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            fds += p.num_fds()
            threads += p.num_threads()
    return {"cpu_s": cpu, "rss": rss, "fds": fds, "threads": threads, "processes": len(procs)}


_METRIC = re.compile(
    r"^(voiceapp_active_calls|voiceapp_calls_started_total|voiceapp_calls_ended_total)"
    r"\b\S*\s+(\S+)$"
)
_GC_PASS = re.compile(
    r'^voiceapp_gc_after_calls_seconds(_count|_sum|_bucket)(?:\{le="([^"]+)"\})?\s+(\S+)$'
)


async def server_metrics(
    http: httpx.AsyncClient, endpoint: Endpoint, token: str
) -> dict[str, float]:
    """Live sessions and the started/ended counters, summed over channels and reasons; the
    collections after calls end (live/call_garbage.py): how many, their total pause, and
    the smallest histogram bound that holds them all (an upper bound of the longest)."""
    out: dict[str, float] = {}
    try:
        response = await http.get(
            endpoint.base + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
    except httpx.HTTPError:
        return out
    if response.status_code != 200:
        return out
    buckets: list[tuple[float, float]] = []
    for line in response.text.splitlines():
        if m := _METRIC.match(line):
            key = m.group(1).removeprefix("voiceapp_").removesuffix("_total")
            out[key] = out.get(key, 0) + int(float(m.group(2)))
        elif m := _GC_PASS.match(line):
            if m.group(1) == "_count":
                out["gc_passes"] = int(float(m.group(3)))
            elif m.group(1) == "_sum":
                out["gc_pause_s"] = float(m.group(3))
            elif m.group(2) not in (None, "+Inf"):
                buckets.append((float(m.group(2)), float(m.group(3))))
    if out.get("gc_passes"):
        out["gc_pause_max_le_s"] = min(
            (le for le, n in buckets if n >= out["gc_passes"]), default=float("inf")
        )
    return out


async def soak_call(
    index: int,
    *,
    endpoint: Endpoint,
    http: httpx.AsyncClient,
    clips: Clips,
    duration_s: float,
    end_at: float,
    counters: Counters,
    min_s: float,
    turn_timeout: float = 15.0,
) -> None:
    """One call of about ``duration_s``: greeting, caller turns while time is left, silence
    to the end of the call, then ``stop``. Cut short at ``end_at``, the soak's end, but a
    call lasts at least ``min_s`` (no burst of empty calls just before the end)."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    deadline = min(now + duration_s, max(end_at, now + min_s))
    result = CallResult()
    counters.started += 1
    call_sid = "CA" + uuid.uuid4().hex
    try:
        try:
            stream_url, parameters = parse_twiml(await webhook(http, endpoint, call_sid, index))
        except (httpx.HTTPError, RuntimeError, ValueError, ET.ParseError) as exc:
            result.errors.append(f"webhook: {exc!r}")
            return
        try:
            ws = await connect(
                stream_url, compression=None, open_timeout=15, ping_interval=None, max_size=2**20
            )
        except Exception as exc:  # noqa: BLE001 - any handshake failure is an error of this call
            result.errors.append(f"connect: {exc!r}")
            return
        caller = TwilioCaller(
            ws, stream_sid="MZ" + uuid.uuid4().hex, call_sid=call_sid, result=result
        )
        receiver = asyncio.create_task(caller.receive())
        counters.active += 1
        try:
            await caller.open(parameters)
            if not await caller.silence_until(caller.agent_done, clips.silence, turn_timeout):
                result.errors.append(
                    "no greeting" if caller.reply.frames == 0 else "greeting did not end"
                )
            turn = 0
            while caller.closed is None and deadline - loop.time() > TURN_RESERVE_S:
                gap = random.uniform(0.6, 2.5)
                await caller.silence_until(lambda: False, clips.silence, gap)
                end = loop.time()
                for payload in clips.turns[turn % len(clips.turns)]:
                    end = await caller.frame(payload)
                caller.reply = Reply(speech_end=end)
                result.replies.append(caller.reply)
                counters.turns += 1
                if await caller.silence_until(caller.agent_done, clips.silence, turn_timeout):
                    counters.replies += 1
                elif caller.closed is None:
                    result.errors.append(
                        f"turn {turn}: "
                        + ("no reply" if caller.reply.frames == 0 else "reply did not end")
                    )
                turn += 1
            # The caller stays on the line, quiet, until the call's own end.
            await caller.silence_until(
                lambda: loop.time() >= deadline, clips.silence, deadline - loop.time() + 1
            )
            if caller.closed is not None:
                result.errors.append(f"server closed the stream: {caller.closed}")
            await caller.stop()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(receiver), 5)
        except ConnectionClosed as exc:
            result.errors.append(f"socket closed while sending: {exc!r}")
        finally:
            counters.active -= 1
            await ws.close()
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
    except Exception as exc:  # noqa: BLE001 - a crashed client is an error of this call
        result.errors.append(f"client crashed: {exc!r}")
    finally:
        counters.ended += 1
        if result.errors:
            counters.failed += 1
            counters.errors.extend(result.errors)


async def slot(
    number: int,
    *,
    endpoint: Endpoint,
    http: httpx.AsyncClient,
    clips: Clips,
    args: argparse.Namespace,
    end_at: float,
    counters: Counters,
    rng: random.Random,
) -> None:
    """One caller line: calls back to back until the soak's end."""
    loop = asyncio.get_running_loop()
    # Spread the first calls over a few seconds, so the slots do not end in lockstep.
    await asyncio.sleep(rng.uniform(0, min(10.0, 0.5 * args.calls)))
    while loop.time() < end_at - 3:
        duration = rng.uniform(args.min_call_s, args.max_call_s)
        await soak_call(
            number * 100_000 + counters.started,
            endpoint=endpoint,
            http=http,
            clips=clips,
            duration_s=duration,
            end_at=end_at,
            counters=counters,
            min_s=args.min_call_s,
        )


async def take_sample(
    label: str,
    t0: float,
    proc: psutil.Process,
    http: httpx.AsyncClient,
    server: SoakServer,
    endpoint: Endpoint,
    counters: Counters,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    now = loop.time()
    tree = tree_figures(proc)
    metrics = await server_metrics(http, endpoint, server.metrics_token)
    cpu_pct = None
    if previous is not None and now > previous["_t"]:
        cpu_pct = round((tree["cpu_s"] - previous["_cpu_s"]) / (now - previous["_t"]) * 100, 1)
    return {
        "phase": label,
        "t_s": round(now - t0, 1),
        "rss_mb": round(tree["rss"] / 2**20, 2),
        "fds": tree["fds"],
        "threads": tree["threads"],
        "processes": tree["processes"],
        "cpu_pct": cpu_pct,
        "client_active": counters.active,
        "started": counters.started,
        "ended": counters.ended,
        "failed": counters.failed,
        "turns": counters.turns,
        "replies": counters.replies,
        "server_live_sessions": metrics.get("active_calls"),
        "server_started": metrics.get("calls_started"),
        "server_ended": metrics.get("calls_ended"),
        "gc_passes": metrics.get("gc_passes"),
        "gc_pause_s": metrics.get("gc_pause_s"),
        "gc_pause_max_le_s": metrics.get("gc_pause_max_le_s"),
        "load_avg_1m": round(psutil.getloadavg()[0], 2),
        "_t": now,
        "_cpu_s": tree["cpu_s"],
    }


def fmt_row(s: dict[str, Any], base: dict[str, Any] | None) -> str:
    growth = "-" if base is None else f"{(s['rss_mb'] / base['rss_mb'] - 1) * 100:+.1f}"
    dfd = "-" if base is None else f"{s['fds'] - base['fds']:+d}"
    live = "-" if s["server_live_sessions"] is None else str(s["server_live_sessions"])
    cpu = "-" if s["cpu_pct"] is None else f"{s['cpu_pct']:.0f}"
    return (
        f"{s['phase']:>7} {s['t_s'] / 60:>6.1f} {s['client_active']:>6} {live:>5} "
        f"{s['started']:>7} {s['ended']:>6} {s['failed']:>5} {s['turns']:>6} "
        f"{s['rss_mb']:>7.1f} {growth:>6} {s['fds']:>5} {dfd:>5} {s['threads']:>4} {cpu:>5}"
    )


HEADER = (
    f"{'phase':>7} {'min':>6} {'calls':>6} {'live':>5} {'started':>7} {'ended':>6} "
    f"{'fail':>5} {'turns':>6} {'RSS MB':>7} {'dRSS%':>6} {'fds':>5} {'dfd':>5} {'thr':>4} "
    f"{'CPU%':>5}"
)


def verdict(samples: list[dict[str, Any]], warmup_s: float, fd_slack: int) -> dict[str, Any]:
    load = [s for s in samples if s["phase"] == "load"]
    after = [s for s in load if s["t_s"] >= warmup_s]
    idle = next((s for s in samples if s["phase"] == "idle"), None)
    drained = next((s for s in samples if s["phase"] == "drained"), None)
    out: dict[str, Any] = {"warmup_s": warmup_s}
    if len(after) >= 2:
        first, last = after[0], after[-1]
        growth = (last["rss_mb"] / first["rss_mb"] - 1) * 100
        minutes = (last["t_s"] - first["t_s"]) / 60
        rss_after = [s["rss_mb"] for s in after]
        fds_after = [s["fds"] for s in after]
        out.update(
            {
                "baseline_t_s": first["t_s"],
                "last_t_s": last["t_s"],
                "rss_baseline_mb": first["rss_mb"],
                "rss_last_mb": last["rss_mb"],
                "rss_min_mb": min(rss_after),
                "rss_max_mb": max(rss_after),
                "rss_growth_pct": round(growth, 2),
                "rss_growth_mb_per_min": round((last["rss_mb"] - first["rss_mb"]) / minutes, 3)
                if minutes > 0
                else None,
                "calls_in_span": last["ended"] - first["ended"],
                "rss_ok": growth < 5.0,
                "fds_baseline": first["fds"],
                "fds_last": last["fds"],
                "fds_min": min(fds_after),
                "fds_max": max(fds_after),
                "fd_growth": last["fds"] - first["fds"],
                "fd_ok": abs(last["fds"] - first["fds"]) <= fd_slack,
                "threads_baseline": first["threads"],
                "threads_last": last["threads"],
            }
        )
        # The second half of that span alone: a leak keeps its slope, warm-up flattens.
        mid = next(s for s in after if s["t_s"] >= (first["t_s"] + last["t_s"]) / 2)
        half_min = (last["t_s"] - mid["t_s"]) / 60
        out.update(
            {
                "second_half_from_t_s": mid["t_s"],
                "rss_growth_second_half_pct": round((last["rss_mb"] / mid["rss_mb"] - 1) * 100, 2),
                "rss_growth_second_half_mb_per_min": round(
                    (last["rss_mb"] - mid["rss_mb"]) / half_min, 3
                )
                if half_min > 0
                else None,
            }
        )
    if idle and drained:
        out.update(
            {
                "fds_idle": idle["fds"],
                "fds_drained": drained["fds"],
                "drained_fd_diff": drained["fds"] - idle["fds"],
                "rss_idle_mb": idle["rss_mb"],
                "rss_drained_mb": drained["rss_mb"],
                "threads_idle": idle["threads"],
                "threads_drained": drained["threads"],
                "live_sessions_drained": drained["server_live_sessions"],
            }
        )
    return out


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    script = Script()
    clips = Clips.build()
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    print(f"server log and database: {workdir}", flush=True)
    trace_to = RESULTS / f"memtrace-{args.label}" if args.trace_memory else None
    if trace_to is not None and trace_to.exists():
        shutil.rmtree(trace_to)  # an earlier run's processes would mix into the report
    server = SoakServer(script, workdir, server=args.server, trace_to=trace_to)
    server.prepare()
    endpoint = server.start()
    assert server.process is not None
    proc = psutil.Process(server.process.pid)
    counters = Counters()
    samples: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    rng = random.Random(args.seed)
    random.seed(args.seed)
    try:
        warm = await run_calls(endpoint, n=1, turns=1, clips=clips, ramp_s=0)
        if warm[0].errors or not warm[0].replies or warm[0].replies[0].first_at is None:
            raise RuntimeError(f"warm-up call failed: {warm[0].errors}; see {server.log_path}")
        await asyncio.sleep(2.0)
        limits = httpx.Limits(max_connections=args.calls + 8)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            t0 = loop.time()
            samples.append(
                await take_sample("idle", t0, proc, http, server, endpoint, counters, None)
            )
            print(HEADER)
            print(fmt_row(samples[-1], None), flush=True)
            # Samples at every --sample-s up to --minutes; the calls run a few seconds past
            # the last one, so it is taken with all of them up.
            last_at = t0 + args.minutes * 60
            end_at = last_at + 3.0
            slots: list[asyncio.Task[None]] = []  # kept: awaited or cancelled below
            for i in range(args.calls):
                task = asyncio.create_task(
                    slot(
                        i,
                        endpoint=endpoint,
                        http=http,
                        clips=clips,
                        args=args,
                        end_at=end_at,
                        counters=counters,
                        rng=random.Random(rng.random()),
                    ),
                    name=f"soak-slot-{i}",
                )
                slots.append(task)
            base: dict[str, Any] | None = None
            k = 1
            while (next_at := t0 + k * args.sample_s) <= last_at + 0.5:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                samples.append(
                    await take_sample(
                        "load", t0, proc, http, server, endpoint, counters, samples[-1]
                    )
                )
                if base is None and samples[-1]["t_s"] >= args.warmup_min * 60:
                    base = samples[-1]
                print(fmt_row(samples[-1], base), flush=True)
                k += 1
            # The calls in flight end (cut at end_at), their slots start no more.
            done, pending = await asyncio.wait(slots, timeout=args.min_call_s + 60)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if task.exception() is not None:
                    counters.errors.append(f"slot crashed: {task.exception()!r}")
            # Sessions stop after their socket closes (MEDIA_SOCKET_STOP_TIMEOUT_SECONDS);
            # wait for the server to hold none, then sample it drained.
            drain_until = loop.time() + 30
            while loop.time() < drain_until:
                live = (await server_metrics(http, endpoint, server.metrics_token)).get(
                    "active_calls"
                )
                if live == 0:
                    break
                await asyncio.sleep(1)
            await asyncio.sleep(5)
            samples.append(
                await take_sample(
                    "drained", t0, proc, http, server, endpoint, counters, samples[-1]
                )
            )
            print(fmt_row(samples[-1], base), flush=True)
        log_errors = server.log_errors(0)
    finally:
        server.stop()
    for s in samples:
        s.pop("_t", None)
        s.pop("_cpu_s", None)
    return {
        "samples": samples,
        "verdict": verdict(samples, args.warmup_min * 60, args.fd_slack),
        "calls_started": counters.started,
        "calls_ended": counters.ended,
        "calls_failed": counters.failed,
        "turns": counters.turns,
        "turns_answered": counters.replies,
        "error_samples": sorted(set(counters.errors))[:20],
        "server_log_errors": log_errors,
        "server_log": str(server.log_path),
        "script": asdict(script),
    }


def print_verdict(v: dict[str, Any], fd_slack: int) -> None:
    print()
    if "rss_growth_pct" not in v:
        print("verdict: not enough samples after the warm-up (run longer)")
        return
    span = (v["last_t_s"] - v["baseline_t_s"]) / 60
    print(
        f"RSS {v['rss_baseline_mb']:.1f} MB at {v['baseline_t_s'] / 60:.1f} min -> "
        f"{v['rss_last_mb']:.1f} MB at {v['last_t_s'] / 60:.1f} min ({span:.1f} min, "
        f"{v['calls_in_span']} calls ended): {v['rss_growth_pct']:+.2f} % "
        f"({v['rss_growth_mb_per_min']:+.3f} MB/min; range {v['rss_min_mb']:.1f}-"
        f"{v['rss_max_mb']:.1f}) -> {'OK' if v['rss_ok'] else 'FAIL'} (target < 5 %)"
    )
    if v.get("rss_growth_second_half_mb_per_min") is not None:
        print(
            f"  second half alone (from {v['second_half_from_t_s'] / 60:.1f} min): "
            f"{v['rss_growth_second_half_pct']:+.2f} % "
            f"({v['rss_growth_second_half_mb_per_min']:+.3f} MB/min)"
        )
    print(
        f"fds {v['fds_baseline']} -> {v['fds_last']} ({v['fd_growth']:+d}; range "
        f"{v['fds_min']}-{v['fds_max']}) -> {'OK' if v['fd_ok'] else 'FAIL'} "
        f"(target: within ±{fd_slack})"
    )
    if "fds_drained" in v:
        print(
            f"drained vs idle before the load: fds {v['fds_idle']} -> {v['fds_drained']} "
            f"({v['drained_fd_diff']:+d}), threads {v['threads_idle']} -> "
            f"{v['threads_drained']}, RSS {v['rss_idle_mb']:.1f} -> {v['rss_drained_mb']:.1f} "
            f"MB, live sessions {v['live_sessions_drained']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="concurrent calls held")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--label", default="run", help="results: bench/results/soak-<label>.json")
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument(
        "--warmup-min", type=float, default=2.0, help="RSS growth is measured from here"
    )
    parser.add_argument("--min-call-s", type=float, default=20.0)
    parser.add_argument("--max-call-s", type=float, default=90.0)
    parser.add_argument("--fd-slack", type=int, default=5, help="fd change still counted as none")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--server",
        choices=("uvicorn", "daphne"),
        default="uvicorn",
        help="the ASGI server, one worker (voiceapp/serve.py; the first three soaks: daphne)",
    )
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="trace the server's memory (bench/memtrace.py) into bench/results/memtrace-<label>/",
    )
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    machine = machine_info()
    print(
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; "
        f"load average {machine['load_avg']}"
    )
    print(
        f"soak: {args.calls} calls for {args.minutes:g} min, each {args.min_call_s:g}-"
        f"{args.max_call_s:g} s, sample every {args.sample_s:g} s",
        flush=True,
    )
    started = datetime.now(UTC).isoformat(timespec="seconds")
    wall0 = time.monotonic()
    out = asyncio.run(soak(args))
    print(
        f"\ncalls started {out['calls_started']}, ended {out['calls_ended']}, with errors "
        f"{out['calls_failed']}; turns {out['turns']}, answered {out['turns_answered']}; "
        f"server log ERROR lines {out['server_log_errors']}"
    )
    for sample in out["error_samples"][:5]:
        print(f"  error: {sample}")
    print_verdict(out["verdict"], args.fd_slack)
    if passes := out["samples"][-1].get("gc_passes"):
        last = out["samples"][-1]
        print(
            f"collections after calls (live/call_garbage.py): {passes}, mean pause "
            f"{last['gc_pause_s'] / passes * 1000:.1f} ms, longest <= "
            f"{last['gc_pause_max_le_s'] * 1000:g} ms"
        )
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": "python -m bench.soak " + " ".join(sys.argv[1:]),
            "server": args.server,
            "machine": machine,
            "started_at": started,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "wall_s": round(time.monotonic() - wall0, 1),
            "calls": args.calls,
            "minutes": args.minutes,
            "call_seconds": [args.min_call_s, args.max_call_s],
            "sample_s": args.sample_s,
            **out,
        }
        path = RESULTS / f"soak-{args.label}.json"
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
