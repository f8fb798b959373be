"""Check the import structure: no circles between modules, and no import up the layers.

Layers, top to bottom (a module may import its own layer and those below it):

    voiceapp/, scenarios/      the Django project: settings, routing, Celery app; scenario
                               tests, which place calls as a carrier does (they may use any
                               layer below, and nothing imports them)
    telephony/, simulator/     protocols: carriers and the browser page
    live/                      the runtime: socket base, live calls of this process
    calls/                     records: profiles, calls, turns, services, admin
    orchestrator/              the call engine (plain Python)

Every import counts, including the ones inside functions (a circle hidden in a function is
still a circle); imports under ``if TYPE_CHECKING:`` do not. Run it with the project's
Python from the repository root; exits 1 and prints what is wrong, else prints a summary.

    python scripts/check_imports.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS: dict[str, int] = {
    "voiceapp": 4,
    # Simulated callers: they place calls as a carrier would (Twilio's wire, signed webhooks)
    # and read the stored calls, so they sit above the carriers; nothing below imports them.
    "scenarios": 4,
    "telephony": 3,
    "simulator": 3,
    "live": 2,
    "calls": 1,
    "orchestrator": 0,
}
# Packages of one layer that must not import each other either.
SIBLINGS_APART = {
    ("telephony", "simulator"),
    ("simulator", "telephony"),
    ("voiceapp", "scenarios"),
    ("scenarios", "voiceapp"),
}
# Known circles, each with the reason it is tolerated; remove an entry once it is broken.
KNOWN_CIRCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" not in path.parts:
                modules[module_name(path)] = path
    return modules


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from a import b`` names a.b when it is one)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    # Keep project modules only, each named by the longest project module it falls in.
    result = set()
    for target in found:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            result.add(target)
    return result


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def problems() -> tuple[list[str], int]:
    modules = project_modules()
    graph = {name: imported(path, name, modules) for name, path in modules.items()}
    found = [
        f"circle: {' <-> '.join(c)}" for c in circles(graph) if frozenset(c) not in KNOWN_CIRCLES
    ]
    for source, targets in sorted(graph.items()):
        top = source.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if LAYERS[other] > LAYERS[top] or (top, other) in SIBLINGS_APART:
                found.append(f"up the layers: {source} imports {target}")
    return found, sum(len(t) for t in graph.values())


def main() -> int:
    found, edges = problems()
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} import problem(s)")
        return 1
    print(f"imports ok: no circles, no import up the layers ({edges} imports checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
