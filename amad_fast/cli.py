"""``amad-fast``: train, score, evaluate, demo, env and bench from the command line.

Every subcommand has ``--help``. Data arguments take what :func:`amad_fast.data.load_dataset`
takes (``synthetic[:key=value,...]``, a data directory such as ``../shared/data/SMAP``, a
``NAME_train.npy`` file, a ``NAME_train.csv`` file (with ``NAME_test.csv`` beside it, a pair),
any one ``.csv`` series file (labels optional), or a name under ``--data-root``/``$AMAD_DATA``);
``score`` also takes a plain ``.npy`` (T, C) series file. Which CSV columns are used and which
are ignored (index, timestamp, text, labels) is printed as one line.
"""
from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import sys
import time
import warnings
from typing import Any, Dict, Optional, Sequence

import numpy as np

__all__ = ["main", "build_parser"]

# help for every AMADDetector parameter exposed as an option of `train` and `demo`
DETECTOR_HELP: Dict[str, str] = {
    "window_size": "window length L in time steps",
    "d_model": "model width (embedding size)",
    "n_heads": "attention heads per block (d_model/n_heads must be even)",
    "n_layers": "number of AutoMask blocks",
    "num_scales": "AutoMask scales S (frequency ladders combined by learned weights)",
    "d_ff": "hidden width of the feed-forward layers",
    "dropout": "dropout on the residual branches and the embedding",
    "maxmin": "Max-Min strategy: exact (three gradient routes), joint (one backward), off (no divergence terms)",
    "k": "weight k of the divergence terms D^M, D^G",
    "mu": "weight mu of the local-global contrastive loss",
    "tau": "temperature of the contrastive InfoNCE loss",
    "lr": "Adam learning rate",
    "epochs": "maximum training epochs (early stopping may end sooner)",
    "batch_size": "training windows per optimiser step (the global batch under torchrun)",
    "train_stride": "step between the starts of training windows",
    "val_fraction": "fraction of the training series held out for early stopping and the error_norm scale",
    "val_split": "where the held-out fraction sits: tail (the end of the series) or blocks (the end of each "
                 "of many blocks of ~2*window_size/val_fraction steps, so concatenated entities all train)",
    "patience": "epochs without validation improvement before stopping",
    "score": "anomaly score: recon_js (softmax(-T*js) x squared error) or recon (squared error)",
    "error_norm": "per-channel error weighting: channel (divide by the validation-split error) or none (spec mean)",
    "position_norm": "divide each window position's error by its training mean (train), so a series' first and "
                     "last steps score like the middle, or none",
    "binary_scaling": "input scaling of two-valued (on/off) channels: unit (0/1) or zscore like the others",
    "smooth": "centred moving average of the scores over this many steps (1 = off)",
    "score_stride": "step between scoring windows; each step's score is the mean over the windows covering it "
                    "(window_size = the paper's non-overlapping windows)",
    "threshold": "threshold rule: train (percentile 100-r of the training scores, fixed at fit time), pot (peaks "
                 "over threshold on the training scores), or paper (the published papers' protocol, to compare "
                 "with their tables: percentile of the training and the scored data's scores together, so about "
                 "r%% of any scored data is flagged, even clean data)",
    "anomaly_ratio": "anomaly ratio r in percent for the percentile thresholds (SMAP/MSL 1, SMD 0.5, SWaT 0.1)",
    "temperature": "temperature T of the recon_js score",
    "backend": "AutoMask attention backend: auto, reference, triton or cpp",
    "device": "torch device: auto (cuda when available, else cpu), cpu, cuda or cuda:N",
    "seed": "random seed (model init, data order, dropout)",
    "checkpoint_dir": "write a resumable training checkpoint (last.pt) here every epoch",
    "resume": "continue training from CHECKPOINT_DIR/last.pt",
    "progress": "show a progress bar (only when stderr is a terminal)",
    "score_batch_size": "windows per batch when scoring",
    "nan_policy": "non-finite input values: interpolate (with a warning) or raise",
}

# what an option whose default is None means, said in --help instead of "None"
NONE_MEANS: Dict[str, str] = {"d_ff": "2*d_model", "smooth": "window_size // 2", "score_stride": "window_size // 10",
                              "checkpoint_dir": "none, no checkpoints"}

