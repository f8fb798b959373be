"""The demo booking flow on the offline LLM: how often does a scripted caller get a booking?

    DJANGO_SETTINGS_MODULE=bench.settings DATABASE_URL=… \\
        .venv/bin/python -m bench.offline_flow --calls 5 --model qwen2.5-1.5b --label after

Each call is a real session on the seeded ``demo-flow`` (or ``--profile demo-flow-es``)
profile's config with its llm model replaced by ``--model``; the caller
(tests/flows/offline_caller.py) opens with a booking request and answers what the agent
asks. A call *completes* when the path reaches ``goodbye`` through ``book`` with an ``ok``
``demo_booking`` and the agent hangs up. Prints each call's path, booking, end and time,
then the count; writes ``bench/results/offline_flow-<label>.json``. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from calls.selectors import call_config_for  # noqa: E402
from calls.services import profile_ensure_demo_flow, profile_ensure_demo_flow_es  # noqa: E402
from orchestrator.config import EngineSpec  # noqa: E402
from orchestrator.session import EndReason  # noqa: E402
from tests.flows.offline_caller import FlowCallResult, book_by_phone  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def completed(result: FlowCallResult) -> bool:
    path = result.path
    return (
        "book" in path
        and path[-1] == "goodbye"
        and result.booked is not None
        and result.end_reason is EndReason.AGENT_HANGUP
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--model", default="qwen2.5-1.5b")
    parser.add_argument("--profile", default="demo-flow")
    parser.add_argument("--label", default="run")
    # The profile's engine timeout (10 s) is what a caller gets; a machine shared with other
    # work may need more to measure the model rather than the contention.
    parser.add_argument("--engine-timeout", type=float, default=None)
    args = parser.parse_args()
    ensure = (
        profile_ensure_demo_flow_es if args.profile == "demo-flow-es" else profile_ensure_demo_flow
    )
    profile = await asyncio.to_thread(ensure)
    config = await asyncio.to_thread(call_config_for, profile=profile, channel="twilio")
    config = replace(config, llm=(EngineSpec(engine="local", model=args.model),))
    if args.engine_timeout:
        config = replace(config, engine_timeout_s=args.engine_timeout)
    runs = []
    for n in range(args.calls):
        result = await book_by_phone(replace(config, call_id=f"offline-flow-{n}"))
        ok = completed(result)
        runs.append({"completed": ok, "path": result.path, "booked": result.booked,
                     "values": result.flow.get("values"), "end": str(result.end_reason),
                     "seconds": round(result.seconds, 1), "said": result.said,
                     "tools": result.tools})  # fmt: skip
        print(
            f"call {n}: {'COMPLETED' if ok else 'not completed'} in {result.seconds:.0f} s; "
            f"path {' -> '.join(result.path)}; booked {result.booked}; end {result.end_reason}"
        )
        for who, text in result.said:
            print(f"    {who}: {text}")
        for name, arguments, status in result.tools:
            print(f"    tool {name}({json.dumps(arguments)}) -> {status}")
    done = sum(r["completed"] for r in runs)
    print(f"\n{done} of {len(runs)} calls completed the booking ({args.model}, {args.profile})")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"offline_flow-{args.label}.json"
    out.write_text(json.dumps({"model": args.model, "profile": args.profile, "completed": done,
                               "calls": runs}, indent=1, default=str))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main())
