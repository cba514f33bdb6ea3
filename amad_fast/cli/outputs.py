"""What the commands write and read: scores CSVs, score plots, metric JSON, and the one line that says
which CSV columns were used."""
from __future__ import annotations

import csv
import json
import os
import sys
import warnings
from typing import Any, Dict, Optional

import numpy as np


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
    from amad_fast import metrics

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
    from amad_fast.data import load_dataset

    return load_dataset(spec, data_root=data_root)


#: the parts of a data set ``amad-fast score --split`` can score
SPLITS = ("test", "train")


def _load_series(spec: str, data_root: Optional[str], split: str):
    """(series, labels or None, name) from a plain .npy/.csv series file or a data-set spec."""
    from amad_fast.data import load_npy

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