DEMO_SIZES = dict(window_size=50, d_model=32, n_heads=4, n_layers=2, num_scales=2, d_ff=64, epochs=4,
                  train_stride=10, batch_size=32, lr=1e-3, threshold="train", anomaly_ratio=5.0)
DEMO_DATA = "synthetic:length=4000,channels=6,seed=0,train_length=6000"


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count of steps, rows or workers)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer (at least 1), got {text!r}")
    return value


def _seed(text: str) -> int:
    """argparse type: a seed, an integer in [0, 2**63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63), got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer seed in [0, 2**63), got {text!r}")
    return value


def _detector_defaults() -> Dict[str, Any]:
    from .detector import AMADDetector

    return {p.name: p.default for p in inspect.signature(AMADDetector.__init__).parameters.values()
            if p.name != "self"}


def _add_detector_options(p: argparse.ArgumentParser, overrides: Optional[Dict[str, Any]] = None) -> None:
    g = p.add_argument_group("detector and training options")
    from .data import BINARY_SCALINGS
    from .detector import ERROR_NORMS, POSITION_NORMS, SCORES
    from .dispatch import BACKENDS
    from .estimator import THRESHOLDS
    from .train import MAXMIN_MODES, VAL_SPLITS

    choices = {"maxmin": MAXMIN_MODES, "score": SCORES, "error_norm": ERROR_NORMS, "position_norm": POSITION_NORMS,
               "binary_scaling": BINARY_SCALINGS, "val_split": VAL_SPLITS, "threshold": THRESHOLDS, "backend": ("auto", *BACKENDS),
               "nan_policy": ("interpolate", "raise")}
    for name, default in _detector_defaults().items():
        default = (overrides or {}).get(name, default)
        flag = "--" + name.replace("_", "-")
        help_text = DETECTOR_HELP[name] + " (default: " + (NONE_MEANS[name] if default is None else "%(default)s") + ")"
        if isinstance(default, bool):
            g.add_argument(flag, dest=name, default=default, action=argparse.BooleanOptionalAction, help=help_text)
        else:
            kind = type(default) if default is not None else (str if name == "checkpoint_dir" else int)
            if name == "seed":
                kind = _seed
            elif name in ("epochs", "batch_size", "train_stride", "window_size", "d_model", "n_heads", "n_layers",
                          "num_scales", "patience", "score_batch_size", "d_ff", "smooth", "score_stride"):
                kind = _positive_int
            g.add_argument(flag, dest=name, type=kind, default=default, choices=choices.get(name), help=help_text)


def _detector_from_args(args) -> "Any":
    from .detector import AMADDetector

    return AMADDetector(**{name: getattr(args, name) for name in _detector_defaults()})


def _add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None,
                   help="directory to look up bare data-set names in (also $AMAD_DATA)")


def _add_scoring_overrides(p: argparse.ArgumentParser, max_steps_help: str) -> None:
    """Options shared by the subcommands that run a saved detector: step limit, device, backend, data root."""
    p.add_argument("--max-steps", type=_positive_int, default=None, metavar="N", help=max_steps_help)
    p.add_argument("--device", default=None, help="override the stored device")
    p.add_argument("--backend", default=None, help="override the stored attention backend")
    _add_data_root(p)


def _limit(arr, n: Optional[int]):
    return arr if n is None or arr is None else arr[:n]


# -- outputs -----------------------------------------------------------------------------------

def write_scores_csv(path: str, scores: np.ndarray, threshold: Optional[float] = None,
                     labels: Optional[np.ndarray] = None) -> None:
    """CSV with one row per time step: t, score[, threshold, prediction][, label]."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    header = ["t", "score"] + (["threshold", "prediction"] if threshold is not None else []) + \
        (["label"] if labels is not None else [])
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for t, s in enumerate(scores):
            row = [t, repr(float(s))]
            if threshold is not None:
                row += [repr(float(threshold)), int(s > threshold)]
            if labels is not None:
                row.append(int(labels[t]))
            w.writerow(row)


