"""How a batch reads on a terminal: a progress line per run, then a summary table and the
reason of every failure and error."""

from __future__ import annotations

from scenarios.runner import RunResult, as_row, summarize

COLUMNS = ("scenario", "status", "checks", "seconds", "call")


def progress_line(done: int, total: int, result: RunResult) -> str:
    width = 20
    filled = width * done // max(1, total)
    bar = "#" * filled + "." * (width - filled)
    name = as_row(result)["scenario"]
    return f"[{bar}] {done}/{total} {result.status.upper():7s} {name} ({result.duration_s:.1f} s)"


def summary_table(results: list[RunResult]) -> str:
    rows = [as_row(r) for r in results]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in COLUMNS}
    line = "  ".join(f"{c:{widths[c]}}" for c in COLUMNS)
    out = [line, "  ".join("-" * widths[c] for c in COLUMNS)]
    out += ["  ".join(f"{str(r[c]):{widths[c]}}" for c in COLUMNS) for r in rows]
    counts = summarize(results)
    out.append("")
    out.append(", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no scenario ran")
    return "\n".join(out)


def problems(results: list[RunResult]) -> str:
    """Each failed check, each error and each skip's reason, for the reader to act on."""
    out = []
    for result in results:
        if result.status in ("error", "skipped"):
            out.append(f"{as_row(result)['scenario']}: {result.status.upper()} {result.error}")
        for check in result.failed_checks:
            out.append(f"{as_row(result)['scenario']}: FAILED {check.check}: {check.message}")
            if check.evidence:
                out.append(f"    evidence: {check.evidence}")
        if result.status in ("error", "failed"):
            out += [f"    note: {note}" for note in result.notes]
    return "\n".join(out)
