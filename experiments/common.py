"""Shared pieces of the experiment scripts: AMAD and baseline scores through ONE evaluation path
(amad_fast.metrics.evaluate with the paper and train thresholds), and result-table writing."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from amad_fast import metrics  # noqa: E402

from amad_fast import AMADDetector  # noqa: E402
from amad_fast.data import SeriesSplit, Standardizer, load_dataset, make_synthetic  # noqa: E402
from amad_fast.detection import thresholds  # noqa: E402

DATA = os.environ.get("AMAD_DATA", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                "..", "shared", "data"))
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KEYS = ("pa_f1", "precision", "recall", "f1", "auroc", "aupr", "best_f1", "affiliation_f1")
FREE_KEYS = ("auroc", "aupr", "best_f1")


def free_metrics(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """The threshold-free point-wise metrics (AUROC, AUPR, best F1 over thresholds)."""
    return {"auroc": metrics.auroc(scores, labels), "aupr": metrics.aupr(scores, labels),
            "best_f1": metrics.best_f1(scores, labels).f1}


def seed_summary(row: Dict[str, Any], per_seed: List[Dict[str, Any]], keys=FREE_KEYS,
                 spread: str = "per seed") -> Dict[str, Any]:
    """``row`` plus, for each key, the mean over seeds and beside it either every seed's value
    (``spread="per seed"``) or the standard deviation over seeds (``spread="sd"``)."""
    for k in keys:
        vals = [m[k] for m in per_seed]
        row[k] = float(np.mean(vals))
        if spread == "sd":
            row[k + " sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        else:
            row[k + " per seed"] = " / ".join(f"{v:.3f}" for v in vals)
    return row


def synthetic_entities(k: int, seed: int = 100) -> SeriesSplit:
    """K concatenated synthetic entities (seeds seed .. seed + K − 1), Anomaly-Transformer layout:
    each entity its own periods, mixing and offsets; trains and tests concatenated in the same order."""
    parts = [make_synthetic(length=1000, channels=6, seed=seed + i, train_length=1500) for i in range(k)]
    return SeriesSplit(train=np.concatenate([p.train for p in parts]), test=np.concatenate([p.test for p in parts]),
                       test_labels=np.concatenate([p.test_labels for p in parts]), name=f"synthetic x{k} entities")


def dev_benchmarks(entities: int = 8):
    """The development benchmarks as (name, data, window/training settings): omi-1, the built-in
    synthetic benchmark and ``entities`` concatenated synthetic entities. SMAP is never one."""
    return [
        ("omi-1", load_dataset(os.path.join(DATA, "omi-1")), dict(window_size=100, train_stride=5, epochs=3)),
        ("synthetic", load_dataset("synthetic:length=4000,channels=6,seed=0,train_length=6000"),
         dict(window_size=50, train_stride=10, epochs=4)),
        (f"synthetic x{entities} entities", synthetic_entities(entities),
         dict(window_size=50, train_stride=10, epochs=4)),
    ]


def evaluate_both(train_scores: np.ndarray, test_scores: np.ndarray, labels: np.ndarray,
                  contamination: float) -> Dict[str, Any]:
    """metrics.evaluate under the paper and the train threshold rules (``contamination`` a fraction)."""
    return {rule: metrics.evaluate(test_scores, labels, thresholds.select_threshold(rule, train_scores, test_scores,
                                                                                     contamination))
            for rule in ("paper", "train")}


def amad_terms(det: AMADDetector, train: np.ndarray, test: np.ndarray, stride: Optional[int] = None):
    """``det.score_terms`` (per-channel squared error, js softmax weight) of train and test for a
    fitted detector, computed once so every scoring variant comes from the same forward passes; also
    the seconds the test forward took. ``stride`` between scoring windows: None = the detector's
    own. Raw errors (``position_norm="none"``): the scoring these experiments' tables were made with."""
    tr = det.score_terms(train, score_stride=stride, position_norm="none")
    t0 = time.perf_counter()
    te = det.score_terms(test, score_stride=stride, position_norm="none")
    return tr, te, time.perf_counter() - t0


def amad_variant(det: AMADDetector, terms, score: str, error_norm: str, smooth: int = 1) -> np.ndarray:
    """Scores of one (score, error_norm, smooth) variant from ``terms`` = (err, weight)
    (``det.scores_from_terms``; the channel scale is the detector's own, measured at fit time)."""
    return det.scores_from_terms(terms[0], terms[1], score=score, smooth=smooth, error_norm=error_norm)


def amad_scores(det: AMADDetector, train: np.ndarray, test: np.ndarray, score: str, error_norm: str = "channel",
                smooth: int = 1):
    """(train scores, test scores, test forward seconds) of a fitted detector under one variant."""
    tr, te, secs = amad_terms(det, train, test)
    return amad_variant(det, tr, score, error_norm, smooth), amad_variant(det, te, score, error_norm, smooth), secs


def baseline_scores(name: str, train: np.ndarray, test: np.ndarray, seed: int = 0):
    """(train scores, test scores) of a per-time-step baseline on standardised data."""
    st = Standardizer().fit(train, warn=False)
    Ztr, Zte = st.transform(train), st.transform(test)
    if name == "random":
        rng = np.random.default_rng(seed)
        return rng.uniform(size=len(train)), rng.uniform(size=len(test))
    if name == "iforest":
        from sklearn.ensemble import IsolationForest

        f = IsolationForest(n_estimators=100, random_state=seed, n_jobs=1).fit(Ztr)
        return -f.score_samples(Ztr), -f.score_samples(Zte)
    if name == "pca":
        from sklearn.decomposition import PCA

        p = PCA(n_components=0.95, svd_solver="full", random_state=seed).fit(Ztr)

        def err(Z):
            return ((Z - p.inverse_transform(p.transform(Z))) ** 2).mean(1)

        return err(Ztr), err(Zte)
    raise ValueError(name)


def machine() -> Dict[str, Any]:
    import torch

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg_at_write": load}


def command_line(script: str, argv: Optional[List[str]] = None) -> str:
    """The command that reproduces a result table: ``python experiments/<script> <args>`` (``argv``
    None = this process's arguments), written at the top of every table."""
    args = sys.argv[1:] if argv is None else argv
    return f"python experiments/{os.path.basename(script)} " + " ".join(args)


def write_results(name: str, payload: Dict[str, Any], markdown: str) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name + ".json"), "w") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=float)
        fh.write("\n")
    with open(os.path.join(RESULTS, name + ".md"), "w") as fh:
        fh.write(markdown)


def table(rows: List[Dict[str, Any]], columns: List[str]) -> str:
    def fmt(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(out) + "\n"


def flat_rows(method: str, result: Dict[str, Any], extra: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """One table row per threshold rule."""
    rows = []
    for rule, m in result.items():
        row = {"method": method, "threshold": rule, **(extra or {})}
        row.update({k: m[k] for k in KEYS})
        rows.append(row)
    return rows