def read_scores_csv(path: str):
    """(scores, threshold or None, labels or None) from a CSV written by ``amad-fast score``.
    A file without a 'score' column, or with a row whose score is not a number, is a ValueError
    naming the path (and the line)."""
    with open(path, newline="") as fh:
        header = [h.strip().lower() for h in next(csv.reader(fh), [])]
    if "score" not in header:
        raise ValueError(f"{path}: expected a scores CSV with a 'score' column (as 'amad-fast score' writes), "
                         f"got columns {header}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty file body: handled below
        raw = np.genfromtxt(path, delimiter=",", skip_header=1, ndmin=2)
    if raw.size == 0:
        raise ValueError(f"{path}: expected at least one row of scores after the header, got none")
    if raw.shape[1] != len(header):
        raise ValueError(f"{path}: expected {len(header)} fields per row (as in the header), got {raw.shape[1]}")
    col = {h: i for i, h in enumerate(header)}
    scores = raw[:, col["score"]]
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(f"{path}, line {int(np.flatnonzero(bad)[0]) + 2}, column 'score': expected a finite number")
    threshold = float(raw[0, col["threshold"]]) if "threshold" in col and raw.shape[0] else None
    labels = raw[:, col["label"]].astype(np.int8) if "label" in col else None
    return scores, threshold, labels


BAND_MIN_FRACTION = 0.004  # a labelled segment is drawn at least this fraction of the plot wide (~5 px)


def anomaly_bands(labels: np.ndarray, min_fraction: float = BAND_MIN_FRACTION):
    """(start, end) x-ranges to shade for the labelled segments of ``labels``: each segment's steps
    [s - 0.5, e - 0.5], widened about its centre to at least ``min_fraction`` of the series' length,
    so that a 5-step anomaly in a series of thousands of steps is visible, not a hair line."""
    y = np.asarray(labels).astype(np.int8).ravel()
    d = np.diff(np.concatenate(([0], y, [0])))
    least = max(1.0, min_fraction * y.size)
    out = []
    for s, e in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):
        a, b = s - 0.5, e - 0.5
        if b - a < least:
            mid = (a + b) / 2
            a, b = mid - least / 2, mid + least / 2
        out.append((float(a), float(b)))
    return out


def plot_title(data: str, detector: str, rule: str, m: Dict[str, Any]) -> str:
    """Two lines: what was scored by what, and the threshold rule with the headline metrics."""
    def f(k: str) -> str:
        v = m.get(k)
        return "n/a" if v is None else f"{v:.3f}"

    return (f"{data} scored by {detector}\nthreshold {rule}: F1 {f('f1')} (point-adjusted {f('pa_f1')}), "
            f"AUROC {f('auroc')}, AUPR {f('aupr')}, VUS-PR {f('vus_pr')}")


