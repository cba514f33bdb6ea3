"""The scripts beside the package (benchmarks/, experiments/, scripts/) import names from it that
must exist: each ``from amad_fast... import name`` (at module level or inside a function, where
running ``--help`` would not reach it) is resolved here, so a moved or renamed module breaks this
test rather than a benchmark run on a machine hours later."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for folder in ("benchmarks", "experiments", "scripts") for p in (ROOT / folder).glob("*.py"))


def package_imports(path: Path):
    """(module, name, line) of every ``from amad_fast[.x] import name`` in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "amad_fast":
            for alias in node.names:
                yield node.module, alias.name, node.lineno


def test_the_scan_sees_imports_inside_functions(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def main():\n    from amad_fast.bench import no_such_name\n", encoding="utf-8")
    assert list(package_imports(planted)) == [("amad_fast.bench", "no_such_name", 2)]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_imports_resolve(path):
    missing = []
    for module, name, line in package_imports(path):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:  # a submodule imported by name
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"line {line}: from {module} import {name}")
    assert not missing, f"{path.relative_to(ROOT)}: " + "; ".join(missing)
