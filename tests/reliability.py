"""The registry behind docs/reliability.md: every case tried against amad_fast (bad inputs, hostile
and damaged files, faults, extreme values, concurrency) and the behaviour a user gets.

A case is a test function decorated with :func:`case`; the decorator records its category, what
is tried, the behaviour in words and ``shows``, an excerpt of the message (error or warning) the
user sees. The test must check that excerpt against the real message through the ``shown``
fixture of test_reliability.py (the fixture fails the test when it is never called), so a row of
the table cannot claim a message the code no longer gives. test_reliability.py also renders the
table and fails when docs/reliability.md differs. Regenerate it with

    python tests/reliability.py --write

(``--check`` only compares). The attention kernels' rows (large logits, kl >= 0, float16) are
registered in test_large_logits.py, under "Kernels: extreme values".
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(os.path.dirname(HERE), "docs", "reliability.md")
COMMAND = "python tests/reliability.py --write"

#: test modules whose cases the table lists (imported by the renderer)
MODULES = ("test_reliability", "test_large_logits")

#: the table's sections, in order, each with one line of introduction
CATEGORIES: Dict[str, str] = {
    "Input series": "Arrays given to fit / decision_function (API) and the series the CLI reads.",
    "Extreme values": "Finite values far outside the training range, values beyond float32, scores that "
                      "could come out NaN/Inf.",
    "Kernels: extreme values": "The attention backends at large logits (tests/test_large_logits.py, the parity "
                               "rule of amad_fast.attention.testing): every backend against float64, kl >= 0 always.",
    "CSV files": "load_csv and every CSV the CLI reads. Errors name the file, the line (1-based, as an editor "
                 "shows it) and the column.",
    "Other data files": ".npy series and labels, scores CSVs for `amad-fast evaluate`.",
    "Detector and checkpoint files": "Every file amad_fast reads is loaded with torch.load(weights_only=True) "
                                     "and carries its format, the package version and a sha256 checksum of "
                                     "its content (amad_fast/files.py).",
    "Resume": "`--resume` / `resume=True` continue only what the checkpoint really is the start of.",
    "Output locations and write faults": "Outputs are checked before any work; writes are atomic.",
    "Concurrency and interruption": "Two runs, killed runs, durability.",
    "Parameters": "Options are refused when given, not deep inside training.",
}

#: categories whose rows other work will add: rendered with this note while they have none
RESERVED: Dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class Case:
    test: str          # the test function that checks the case
    module: str
    category: str
    tried: str         # what is tried
    behaviour: str     # what the user gets, in words
    shows: Optional[str]  # an excerpt of the message the user sees (checked by the test), or None


CASES: Dict[str, Case] = {}


def case(category: str, tried: str, behaviour: str, shows: Optional[str] = None) -> Callable:
    """Register the decorated test as a case of the table (see the module docstring)."""
    if category not in CATEGORIES:
        raise ValueError(f"category: expected one of {list(CATEGORIES)}, got {category!r}")
    for name, text in (("tried", tried), ("behaviour", behaviour), ("shows", shows or "")):
        if "|" in text or "\n" in text:
            raise ValueError(f"{name}: a table cell cannot hold '|' or a newline, got {text!r}")

    def register(fn: Callable) -> Callable:
        module = fn.__module__.rsplit(".", 1)[-1]
        CASES[f"{module}::{fn.__name__}"] = Case(fn.__name__, module, category, tried, behaviour, shows)
        fn.reliability_case = CASES[f"{module}::{fn.__name__}"]
        return fn

    return register


def load_all() -> List[Case]:
    """Import every module of MODULES (registering their cases) and return the cases in table order:
    by category, then in the order the tests are defined."""
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    for name in MODULES:
        importlib.import_module(name)
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(CASES.values(), key=lambda c: order[c.category])  # stable: definition order within one


def _cell(text: Optional[str], code: bool = False) -> str:
    if not text:
        return ""
    return f"`{text}`" if code else text


def render(cases: Optional[List[Case]] = None) -> str:
    """docs/reliability.md's text."""
    cases = load_all() if cases is None else cases
    out = [
        "# Reliability: what a user gets when things go wrong",
        "",
        "<!-- Generated from the case registry of tests/test_reliability.py; do not edit by hand. -->",
        f"<!-- Regenerate: {COMMAND} (tests/test_reliability.py fails when this file is out of date). -->",
        "",
        "Every row is a test that runs the case and checks the behaviour; the quoted message excerpt is "
        "compared with the real message, so the table cannot drift from the code. Errors are one line that "
        "names the argument or file, what was expected and what came; the CLI prints them as "
        "`amad-fast SUBCOMMAND: error: ...` and exits with status 2, without a traceback (an invalid option "
        "gets argparse's usage line and `error: argument ...`, also status 2). Nothing in a file "
        "is ever run: every load uses `torch.load(weights_only=True)` (or `np.load(allow_pickle=False)`).",
        "",
        f"{len(cases)} cases.",
        "",
    ]
    for category, intro in CATEGORIES.items():
        rows = [c for c in cases if c.category == category]
        out += [f"## {category}", "", intro, ""]
        if not rows:
            out += [RESERVED.get(category, "No cases."), ""]
            continue
        out += ["| what is tried | what the user gets | message (excerpt) | test |", "|---|---|---|---|"]
        for c in rows:
            out.append(f"| {c.tried} | {c.behaviour} | {_cell(c.shows, code=True)} | `{c.test}` |")
        out.append("")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["--write"], ["--check"]):
        print(f"usage: {os.path.relpath(__file__)} --write | --check", file=sys.stderr)
        return 2
    repo = os.path.dirname(HERE)
    if repo not in sys.path:  # the checkout's amad_fast, as the tests see it from the repository root
        sys.path.insert(0, repo)
    text = render()
    if args == ["--write"]:
        with open(DOC, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {DOC} ({len(CASES)} cases)")
        return 0
    try:
        with open(DOC, encoding="utf-8") as fh:
            current = fh.read()
    except FileNotFoundError:
        current = None
    if current != text:
        print(f"{DOC} is out of date; run: {COMMAND}", file=sys.stderr)
        return 1
    print(f"{DOC} is up to date ({len(CASES)} cases)")
    return 0


if __name__ == "__main__":  # the tests register their cases in the top-level module `reliability`: use that one
    sys.path.insert(0, HERE)
    import reliability

    sys.exit(reliability.main())