def plot_scores(path: str, scores: np.ndarray, threshold: float, labels: Optional[np.ndarray],
                title: str = "") -> None:
    """PNG of the score against the threshold, labelled anomalous segments shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 3.5))
    t = np.arange(scores.size)
    ax.plot(t, scores, lw=0.6, color="tab:blue", label="score")
    ax.axhline(threshold, color="tab:red", lw=1.0, ls="--", label=f"threshold {threshold:.3g}")
    if labels is not None and labels.any():
        for s, e in anomaly_bands(labels):
            ax.axvspan(s, e, color="tab:orange", alpha=0.3, lw=0)
        ax.plot([], [], color="tab:orange", alpha=0.3, lw=6, label="labelled anomaly")
    positive = scores[scores > 0]
    if positive.size and scores.min() >= 0 and positive.max() / max(positive.min(), 1e-300) > 1e3:
        ax.set_yscale("log")
    ax.set_xlabel("time step")
    ax.set_ylabel("anomaly score")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_json(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def _detector_summary(det) -> str:
    """'AMAD d_model 64 x 3 blocks, window 100, recon score' (the parameters that say what it is)."""
    return (f"AMAD d_model {det.d_model} x {det.n_layers} blocks, window {det.window_size}, {det.score} score, "
            f"{len(getattr(det, 'history_', []) or [])} epochs")


def _evaluate_outputs(scores, labels, threshold, out_json, out_png, info: Dict[str, Any],
                      series: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """metrics.evaluate of the scores (VUS window by TSB-AD's rule from the series' first channel
    when the series is known, else TSB-AD's default), written as JSON and a plot."""
    from . import metrics

    if labels is None:
        raise ValueError("labels: evaluate needs labels (a 'label' column, --labels, or a labelled data set)")
    result = dict(info)
    window = None if series is None else metrics.sliding_window_length(np.asarray(series)[:, 0])
    result["metrics"] = metrics.evaluate(scores, labels, threshold, vus_window=window)
    if out_json:
        _write_json(out_json, result)
    if out_png:
        title = plot_title(info.get("data_name", "scores"), info.get("detector_name", "a detector"),
                           info.get("threshold_rule", "given"), result["metrics"])
        plot_scores(out_png, scores, threshold, labels, title=title)
    return result


def _print_metrics(m: Dict[str, Any], stream=None) -> None:
    stream = sys.stdout if stream is None else stream
    keys = ("threshold", "pa_precision", "pa_recall", "pa_f1", "precision", "recall", "f1", "auroc", "aupr",
            "vus_pr", "vus_roc", "best_f1", "affiliation_precision", "affiliation_recall", "affiliation_f1")
    for k in keys:
        v = m.get(k)
        print(f"  {k:<22} {'n/a' if v is None else format(v, '.4f') if k != 'threshold' else format(v, '.6g')}",
              file=stream)


# -- data helpers ----------------------------------------------------------------------------------

def _load_split(spec: str, data_root: Optional[str]):
    from .data import load_dataset

    return load_dataset(spec, data_root=data_root)


def _load_series(spec: str, data_root: Optional[str], split: str):
    """(series, labels or None, name) from a plain .npy/.csv series file or a data-set spec."""
    from .data import load_npy

    base = os.path.basename(spec)
    if os.path.isfile(spec) and spec.endswith(".npy") and not base.endswith("_train.npy"):
        return load_npy(spec, "a (T, C) series"), None, base
    ds = _load_split(spec, data_root)
    _say_columns(ds)
    if ds.info.get("layout") == "csv_file":  # one series file: it is the series to score
        return ds.test, ds.test_labels, base
    if split == "train":
        return ds.train, ds.train_labels, f"{ds.name} train"
    return ds.test, ds.test_labels, f"{ds.name} test"


def _say_columns(ds) -> None:
    """The one line saying which CSV columns are the channels and which are ignored, and why."""
    if ds.info.get("columns"):
        print(f"columns: {ds.info['columns']}")


# -- subcommands ---------------------------------------------------------------------------------

def cmd_train(args) -> int:
    from .files import check_writable_dir, check_writable_file
    from .train import init_distributed_from_env

    det = _detector_from_args(args)  # every option is checked before anything is loaded or trained
    check_writable_file(args.out, "--out")
    if args.checkpoint_dir:
        check_writable_dir(args.checkpoint_dir, "--checkpoint-dir")
    distributed = init_distributed_from_env(args.device)
    import torch

    rank = torch.distributed.get_rank() if distributed else 0
    ds = _load_split(args.data, args.data_root)
    train = _limit(ds.train, args.max_train)
    if rank == 0:
        _say_columns(ds)
        print(f"training on {ds.name}: {train.shape[0]} steps x {train.shape[1]} channels", flush=True)
    t0 = time.perf_counter()
    det.fit(train)
    seconds = time.perf_counter() - t0
    if rank == 0:
        det.save(args.out)
        last = det.history_[-1] if det.history_ else {}
        flagged = float(np.mean(det.train_scores_ > det.threshold_)) * 100 if det.threshold_ is not None else None
        print(f"trained on {ds.name} train {train.shape} in {seconds:.1f}s "
              f"({len(det.history_)} epoch{'s' if len(det.history_) != 1 else ''}, best epoch {det.best_epoch_ + 1}, "
              f"last rec {last.get('rec', float('nan')):.4g}); "
              + (f"threshold ({det.threshold}) {det.threshold_:.6g}, {flagged:.2f}% of the training steps above it; "
                 if flagged is not None else f"threshold rule {det.threshold} (set when scoring); ")
              + f"saved {args.out}")
    if distributed:
        torch.distributed.destroy_process_group()
    return 0


def cmd_score(args) -> int:
    from .detector import AMADDetector
    from .files import check_writable_file

    check_writable_file(args.out, "--out")
    det = AMADDetector.load(args.detector, device=args.device, backend=args.backend)
    series, labels, name = _load_series(args.data, args.data_root, args.split)
    series = _limit(series, args.max_steps)
    labels = _limit(labels, args.max_steps)
    t0 = time.perf_counter()
    scores = det.decision_function(series)
    seconds = time.perf_counter() - t0
    threshold = det.threshold_for(scores)
    write_scores_csv(args.out, scores, threshold, labels if args.with_labels else None)
    print(f"scored {name} {series.shape} in {seconds:.2f}s ({det.threshold} threshold {threshold:.6g}, "
          f"{int((scores > threshold).sum())} steps flagged); wrote {args.out}")
    return 0


def _lines(source, follow: bool, poll_s: float = 0.2):
    """The lines of ``source`` as they arrive; with ``follow`` a file's end is not the end: wait
    for more (like ``tail -f``) until interrupted."""
    while True:
        line = source.readline()
        if line:
            yield line
        elif follow:
            time.sleep(poll_s)
        else:
            return


def cmd_watch(args) -> int:
    """Score rows as they arrive (CSV on stdin or a growing file) with a saved AMAD detector."""
    from .detector import AMADDetector

    det = AMADDetector.load(args.detector, device=args.device, backend=args.backend)
    if args.threshold_value is not None:
        threshold = float(args.threshold_value)
    elif det.threshold == "paper":
        raise ValueError("--threshold-value: expected a number: the detector's threshold rule 'paper' needs the "
                         "whole scored series, which a stream never has (give --threshold-value, or train with "
                         "--threshold train)")
    else:
        threshold = float(det.threshold_)
    if args.follow and args.input == "-":
        raise ValueError("--follow: expected a file to follow with --input FILE, got standard input (which is "
                         "followed anyway until it ends)")
    source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8", newline="")
    where = "<stdin>" if args.input == "-" else args.input
    C = det.n_channels_
    live = det.stream()
    out = sys.stdout
    skipped = alarms = 0
    interrupted = False
    seen_data = False

    def skip(lineno: int, why: str) -> None:
        nonlocal skipped
        skipped += 1
        print(f"amad-fast watch: {where} line {lineno}: {why}; skipped", file=sys.stderr, flush=True)

    print(f"amad-fast watch: threshold {threshold:.6g} "
          f"({'given' if args.threshold_value is not None else det.threshold}), {C} channels, first scores after "
          f"{det.window_size} rows", file=sys.stderr, flush=True)
    print("step,score,alarm", file=out, flush=True)  # a plain CSV header: stdout is data only
    try:
        for lineno, line in enumerate(_lines(source, args.follow), 1):
            text = line.strip()
            if not text:
                continue
            fields = next(csv.reader([text]))
            try:
                row = np.array([float(f) for f in fields], dtype=np.float64)
            except ValueError:
                if not seen_data and lineno == 1:  # a header line
                    continue
                skip(lineno, f"expected {C} numbers, got {text[:80]!r}")
                continue
            seen_data = True
            if row.shape[0] != C:
                skip(lineno, f"expected {C} numbers, got {row.shape[0]}")
                continue
            if not np.isfinite(row).all():
                skip(lineno, "expected finite numbers, got NaN/Inf (a stream cannot interpolate a missing value)")
                continue
            scores = live.update(row)
            first = live.n_scored - len(scores)
            for i, score in enumerate(scores):
                alarm = int(score > threshold)
                alarms += alarm
                out.write(f"{first + i},{score:.6g},{alarm}\n")
            if len(scores):
                out.flush()
    except KeyboardInterrupt:
        interrupted = True
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        sys.stderr.close()
        return 0
    finally:
        if source is not sys.stdin:
            source.close()
    print(f"amad-fast watch: {live.n_seen} rows, {live.n_scored} scored, {alarms} alarms, {skipped} lines skipped"
          + (" (interrupted)" if interrupted else ""), file=sys.stderr, flush=True)
    return 130 if interrupted else 0


def cmd_evaluate(args) -> int:
    from .data import check_labels

    from .files import check_writable_file

    if (args.scores is None) == (args.detector is None):
        raise SystemExit("evaluate: give exactly one of --scores CSV or --detector PATH (with --data)")
    out_json = args.out or "metrics.json"
    out_png = args.plot if args.plot is not None else os.path.splitext(out_json)[0] + ".png"
    check_writable_file(out_json, "--out")
    if out_png:
        check_writable_file(out_png, "--plot")
    if args.scores is not None:
        scores, threshold, labels = read_scores_csv(args.scores)
        source = {"scores": os.path.abspath(args.scores)}
        data_name, det_name = os.path.basename(args.scores), "the detector that wrote it"
        if args.labels is not None:
            from .data import load_csv, load_npy

            lab = (load_npy(args.labels, "labels") if args.labels.endswith(".npy")
                   else load_csv(args.labels, label_column=0, header=False, allow_no_values=True).labels)
            labels = check_labels(lab, "labels", scores.size, "the scores")
        if args.threshold_value is not None:
            threshold, rule = args.threshold_value, "given"
        elif threshold is not None:
            rule = "from the scores file"
        else:
            threshold = float(np.percentile(scores, 100.0 - args.anomaly_ratio))
            rule = f"percentile {100 - args.anomaly_ratio} of these scores"
    else:
        from .detector import AMADDetector

        if args.data is None:
            raise SystemExit("evaluate: --detector needs --data")
        det = AMADDetector.load(args.detector, device=args.device, backend=args.backend)
        series, labels, name = _load_series(args.data, args.data_root, "test")
        series, labels = _limit(series, args.max_steps), _limit(labels, args.max_steps)
        scores = det.decision_function(series)
        threshold = det.threshold_for(scores) if args.threshold_value is None else args.threshold_value
        rule = det.threshold if args.threshold_value is None else "given"
        source = {"detector": os.path.abspath(args.detector), "data": args.data}
        data_name, det_name = name, f"{os.path.basename(args.detector)} ({_detector_summary(det)})"
    res = _evaluate_outputs(scores, labels, threshold, out_json, out_png or None,
                            {**source, "threshold_rule": rule, "data_name": data_name, "detector_name": det_name},
                            series=series if args.scores is None else None)
    print(f"threshold ({rule}):")
    _print_metrics(res["metrics"])
    print(f"wrote {out_json}" + (f" and {out_png}" if out_png else ""))
    return 0


def cmd_demo(args) -> int:
    from . import metrics

    from .files import check_writable_dir

    out = args.out
    det = _detector_from_args(args)
    check_writable_dir(out, "--out")
    if args.checkpoint_dir:
        check_writable_dir(args.checkpoint_dir, "--checkpoint-dir")
    os.makedirs(out, exist_ok=True)
    ds = _load_split(args.data, None)
    print(f"demo: {ds!r}, anomalies {ds.anomaly_ratio_percent:.2f}% of test steps")
    t0 = time.perf_counter()
    det.fit(ds.train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = det.decision_function(ds.test)
    score_s = time.perf_counter() - t0
    threshold = det.threshold_for(scores)
    print(f"trained {len(det.history_)} epochs in {fit_s:.1f}s, scored {ds.test.shape[0]} steps in {score_s:.2f}s")
    det.save(os.path.join(out, "detector.pt"))
    write_scores_csv(os.path.join(out, "scores.csv"), scores, threshold, ds.test_labels)
    info = {"data": args.data, "detector": det.get_params(), "fit_seconds": fit_s, "score_seconds": score_s,
            "history": det.history_, "threshold_rule": det.threshold, "data_name": f"{ds.name} test",
            "detector_name": f"the demo detector ({_detector_summary(det)})"}
    res = _evaluate_outputs(scores, ds.test_labels, threshold, os.path.join(out, "metrics.json"),
                            os.path.join(out, "scores.png"), info, series=ds.test)
    # threshold-free and the other rule, for context
    other = metrics.paper_threshold(det.train_scores_, scores, det.anomaly_ratio) if det.threshold != "paper" \
        else metrics.train_threshold(det.train_scores_, det.anomaly_ratio)
    res["other_threshold"] = metrics.evaluate(scores, ds.test_labels, other, vus_window=res["metrics"]["vus_window"])
    _write_json(os.path.join(out, "metrics.json"), res)
    print(f"metrics ({det.threshold} threshold):")
    _print_metrics(res["metrics"])
    print(f"wrote {', '.join(sorted(os.listdir(out)))} in {out}")
    return 0


def _parse_param(text: str):
    """'METHOD.KEY=VALUE' → (method, key, value), the value read as int, float, bool, None or text."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ValueError(f"--param: expected METHOD.KEY=VALUE (e.g. amad.epochs=3), got {text!r}")
    lhs, raw = text.split("=", 1)
    method, key = lhs.split(".", 1)
    low = raw.strip().lower()
    value: Any = {"true": True, "false": False, "none": None}.get(low, raw)
    if value is raw:
        for conv in (int, float):
            try:
                value = conv(raw)
                break
            except ValueError:
                continue
    return method.strip(), key.strip().replace("-", "_"), value


def cmd_benchmark(args) -> int:
    from .detection_benchmark import parse_methods, run_benchmark, write_reports

    from .files import check_writable_dir

    methods = parse_methods(args.methods)
    check_writable_dir(args.out, "--out")
    params: Dict[str, Dict[str, Any]] = {}
    for text in args.param or []:
        method, key, value = _parse_param(text)
        if method not in methods:
            raise ValueError(f"--param {text!r}: expected a parameter of one of the chosen methods {methods}, "
                             f"got method {method!r}")
        params.setdefault(method, {})[key] = value
    entities = [e.strip() for e in args.entities.split(",") if e.strip()] if args.entities else None
    workers = args.workers
    if workers is None:
        import torch

        workers = 1 if torch.cuda.is_available() else max(1, min(4, os.cpu_count() or 1))
    result = run_benchmark(args.data, methods, out_dir=args.out, entities=entities, params=params, seed=args.seed,
                           workers=workers, resume=args.resume, data_root=args.data_root)
    paths = write_reports(result, args.out)
    agg = result.aggregates
    print(f"{len(result.records)} entities in {result.info['seconds']:.0f} s; mean over entities:")
    print("  " + f"{'method':<10}" + "".join(f"{k:>9}" for k in ("VUS-PR", "AUPR", "AUROC", "VUS-ROC", "best F1")))
    for m in methods:
        a = agg["methods"][m]
        print("  " + f"{m:<10}" + "".join(f"{'n/a' if a[k]['mean'] is None else format(a[k]['mean'], '.3f'):>9}"
                                          for k in ("vus_pr", "aupr", "auroc", "vus_roc", "best_f1")))
    print(f"wrote {', '.join(paths)}")
    return 0


def cmd_env(args) -> int:
    import platform

    import torch

    from . import __version__, available_backends
    from ._extension import build_info, extension_error

    lines = [f"amad_fast {__version__}", f"python {platform.python_version()} ({platform.platform()})",
             f"torch {torch.__version__}"]
    try:
        import triton

        lines.append(f"triton {triton.__version__} (TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')})")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"triton not importable ({type(exc).__name__}: {exc})")
    if torch.cuda.is_available():
        lines.append(f"device cuda: {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, "
                     f"{torch.cuda.device_count()} device(s))")
    else:
        lines.append(f"device cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads); CUDA not available")
    lines.append(f"detectors: device='auto' (the default) runs on {'cuda' if torch.cuda.is_available() else 'cpu'}")
    err = extension_error()
    lines.append("extension amad_fast._C: " + (f"not loaded ({err})" if err else f"loaded, built for {build_info()}"))
    lines.append("backends (priority order):")
    for status in available_backends().values():
        lines.append(f"  {status}")
    print("\n".join(lines))
    return 0


def cmd_bench(args) -> int:
    try:
        from . import bench
    except ImportError as exc:
        print(f"amad-fast bench: the benchmark module amad_fast.bench could not be imported ({exc})", file=sys.stderr)
        return 2
    return int(bench.run(args) or 0)


# -- parser ----------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
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
    s.add_argument("--split", choices=("test", "train"), default="test", help="which part of a data set to score")
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
    e.add_argument("--anomaly-ratio", type=float, default=1.0,
                   help="percent, for a scores CSV without a threshold column: percentile 100-r of its scores")
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
                   help="comma-separated methods among amad, random, l2, maxz, pca, knn, iforest (default: %(default)s)")
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
    w.add_argument("--device", default=None, help="override the stored device")
    w.add_argument("--backend", default=None, help="override the stored attention backend")
    w.set_defaults(func=cmd_watch)

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
        from . import bench

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
    from .files import DirectoryInUseError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, DirectoryInUseError, FloatingPointError) as exc:
        print(f"amad-fast {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
