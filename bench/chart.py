"""Chart of ``bench/results/{ours,pipecat}.json``: overhead p95 and server CPU vs concurrent calls.

    .venv/bin/python bench/chart.py        # -> bench/results/load.png

``bench/load.py`` calls :func:`draw` after a sweep; matplotlib is only needed here
(``bench/requirements.txt``).
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
STYLE = {"ours": ("tab:blue", "o"), "pipecat": ("tab:orange", "s")}


def draw(out: Path = RESULTS / "load.png") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = [json.loads(p.read_text()) for name in STYLE if (p := RESULTS / f"{name}.json").exists()]
    fig, (ax_ovh, ax_cpu) = plt.subplots(1, 2, figsize=(11, 4.2))
    for doc in docs:
        color, marker = STYLE[doc["target"]]
        rows = doc["rows"]
        n = [r["n"] for r in rows]
        # Log scale: clip at 1 ms (a negative overhead would mean the script itself was beaten).
        ovh = [
            max(1.0, r["overhead_p95_ms"]) if r["overhead_p95_ms"] is not None else None
            for r in rows
        ]
        ax_ovh.plot(n, ovh, marker=marker, color=color, label=doc["target"])
        ax_cpu.plot(
            n, [r["server_cpu_pct"] for r in rows], marker=marker, color=color, label=doc["target"]
        )
    ax_ovh.axhline(25, color="grey", ls=":", lw=1, label="target 25 ms (N=50)")
    ax_ovh.axhline(50, color="grey", ls="--", lw=1, label="limit 50 ms")
    ax_ovh.set(
        xlabel="concurrent calls",
        ylabel="overhead p95 (ms, log)",
        title="Orchestration overhead p95",
        yscale="log",
    )
    ax_cpu.axhline(200, color="grey", ls="--", lw=1)
    ax_cpu.set(
        xlabel="concurrent calls",
        ylabel="server CPU (% of one core)",
        title="Server CPU (2 cores = 200 %)",
    )
    for ax in (ax_ovh, ax_cpu):
        ax.grid(alpha=0.3)
        ax.legend()
    if docs:
        machine = docs[0]["machine"]
        noise = docs[0].get("line_noise_dbfs")
        fig.suptitle(
            f"{docs[0]['command']}\n{machine['cpu']} ({machine['cores']} cores, load avg before "
            f"{machine['load_avg'][0]}), {docs[0]['turns_per_call']} turns/call, caller line noise "
            f"{'off' if noise is None else f'{noise:g} dBFS'}; {docs[0]['finished_at'][:10]}",
            fontsize=8,
        )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(draw())
