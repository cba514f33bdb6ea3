#!/usr/bin/env python3
"""Golden values from TSB-AD itself for ``amad_fast.metrics.vus_pr / vus_roc / sliding_window_length``.

Writes ``tests/data/vus_golden.json``, which ``tests/test_vus.py`` checks our numpy implementation
against. Run it from anywhere with any Python 3.9+ that has ``venv`` and PyPI access::

    python3 scripts/tsb_ad_golden.py                    # throwaway venv in a temp dir, removed after
    python3 scripts/tsb_ad_golden.py --venv /tmp/tsbad  # keep (and reuse) the venv there

What it does, and why:

1. Creates a virtual environment and installs ``tsb-ad==1.5`` with ``pip install --no-deps``.
   tsb-ad declares torch, transformers, tslearn, stumpy, arch, ... as dependencies (a multi-GB
   CUDA torch among them) because its package also holds its detectors. None of that is needed
   for its metrics: ``TSB_AD/__init__.py``, ``TSB_AD/evaluation/__init__.py`` and
   ``TSB_AD/utils/__init__.py`` are empty, ``TSB_AD/evaluation/metrics.py`` (``get_metrics``)
   imports only ``basic_metrics.py`` (numpy, scikit-learn; its affiliation module is pure Python)
   and ``TSB_AD/utils/slidingWindows.py`` (``find_length_rank``) imports only numpy, scipy and
   statsmodels. So the metric modules are imported normally (no import-by-path trick needed),
   ``TSB_AD.main`` / ``TSB_AD.model_wrapper`` (which import torch) are never imported, and the
   worker asserts at the end that torch was not imported and is not installed.
2. Installs just what that import chain needs, pinned to versions of TSB-AD's time (it asks for
   numpy < 2): numpy, scipy, scikit-learn, pandas (statsmodels needs it), statsmodels — see PINS.
3. Re-runs this file with the venv's Python (``--worker``): it builds the cases, computes
   TSB-AD's values and writes the JSON. Every input is stored in the JSON itself (scores and
   series rounded to 3-6 significant digits *before* TSB-AD sees them, labels as segments), except
   one series made by exact integer arithmetic from a formula recorded in the JSON; so the tests
   need neither TSB-AD nor the data files, nor a particular numpy random stream.

VUS is computed through exactly what ``get_metrics(score, labels, slidingWindow=w, pred=None,
version='opt', thre=250)`` calls: ``generate_curve(labels.astype(int), score, w, 'opt', thre)``
(its 7th and 8th outputs are VUS-ROC and VUS-PR). For cases with thre = 250 the worker also calls
``get_metrics`` itself and checks that its 'VUS-PR'/'VUS-ROC' are identical, and records
``basic_metricor().RangeAUC(labels, score, window=0)`` (TSB-AD's plain range-AUC-ROC/-PR without
buffer) so the tests can check that window 0 reduces to it. Windows come from
``find_length_rank(series.reshape(-1, 1), rank=1)``, TSB-AD's protocol on the first channel.

Cases: hand-made (one segment, several, touching the start, touching the end, point anomalies,
dense anomalies with overlapping buffers, segments one step apart, tied and constant scores,
perfect and reversed scores, window 0, 1, large, longer than the series, a series shorter than
the 250 thresholds, thre = 50, 2 and 1) and real slices: omi-1's test set and two SMAP entities (P-1,
E-13), scored by the L2 norm of per-column z-scores (z from the slice itself).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(ROOT, "tests", "data", "vus_golden.json")
DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
TSB_AD = "tsb-ad==1.5"
PINS = ["numpy==1.26.4", "scipy==1.13.1", "scikit-learn==1.5.2", "pandas==2.2.3", "statsmodels==0.14.4"]


# ---------------------------------------------------------------------------------------------
# Host side: the throwaway environment
# ---------------------------------------------------------------------------------------------
def _run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def host(args) -> int:
    tmp = None
    venv = args.venv
    if venv is None:
        tmp = tempfile.TemporaryDirectory(prefix="tsb_ad_golden_")
        venv = os.path.join(tmp.name, "venv")
    try:
        py = os.path.join(venv, "bin", "python")
        if not os.path.exists(py):
            _run([sys.executable, "-m", "venv", venv])
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        _run(pip + ["--no-deps", TSB_AD])
        _run(pip + PINS)
        _run([py, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"])
        _run([py, os.path.abspath(__file__), "--worker", "--out", args.out, "--data-root", args.data_root])
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


# ---------------------------------------------------------------------------------------------
# Worker side (inside the venv): cases and TSB-AD's values
# ---------------------------------------------------------------------------------------------
def _r6(a, digits=6):
    """Round to ``digits`` significant digits, as Python floats (what the JSON stores exactly)."""
    return [float(f"{float(v):.{digits}g}") for v in a]


def _segments(y):
    import numpy as np

    d = np.diff(np.concatenate(([0], np.asarray(y, dtype=np.int64), [0])))
    return [[int(a), int(b)] for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1))]


def _labels(n, segments):
    import numpy as np

    y = np.zeros(n, dtype=int)
    for a, b in segments:
        y[a:b] = 1
    return y


def _zscore_norm(x):
    import numpy as np

    sd = x.std(axis=0)
    keep = sd > 0
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep]
    return np.sqrt((z ** 2).sum(axis=1))


def hand_cases():
    import numpy as np

    rng = np.random.default_rng(20240817)
    cases = []

    def add(name, n, segments, window, scores, thre=250, note=""):
        cases.append(dict(name=name, n=n, segments=segments, window=window, thre=thre, note=note,
                          scores=_r6(scores, 5)))

    def noisy(n, segments, bump=0.6, pre=0.0, pre_len=0):
        y = _labels(n, segments)
        s = rng.random(n) + bump * y
        for a, _ in segments:                       # a rise just before a segment: buffer credit
            s[max(a - pre_len, 0):a] += pre
        return s

    segs = [[120, 150]]
    add("one_segment", 300, segs, 20, noisy(300, segs))
    segs = [[40, 60], [100, 103], [250, 300], [420, 440], [560, 575]]
    add("several_segments", 600, segs, 30, noisy(600, segs, 0.5, 0.4, 5), note="early rises in the buffers")
    segs = [[0, 15]]
    add("segment_at_start", 200, segs, 16, noisy(200, segs, 0.4, 0.3, 4))
    segs = [[185, 200]]
    add("segment_at_end", 200, segs, 15, noisy(200, segs, 0.4, 0.3, 4), note="odd window")
    segs = [[200, 201]]
    add("point_anomaly", 400, segs, 10, noisy(400, segs, 0.8))
    pts = sorted(rng.choice(np.arange(20, 480), 12, replace=False).tolist())
    y = _labels(500, [[p, p + 1] for p in pts])
    y[300:304] = 1
    y[309:312] = 1
    segs = _segments(y)
    add("dense_point_anomalies", 500, segs, 40, noisy(500, segs, 0.5, 0.3, 3),
        note="buffers overlap each other and other segments, regions merge")
    segs = [[100, 110], [111, 120]]
    add("segments_one_step_apart", 300, segs, 6, noisy(300, segs, 0.5))
    segs = [[50, 70], [200, 230]]
    add("tied_scores", 300, segs, 12, np.floor(5 * (rng.random(300) + 0.5 * _labels(300, segs))) / 5,
        note="five distinct score values")
    add("constant_scores", 300, [[100, 120]], 10, np.full(300, 0.5))
    segs = [[30, 45], [90, 91], [200, 260], [400, 410]]
    base = noisy(500, segs, 0.5, 0.3, 3)
    add("window_zero", 500, segs, 0, base)
    add("window_one", 500, segs, 1, base, note="same inputs as window_zero: w // 2 = 0 for both")
    add("window_two", 500, segs, 2, base)
    segs = [[60, 70], [90, 95], [130, 132], [300, 340]]
    add("large_window", 400, segs, 120, noisy(400, segs, 0.4, 0.3, 10))
    segs = [[70, 80]]
    add("window_longer_than_series", 150, segs, 400, noisy(150, segs, 0.3))
    segs = [[50, 60], [200, 240], [400, 401]]
    y = _labels(500, segs)
    add("perfect_binary", 500, segs, 25, y.astype(float))
    add("reversed_binary", 500, segs, 25, 1.0 - y)
    segs = [[20, 26]]
    add("short_series", 60, segs, 8, noisy(60, segs, 0.4), note="fewer steps than thresholds")
    segs = [[100, 130], [500, 520], [700, 760]]
    add("thre_50", 800, segs, 20, noisy(800, segs, 0.5, 0.3, 5), thre=50)
    segs = [[30, 34], [80, 95]]
    add("thre_1", 120, segs, 10, noisy(120, segs, 0.5), thre=1, note="one threshold: the top score only")
    add("thre_2", 120, segs, 10, noisy(120, segs, 0.5), thre=2)
    segs = [[150, 180], [600, 610], [900, 940]]
    add("no_signal", 1000, segs, 50, rng.random(1000))
    return cases


def real_cases(data_root):
    import numpy as np

    out = []
    csv = os.path.join(data_root, "omi-1", "omi-1_test.csv")
    d = np.genfromtxt(csv, delimiter=",", skip_header=1)
    x, y = d[:, 1:-1], d[:, -1].astype(int)
    out.append(("omi-1_test", "omi-1_test.csv, all 4320 rows; series = column A0", x, y))
    smap = os.path.join(data_root, "SMAP")
    X = np.load(os.path.join(smap, "SMAP_test.npy")).astype(np.float64)
    Y = np.load(os.path.join(smap, "SMAP_test_label.npy")).astype(int)
    for ent, test_start, a, b in (("P-1", 0, 1500, 5500), ("E-13", 116814, 4500, 8640)):
        sl = slice(test_start + a, test_start + b)
        out.append((f"SMAP_{ent}", f"SMAP_test.npy rows {sl.start}:{sl.stop} (entity {ent} test steps {a}:{b}); "
                    f"series = channel 0", X[sl], Y[sl]))
    cases = []
    for name, source, x, y in out:
        series = _r6(x[:, 0], 5)
        cases.append(dict(name=name, source=source, n=int(y.size), segments=_segments(y),
                          series=series, scores=_r6(_zscore_norm(x), 5), thre=250,
                          note="score: L2 norm of per-column z-scores over the slice; window: find_length_rank"))
    return cases


def square_wave_truncation():
    """Exact integers: period 40 (amplitude 1) for 20,000 steps, then period 80 (amplitude 10).

    find_length_rank only reads the first 20,000 steps, so it must answer 40; on the whole series
    the loud tail would win.
    """
    import numpy as np

    t = np.arange(26000)
    return np.where(t < 20000, (t // 20) % 2, 10 * ((t // 40) % 2)).astype(float)


def window_cases():
    import numpy as np

    rng = np.random.default_rng(7)
    t = np.arange(3000)
    cases = [
        dict(name="sine_37_noisy", series=_r6(np.sin(2 * np.pi * t[:1500] / 37) + 0.3 * rng.standard_normal(1500), 4)),
        dict(name="sine_period_350", series=_r6(np.sin(2 * np.pi * t / 350) + 0.05 * rng.standard_normal(3000), 3),
             note="period beyond 303: TSB-AD falls back to 125"),
        dict(name="white_noise", series=_r6(rng.standard_normal(1000), 4)),
        dict(name="constant", series=[0.25] * 500, note="NaN autocorrelation: fallback 125"),
        dict(name="five_steps", series=[1.0, 3.0, 2.0, 5.0, 4.0], note="no lag >= 3 has neighbours: 125"),
        dict(name="square_wave_truncated", formula="t = arange(26000); where(t < 20000, (t // 20) % 2, "
             "10 * ((t // 40) % 2)) as float64", note="only the first 20,000 steps count"),
    ]
    return cases


def worker(args) -> int:
    import warnings
    from importlib import metadata

    import numpy as np

    from TSB_AD.evaluation.basic_metrics import basic_metricor, generate_curve
    from TSB_AD.evaluation.metrics import get_metrics
    from TSB_AD.utils import slidingWindows
    from TSB_AD.utils.slidingWindows import find_length_rank

    warnings.filterwarnings("ignore", message="Precision is ill-defined")  # get_metrics' F1 sweeps
    t0 = time.time()
    vus_cases = hand_cases()
    for c in real_cases(args.data_root):
        c["window"] = int(find_length_rank(np.asarray(c["series"]).reshape(-1, 1), rank=1))
        vus_cases.append(c)
    for c in vus_cases:
        labels = _labels(c["n"], c["segments"])
        score = np.asarray(c["scores"], dtype=np.float64)
        t1 = time.time()
        out = generate_curve(labels.astype(int), score, c["window"], "opt", c["thre"])
        c["vus_roc"], c["vus_pr"] = float(out[6]), float(out[7])
        seconds = time.time() - t1                     # printed, not stored: the JSON stays reproducible
        if c["thre"] == 250:
            m = get_metrics(score, labels, slidingWindow=c["window"])
            assert (m["VUS-PR"], m["VUS-ROC"]) == (c["vus_pr"], c["vus_roc"]), (c["name"], m)
            c["checked_with_get_metrics"] = True
            roc0, pr0, *_ = basic_metricor().RangeAUC(labels, score, window=0, plot_ROC=True)
            c["range_auc_roc_window0"], c["range_auc_pr_window0"] = float(roc0), float(pr0)
        print(f"{c['name']:<28} n={c['n']:<5} window={c['window']:<4} VUS-PR={c['vus_pr']:.6f} "
              f"VUS-ROC={c['vus_roc']:.6f} (TSB-AD: {seconds:.2f} s)", flush=True)

    win_cases = window_cases()
    for c in vus_cases:
        if "series" in c:
            win_cases.append(dict(name=c["name"], series_from_vus_case=c["name"]))
    by_name = {c["name"]: c for c in vus_cases}
    for c in win_cases:
        if "formula" in c:
            x = square_wave_truncation()
        elif "series_from_vus_case" in c:
            x = np.asarray(by_name[c["series_from_vus_case"]]["series"])
        else:
            x = np.asarray(c["series"])
        with np.errstate(all="ignore"):
            c["window"] = int(find_length_rank(x.reshape(-1, 1), rank=1))
        print(f"find_length_rank {c['name']:<24} -> {c['window']}", flush=True)
    multi = int(find_length_rank(np.random.default_rng(0).random((500, 3)), rank=1))

    assert "torch" not in sys.modules, "TSB-AD's metric code imported torch"
    src = os.path.dirname(os.path.dirname(slidingWindows.__file__))

    def sha(rel):
        with open(os.path.join(src, rel), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    doc = {
        "about": "Golden values from TSB-AD 1.5 itself for amad_fast.metrics.vus_pr / vus_roc / "
                 "sliding_window_length; written by scripts/tsb_ad_golden.py (see its docstring). "
                 "Labels: 1 on [start, stop) of each segment, 0 elsewhere.",
        "tsb_ad": {
            "package": TSB_AD,
            "vus": "generate_curve(labels.astype(int), score, window, 'opt', thre) -> outputs [6] VUS-ROC, "
                   "[7] VUS-PR (what get_metrics(score, labels, slidingWindow=window) uses; "
                   "basic_metricor.RangeAUC_volume_opt)",
            "window": "find_length_rank(series.reshape(-1, 1), rank=1)",
            "range_auc_window0": "basic_metricor().RangeAUC(labels, score, window=0, plot_ROC=True)[:2]",
            "sha256": {p: sha(p) for p in ("evaluation/basic_metrics.py", "evaluation/metrics.py",
                                           "utils/slidingWindows.py")},
            "multichannel_find_length_rank": multi,
        },
        "environment": {"python": sys.version.split()[0],
                        **{p: metadata.version(p) for p in ("tsb-ad", "numpy", "scipy", "scikit-learn",
                                                            "pandas", "statsmodels")}},
        "vus_cases": vus_cases,
        "window_cases": win_cases,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB) in {time.time() - t0:.0f} s")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", help="where to create (or reuse) the virtual environment; default: a temp dir, removed")
    ap.add_argument("--out", default=DEFAULT_OUT, help="the JSON to write (default: tests/data/vus_golden.json)")
    ap.add_argument("--data-root", default=DEFAULT_DATA,
                    help="folder holding omi-1/ and SMAP/ (default: ../shared/data)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    return worker(args) if args.worker else host(args)


if __name__ == "__main__":
    sys.exit(main())
