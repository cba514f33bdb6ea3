"""``amad-fast``: train, score, watch, export, evaluate, demo, benchmark, env and bench from the command line.

Every subcommand has ``--help``. Data arguments take what :func:`amad_fast.data.load_dataset`
takes (``synthetic[:key=value,...]``, a data directory such as ``../shared/data/SMAP``, a
``NAME_train.npy`` file, a ``NAME_train.csv`` file (with ``NAME_test.csv`` beside it, a pair),
any one ``.csv`` series file (labels optional), or a name under ``--data-root``/``$AMAD_DATA``);
``score`` also takes a plain ``.npy`` (T, C) series file. Which CSV columns are used and which
are ignored (index, timestamp, text, labels) is printed as one line."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from amad_fast.cli.commands import (
    cmd_bench,
    cmd_benchmark,
    cmd_demo,
    cmd_env,
    cmd_evaluate,
    cmd_export,
    cmd_score,
    cmd_train,
    cmd_watch,
)
from amad_fast.cli.options import (
    DEMO_DATA,
    DEMO_SIZES,
    _add_data_root,
    _add_detector_options,
    _add_device_overrides,
    _add_scoring_overrides,
    _contamination,
    _positive_int,
    _seed,
)
from amad_fast.cli.outputs import SPLITS


def build_parser() -> argparse.ArgumentParser:
    from amad_fast.detection.export import EXPORT_FORMATS
    from amad_fast.detection.registry import METHODS
    from amad_fast.detection.thresholds import DEFAULT_CONTAMINATION

    p = argparse.ArgumentParser(
        prog="amad-fast",
        description="AMAD anomaly detection (AutoMask attention) for multivariate time series.",
        epilog="Data sets: 'synthetic[:length=N,channels=C,seed=S,...]', a directory (SMAP .npy layout, "
               "NAME_train.csv/NAME_test.csv pairs, PSM, SMD, SWaT), a NAME_train.npy file, any one .csv "
               "series file (my.csv: labels optional), or a name under --data-root. "
               "Run 'amad-fast SUBCOMMAND --help' for the options of each subcommand.",
    )
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a detector on a data set's training series and save it",
                       description="Train AMAD on the training part of DATA (a data set, or one .csv file of "
                                   "normal operation: labels and a test file are optional) and save the "
                                   "detector. It prints the columns used, the planned work and a time estimate "
                                   "first. Under torchrun the training is data-parallel (gloo on CPU, nccl on "
                                   "CUDA).")
    t.add_argument("data", help="data set (see 'amad-fast --help')")
    t.add_argument("--out", "-o", required=True, help="where to write the detector (.pt)")
    _add_data_root(t)
    t.add_argument("--max-train", type=_positive_int, default=None, metavar="N", help="use only the first N training steps")
    _add_detector_options(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="score a series with a saved detector and write a CSV",
                       description="Score DATA (a data set's test series, or a .npy/.csv series file) with a "
                                   "saved detector; writes t, score, threshold, prediction[, label] per step.")
    s.add_argument("detector", help="detector file written by 'amad-fast train'")
    s.add_argument("data", help="data set spec, or a .npy (T, C) / .csv series file")
    s.add_argument("--out", "-o", default="scores.csv", help="CSV to write")
    s.add_argument("--split", choices=SPLITS, default="test", help="which part of a data set to score")
    s.add_argument("--no-labels", dest="with_labels", action="store_false",
                   help="leave the label column out even when the data has labels")
    _add_scoring_overrides(s, "score only the first N steps")
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("evaluate", help="metrics JSON and a PNG plot from scores+labels or detector+data",
                       description="Every metric of amad_fast.metrics.evaluate (point-adjusted and point-wise "
                                   "P/R/F1, AUROC, AUPR, best F1, affiliation) and a plot of the score against "
                                   "the threshold with labelled segments shaded.")
    e.add_argument("--scores", help="scores CSV from 'amad-fast score' (with a label column, or give --labels)")
    e.add_argument("--labels", help="labels file (.npy or one-column CSV) for --scores")
    e.add_argument("--detector", help="detector file (scores --data's test series)")
    e.add_argument("--data", help="labelled data set for --detector")
    e.add_argument("--threshold-value", type=float, default=None, help="use this threshold instead")
    e.add_argument("--contamination", type=_contamination, default=DEFAULT_CONTAMINATION,
                   help="expected fraction c of anomalous steps, in (0, 1), for a scores CSV without a threshold "
                        "column: the threshold is the 1-c quantile of its scores (default: %(default)s)")
    e.add_argument("--out", "-o", default="metrics.json", help="metrics JSON to write")
    e.add_argument("--plot", default=None, help="PNG to write (default: beside --out; '' for none)")
    _add_scoring_overrides(e, "evaluate only the first N test steps")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="train a small detector on built-in synthetic data and report (about a minute)",
                       description="Train a small AMAD on the seeded synthetic benchmark, score its test part, "
                                   "print the metrics and write detector.pt, scores.csv, metrics.json and scores.png.")
    d.add_argument("--out", "-o", default="amad-demo", help="output directory")
    d.add_argument("--data", default=DEMO_DATA, help="data set to run the demo on")
    _add_detector_options(d, overrides=DEMO_SIZES)
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("benchmark", help="every method on every entity of a data set: per-entity and aggregate "
                                         "threshold-free metrics",
                       description="Fit, score and evaluate each method on each entity of DATA on its own (a "
                                   "multi-entity set such as SMAP with its SMAP_entities.csv, SMD machines, a folder "
                                   "of NAME_train.csv/NAME_test.csv pairs, synthetic:entities=K; any other data set "
                                   "is one entity). Metrics: VUS-PR, AUPR, AUROC, VUS-ROC, best F1. Writes OUT/"
                                   "benchmark.md, .json, .png and one JSON per finished entity under OUT/entities/; "
                                   "running again with the same OUT skips what is already done.")
    m.add_argument("data", help="data set (see 'amad-fast --help')")
    m.add_argument("--methods", default="amad,l2,pca,knn,iforest,random",
                   help=f"comma-separated methods among {', '.join(METHODS)} (default: %(default)s)")
    m.add_argument("--out", "-o", required=True, help="output folder (reports and per-entity results)")
    m.add_argument("--entities", default=None, help="comma-separated entity names (default: all)")
    m.add_argument("--param", action="append", metavar="METHOD.KEY=VALUE",
                   help="a constructor parameter of one method, e.g. amad.epochs=3 or knn.n_neighbors=5 (repeatable)")
    m.add_argument("--workers", type=_positive_int, default=None,
                   help="entities run in this many processes, each with its share of the CPU threads (default: "
                        "one per CPU core, at most 4; 1 when CUDA is available)")
    m.add_argument("--seed", type=_seed, default=0, help="seed given to every method (default: %(default)s)")
    m.add_argument("--no-resume", dest="resume", action="store_false",
                   help="recompute entities already stored in OUT instead of keeping them")
    _add_data_root(m)
    m.set_defaults(func=cmd_benchmark)

    w = sub.add_parser("watch", help="score rows as they arrive (CSV on stdin or a growing file) and print alarms",
                       description="Read rows of C comma-separated numbers (a header line is skipped) from standard "
                                   "input or --input FILE, score each with a saved AMAD detector as soon as it is "
                                   "computable (nothing for the first window_size - 1 rows; the numbers of "
                                   "decision_function(X, causal=True)) and print 'step,score,alarm' per row, flushed "
                                   "at once. A malformed line is reported on stderr and skipped; the run ends at the "
                                   "end of input (status 0) or on Ctrl-C (status 130), with a summary on stderr.")
    w.add_argument("detector", help="AMAD detector file written by 'amad-fast train'")
    w.add_argument("--input", "-i", default="-", help="CSV file to read (default: standard input)")
    w.add_argument("--follow", "-f", action="store_true",
                   help="keep reading --input as it grows (like tail -f) until Ctrl-C")
    w.add_argument("--threshold-value", type=float, default=None,
                   help="alarm above this score (default: the detector's threshold fixed at fit time)")
    _add_device_overrides(w)
    w.set_defaults(func=cmd_watch)

    x = sub.add_parser("export", help="write a saved detector's scoring as one TorchScript file (needs only torch)",
                       description="Write DETECTOR (an AMAD detector file) to OUT as one TorchScript file that "
                                   "scores a raw (T, C) series exactly as the detector's decision_function does "
                                   "(standardisation, windows, scales, smoothing; the reference attention on the "
                                   "CPU), loadable with torch.jit.load where amad_fast is not installed; the fixed "
                                   "threshold is its 'threshold' attribute. ONNX is not offered: the reference "
                                   "attention's logaddexp has no ONNX export in torch.")
    x.add_argument("detector", help="AMAD detector file written by 'amad-fast train'")
    x.add_argument("out", help="where to write the TorchScript file")
    x.add_argument("--format", choices=EXPORT_FORMATS, default="torchscript", help="file format")
    x.set_defaults(func=cmd_export)

    v = sub.add_parser("env", help="versions, device, backends and extension build info",
                       description="Print what this installation runs on: the amad_fast, Python, torch and triton "
                                   "versions, the device (CUDA or the CPU cores and torch threads), whether the C++ "
                                   "extension amad_fast._C is loaded and what it was built for, and each AutoMask "
                                   "attention backend in priority order with whether it is available here and why "
                                   "not. Takes no options; run it first on a new machine, and quote its output in "
                                   "bug reports.")
    v.set_defaults(func=cmd_env)

    b = sub.add_parser("bench", help="throughput benchmarks (see 'amad-fast bench --help')")
    try:
        from amad_fast.bench import command as bench

        bench.add_arguments(b)
    except ImportError as exc:
        b.description = f"unavailable: amad_fast.bench could not be imported ({exc})"
    b.set_defaults(func=cmd_bench)
    return p


def _one_line(exc: BaseException) -> str:
    """The message of an error a user can act on, as one line; an OSError names its path(s)."""
    if isinstance(exc, OSError) and exc.strerror:
        names = [n for n in (exc.filename, exc.filename2) if n is not None]
        text = f"{' -> '.join(map(str, names))}: {exc.strerror}" if names else exc.strerror
        if not names or type(exc) not in (OSError, FileNotFoundError, PermissionError, IsADirectoryError,
                                          NotADirectoryError, FileExistsError):
            text = f"{type(exc).__name__}: {text}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``amad-fast`` / ``python -m amad_fast``; returns the exit status.

    Errors about the inputs, files and outputs (ValueError, which includes every damaged or
    foreign file; OSError of any kind; a checkpoint directory in use by another run; scores that
    came out non-finite) are printed as one line ``amad-fast SUBCOMMAND: error: ...`` that names
    the argument or path, with exit status 2; anything else is a bug and keeps its traceback."""
    from amad_fast.files import DirectoryInUseError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, DirectoryInUseError, FloatingPointError) as exc:
        print(f"amad-fast {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
