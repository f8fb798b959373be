"""The call engine must run without Django: nothing under orchestrator/ may import it."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {"django", "channels", "calls", "telephony", "simulator", "voiceapp"}
ROOT = Path(__file__).resolve().parents[2] / "orchestrator"


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_orchestrator_never_imports_django_or_the_django_apps() -> None:
    files = sorted(ROOT.rglob("*.py"))
    assert any(f.parent.name == "engines" for f in files), "engines/ is scanned too"
    offenders = {
        str(f.relative_to(ROOT.parent)): sorted(imported_roots(f) & FORBIDDEN) for f in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}
