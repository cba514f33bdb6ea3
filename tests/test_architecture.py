"""The package's floors (docs/architecture.md): every import points down. The attention library
imports nothing of the detector built on it; the detector's parts (training, scoring, thresholds,
the model) never call back into the estimators; data and metrics know neither. Imports inside
functions count too: a lazy import upward is still an arrow upward."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "amad_fast"

#: module prefix -> module prefixes it must not import
FORBIDDEN = {
    "amad_fast.attention": ("amad_fast.detection", "amad_fast.data", "amad_fast.metrics", "amad_fast.bench",
                            "amad_fast.cli", "amad_fast.files"),
    "amad_fast.kernels": ("amad_fast.detection", "amad_fast.data", "amad_fast.metrics", "amad_fast.bench",
                          "amad_fast.cli", "amad_fast.files"),
    "amad_fast.detection.model": ("amad_fast.detection.training", "amad_fast.detection.scoring",
                                  "amad_fast.detection.thresholds", "amad_fast.detection.detector",
                                  "amad_fast.detection.stream", "amad_fast.detection.baselines",
                                  "amad_fast.detection.estimator", "amad_fast.detection.registry", "amad_fast.bench",
                                  "amad_fast.cli"),
    "amad_fast.detection.training": ("amad_fast.detection.scoring", "amad_fast.detection.detector",
                                     "amad_fast.detection.stream", "amad_fast.detection.baselines",
                                     "amad_fast.detection.estimator", "amad_fast.detection.registry",
                                     "amad_fast.bench", "amad_fast.cli"),
    "amad_fast.detection.checkpoints": ("amad_fast.detection.detector", "amad_fast.detection.estimator",
                                        "amad_fast.bench", "amad_fast.cli"),
    "amad_fast.detection.scoring": ("amad_fast.detection.training", "amad_fast.detection.detector",
                                    "amad_fast.detection.stream", "amad_fast.detection.baselines",
                                    "amad_fast.detection.estimator", "amad_fast.detection.registry",
                                    "amad_fast.bench", "amad_fast.cli"),
    "amad_fast.detection.thresholds": ("amad_fast.detection.detector", "amad_fast.detection.estimator",
                                       "amad_fast.detection.baselines", "amad_fast.bench", "amad_fast.cli"),
    "amad_fast.data": ("amad_fast.attention", "amad_fast.detection", "amad_fast.metrics", "amad_fast.bench",
                       "amad_fast.cli"),
    "amad_fast.metrics": ("amad_fast.attention", "amad_fast.detection", "amad_fast.bench", "amad_fast.cli"),
    "amad_fast.detection": ("amad_fast.bench", "amad_fast.cli"),
}

MAX_LINES = 600


def _module_name(path: pathlib.Path) -> str:
    if path.is_relative_to(ROOT / "kernels"):
        rel = ("amad_fast", "kernels") + path.relative_to(ROOT / "kernels").with_suffix("").parts
    else:
        rel = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(p for p in rel if p != "__init__")


def _sources():
    files = [p for p in PACKAGE.rglob("*.py") if "kernels" not in p.relative_to(PACKAGE).parts[:1]]
    return sorted(files + list((ROOT / "kernels").rglob("*.py")))


def _imports(path: pathlib.Path, me: str):
    """(line, imported module) for every import in the file, at any depth."""
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def upward_imports(path: pathlib.Path, me: str):
    """Every import in ``path`` (module ``me``) that points at a floor above it."""
    forbidden = [bad for prefix, rule in FORBIDDEN.items() if _under(me, prefix) for bad in rule]
    return [f"{path.name}:{line}: {me} imports {target}" for line, target in _imports(path, me)
            if any(_under(target, bad) for bad in forbidden)]


def test_imports_point_down():
    arrows_up = [a for path in _sources() for a in upward_imports(path, _module_name(path))]
    assert not arrows_up, "imports against the floors of docs/architecture.md:\n" + "\n".join(arrows_up)


def test_the_rule_catches_upward_imports(tmp_path):
    """The check sees a lazy import inside a function and a relative import (what a shortcut adds)."""
    src = tmp_path / "m.py"
    src.write_text("import torch\n\ndef f():\n    from amad_fast.detection.detector import AMADDetector\n"
                   "    from ...data import check_series\n    from .dispatch import automask_attention\n")
    found = upward_imports(src, "amad_fast.attention.backends.m")
    assert [f.split(" imports ")[1] for f in found] == ["amad_fast.detection.detector.AMADDetector",
                                                      "amad_fast.data.check_series"]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_a_warehouse(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it by role (at most {MAX_LINES})"
