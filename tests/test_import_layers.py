"""The import structure holds: no circles, calls/ never imports carriers, the page or live/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_there_are_no_import_circles_and_no_import_up_the_layers():
    result = subprocess.run(
        [sys.executable, "scripts/check_imports.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_finds_a_circle_hidden_in_a_function(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_imports
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    graph = {"calls.services": {"calls.tasks"}, "calls.tasks": {"calls.services"}}
    assert check_imports.circles(graph) == [["calls.services", "calls.tasks"]]
    package = tmp_path / "calls"
    package.mkdir()
    (package / "a.py").write_text("def f():\n    from telephony import b\n")
    modules = {"calls.a": package / "a.py", "telephony.b": tmp_path / "b.py"}
    assert check_imports.imported(package / "a.py", "calls.a", modules) == {"telephony.b"}
