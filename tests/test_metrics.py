"""Anomaly-detection metrics and thresholds (amad_fast.metrics) on hand-computed cases."""
import json
import math

import numpy as np
import pytest

from amad_fast.metrics import (
    affiliation_prf, affiliation_zones, aupr, auroc, best_f1, evaluate, point_adjust, point_adjusted_prf,
    precision_recall_f1, predict,
)
from amad_fast.detection.thresholds import (
    fit_gpd, fit_time_threshold, paper_threshold, pot_threshold, select_threshold, stream_threshold,
    train_threshold,
)

sk = pytest.importorskip("sklearn.metrics")


def _vec(events, T):
    v = np.zeros(T, dtype=int)
    for a, b in events:
        v[a:b] = 1
    return v


def _plain_point_adjust(pred, labels):
    """Segment by segment with explicit loops."""
    out = list(pred)
    i = 0
    while i < len(labels):
        if labels[i]:
            j = i
            while j < len(labels) and labels[j]:
                j += 1
            if any(pred[i:j]):
                out[i:j] = [1] * (j - i)
            i = j
        else:
            i += 1
    return np.array(out)


# ---------------------------------------------------------------------------------------------
# Point-wise and point-adjusted
# ---------------------------------------------------------------------------------------------
def test_point_adjust_hand_examples():
    labels = [0, 1, 1, 1, 0, 0, 1, 1, 0]
    pred = [0, 0, 1, 0, 0, 1, 0, 0, 0]
    np.testing.assert_array_equal(point_adjust(pred, labels), [0, 1, 1, 1, 0, 1, 0, 0, 0])
    # pointwise: TP 1, FP 1, FN 4
    assert precision_recall_f1(pred, labels) == pytest.approx((1 / 2, 1 / 5, 2 / 7))
    # adjusted: TP 3, FP 1, FN 2
    assert point_adjusted_prf(pred, labels) == pytest.approx((3 / 4, 3 / 5, 2 / 3))
    # segments at both ends of the series, detected late / early
    np.testing.assert_array_equal(point_adjust([0, 1, 0, 0, 1], [1, 1, 0, 1, 1]), [1, 1, 0, 1, 1])
    np.testing.assert_array_equal(point_adjust([1, 0, 0], [0, 0, 0]), [1, 0, 0])
    assert precision_recall_f1([0, 0, 0], [0, 1, 0]) == (0.0, 0.0, 0.0)


def test_point_adjust_matches_plain_loop_and_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 200))
        labels = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
        pred = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
        np.testing.assert_array_equal(point_adjust(pred, labels), _plain_point_adjust(pred, labels))
        ref = sk.precision_recall_fscore_support(labels, pred, average="binary", zero_division=0)[:3]
        assert precision_recall_f1(pred, labels) == pytest.approx(ref, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Threshold-free
# ---------------------------------------------------------------------------------------------
def test_auroc_aupr_with_ties_by_hand():
    scores, labels = [0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]
    # pairs (pos, neg): (0.4, 0.1) 1, (0.4, 0.4) ½, (0.8, 0.1) 1, (0.8, 0.4) 1 -> 3.5 / 4
    assert auroc(scores, labels) == pytest.approx(0.875)
    # thresholds 0.8: P 1, R ½; 0.4 (both tied steps at once): P ⅔, R 1 -> ½·1 + ½·⅔
    assert aupr(scores, labels) == pytest.approx(0.5 + 1 / 3)
    # all tied: AUROC ½, AP = the positive rate
    assert auroc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert aupr([1, 1, 1, 1], [0, 1, 0, 0]) == pytest.approx(0.25)
    assert auroc([3, 2, 1], [1, 0, 0]) == 1.0 and auroc([1, 2, 3], [1, 0, 0]) == 0.0


def test_auroc_aupr_match_sklearn_on_random_data():
    rng = np.random.default_rng(1)
    for trial in range(30):
        n = int(rng.integers(5, 400))
        labels = (rng.random(n) < 0.3).astype(int)
        labels[:2] = (0, 1)
        scores = rng.integers(0, 6, n) if trial % 2 else rng.normal(size=n) + labels  # ties on odd trials
        assert auroc(scores, labels) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
        assert aupr(scores, labels) == pytest.approx(sk.average_precision_score(labels, scores), abs=1e-12)


def test_best_f1():
    b = best_f1([0.1, 0.2, 0.3, 0.9], [0, 0, 1, 1])
    assert b.f1 == 1.0 and b.precision == 1.0 and b.recall == 1.0
    assert b.threshold == pytest.approx(0.25)                 # midway between 0.2 and 0.3
    # a tie straddling the classes: the best is to take everything >= 0.5 (TP 2, FP 1) or 0.9 alone
    b = best_f1([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert b.f1 == pytest.approx(max(2 / 3, 0.8))            # 0.5 and up: P ⅔, R 1 -> F1 0.8
    # adjacent float32 scores: the threshold still separates them when compared in float32
    lo32 = np.float32(1.0)
    s32 = np.array([lo32, np.nextafter(lo32, np.float32(2))] * 2, dtype=np.float32)
    t = best_f1(s32, [0, 1, 0, 1]).threshold
    np.testing.assert_array_equal(s32 > t, [False, True, False, True])
    rng = np.random.default_rng(2)
    for _ in range(20):
        n = int(rng.integers(5, 300))
        labels = _vec([(a, a + int(rng.integers(1, 20))) for a in rng.integers(0, n, 3)], n)[:n]
        labels[0] = 0
        labels[-1] = 1
        scores = rng.integers(0, 8, n).astype(float)
        b = best_f1(scores, labels)
        brute = max(sk.f1_score(labels, (scores >= v).astype(int)) for v in np.unique(scores))
        assert b.f1 == pytest.approx(brute, abs=1e-12)
        assert precision_recall_f1(predict(scores, b.threshold), labels) == pytest.approx((b.precision, b.recall, b.f1))
        pa = best_f1(scores, labels, point_adjusted=True)
        brute_pa = max(point_adjusted_prf((scores >= v).astype(int), labels).f1 for v in np.unique(scores))
        assert pa.f1 == pytest.approx(brute_pa, abs=1e-12)
        assert point_adjusted_prf(predict(scores, pa.threshold), labels).f1 == pytest.approx(pa.f1)


# ---------------------------------------------------------------------------------------------
# Affiliation
# ---------------------------------------------------------------------------------------------
def _affiliation_bruteforce(pred, labels, h=0.01):
    """The definitions evaluated on a fine grid: survival probabilities by counting grid points."""
    T = len(labels)
    ev = [(a, b) for a, b in _runs(labels)]
    pev = _runs(pred)
    borders = [0.0] + [(ev[i][1] + ev[i + 1][0]) / 2 for i in range(len(ev) - 1)] + [float(T)]
    grid = np.arange(0, T, h) + h / 2
    precs, recs = [], []
    for j, (j0, j1) in enumerate(ev):
        a, b = borders[j], borders[j + 1]
        X = grid[(grid >= a) & (grid < b)]
        dJ = np.maximum(np.maximum(j0 - X, 0), X - j1)
        in_pred = np.zeros(X.size, bool)
        pieces = []
        for u, v in pev:
            u, v = max(u, a), min(v, b)
            if v > u:
                pieces.append((u, v))
                in_pred |= (X >= u) & (X < v)
        if pieces:
            precs.append(np.mean([(dJ >= d).mean() for d in dJ[in_pred]]))
            Y = X[(X >= j0) & (X < j1)]
            dY = np.min([np.maximum(np.maximum(u - Y, 0), Y - v) for u, v in pieces], axis=0)
            recs.append(np.mean([(np.abs(X - y) >= d).mean() for y, d in zip(Y, dY)]))
        else:
            recs.append(0.0)
    return np.mean(precs) if precs else 0.0, np.mean(recs)


def _runs(y):
    d = np.diff(np.concatenate(([0], np.asarray(y, dtype=np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def test_affiliation_by_hand():
    # one event [3, 5) in [0, 10), one predicted step [7, 8):
    # precision: d in [2, 3], P(dist(X, J) >= d) = (8 − 2d)/10 -> mean over the step 0.3
    # recall: y in [3, 5], d = 7 − y, P(|X − y| >= d) = (3 + (2y − 7)^+)/10 -> mean 0.4125
    p, r, f = affiliation_prf(_vec([(7, 8)], 10), _vec([(3, 5)], 10))
    assert (p, r) == pytest.approx((0.3, 0.4125))
    assert f == pytest.approx(2 * 0.3 * 0.4125 / 0.7125)
    # two events, the first found exactly, the second's zone empty: P = 1 (only zone with a
    # prediction), R = (1 + 0)/2
    assert affiliation_prf(_vec([(2, 3)], 10), _vec([(2, 3), (7, 8)], 10)) == pytest.approx((1.0, 0.5, 2 / 3))


def test_affiliation_paper_example():
    """Huet et al. KDD 2022, the worked example (minutes -> seconds): zone 2 precision 0.6722, recall 0.9444."""
    gt = [(0, 600), (3000, 4200), (10200, 10500)]
    pr = [(300, 360), (420, 600), (660, 720), (2400, 3600), (6900, 7800), (8100, 8400), (9900, 10200)]
    zp, zr = affiliation_zones(_vec(pr, 10800), _vec(gt, 10800))
    assert zp[1] == pytest.approx(0.672222222, abs=1e-9)
    assert zr[1] == pytest.approx(0.944444444, abs=1e-9)


def test_affiliation_properties():
    labels = _vec([(5, 9), (20, 21), (30, 38)], 45)
    assert affiliation_prf(labels, labels) == pytest.approx((1, 1, 1))
    assert affiliation_prf(np.zeros(45, int), labels) == (0.0, 0.0, 0.0)
    # predicting everything: recall 1, precision below 1
    p, r, _ = affiliation_prf(np.ones(45, int), labels)
    assert r == 1.0 and 0 < p < 1
    # a prediction inside an event is perfectly precise however short
    assert affiliation_prf(_vec([(31, 32)], 45), labels).precision == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
def test_affiliation_matches_bruteforce(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(15, 40))
    labels = (rng.random(T) < 0.2).astype(int)
    labels[int(rng.integers(T))] = 1
    pred = (rng.random(T) < rng.uniform(0.1, 0.5)).astype(int)
    exact = affiliation_prf(pred, labels)
    brute = _affiliation_bruteforce(pred, labels)
    assert exact.precision == pytest.approx(brute[0], abs=5e-3)
    assert exact.recall == pytest.approx(brute[1], abs=5e-3)


# ---------------------------------------------------------------------------------------------
# Thresholds
# ---------------------------------------------------------------------------------------------
def test_percentile_thresholds():
    train, test = np.arange(100.0), np.arange(100.0, 200.0)
    # 99th percentile of 0..199 with linear interpolation: 0.99 · 199 = 197.01
    # contamination is a fraction: 0.01 = 1 %
    assert paper_threshold(train, test, 0.01) == pytest.approx(197.01)
    assert train_threshold(train, 0.01) == pytest.approx(98.01)
    assert train_threshold(train, 0.5) == pytest.approx(49.5)
    # the percentile 100 - 100·c is the percentile 100 - r of r percent, to the last bit, for the usual ratios
    for percent in (0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0):
        assert train_threshold(test, percent / 100) == float(np.percentile(test, 100.0 - percent))
    for bad in (0, 1, 1.0, 5, -0.1, True, "x", None):  # a percentage (1, 5) is refused, not read as 100 %+
        with pytest.raises(ValueError, match=r"contamination: expected a fraction in \(0, 1\)"):
            train_threshold(train, bad)
    assert select_threshold("paper", train, test, 0.01) == paper_threshold(train, test, 0.01)
    assert select_threshold("train", train, contamination=0.01) == train_threshold(train, 0.01)
    assert select_threshold("pot", train) == pot_threshold(train)
    with pytest.raises(ValueError, match=r"method: expected one of \('paper', 'train', 'pot'\), got 'best'"):
        select_threshold("best", train)
    with pytest.raises(ValueError, match="test_scores"):
        select_threshold("paper", train, contamination=0.01)
    with pytest.raises(ValueError, match="contamination: expected a fraction"):
        select_threshold("train", train)


def test_fit_time_and_stream_thresholds():
    """fit fixes "train" and "pot" from the training scores alone; "paper" has no value until the
    judged scores come, so a stream (which never has them all) refuses it."""
    train = np.arange(100.0)
    assert fit_time_threshold("train", train, 0.01) == train_threshold(train, 0.01)
    assert fit_time_threshold("pot", train, 0.01) == pot_threshold(train)
    assert fit_time_threshold("paper", train, 0.01) is None
    assert stream_threshold("train", 2.5) == 2.5 and stream_threshold("pot", 3) == 3.0
    with pytest.raises(ValueError, match="'paper' needs the whole scored series"):
        stream_threshold("paper", None)
    with pytest.raises(ValueError, match="threshold: expected one of"):
        fit_time_threshold("best", train, 0.01)


def test_gpd_fit_recovers_parameters():
    u = np.random.default_rng(3).random(20000)
    for gamma, sigma in [(0.3, 2.0), (-0.3, 2.0), (0.8, 0.5)]:
        y = sigma / gamma * ((1 - u) ** (-gamma) - 1)          # inverse CDF of the GPD
        g, s = fit_gpd(y)
        assert g == pytest.approx(gamma, abs=0.03) and s == pytest.approx(sigma, rel=0.05)
    g, s = fit_gpd(-np.log(1 - u))                             # exponential: gamma 0, sigma 1
    assert abs(g) < 0.02 and s == pytest.approx(1.0, rel=0.03)


def test_pot_threshold():
    rng = np.random.default_rng(4)
    x = rng.exponential(size=100000)
    assert pot_threshold(x, q=1e-3) == pytest.approx(-math.log(1e-3), rel=0.05)   # true 1e-3 quantile
    z = rng.pareto(3, size=200000)
    assert pot_threshold(z, q=1e-3) == pytest.approx(np.quantile(z, 1 - 1e-3), rel=0.05)
    assert pot_threshold(np.ones(100)) == 1.0                                       # no excess: t
    with pytest.raises(ValueError, match="q: expected a probability"):
        pot_threshold(x, q=2)


# ---------------------------------------------------------------------------------------------
# evaluate and input errors
# ---------------------------------------------------------------------------------------------
def test_evaluate_is_consistent_and_json_safe():
    rng = np.random.default_rng(5)
    labels = _vec([(50, 80), (200, 205), (400, 460)], 500)
    scores = rng.random(500) + labels
    r = evaluate(scores, labels, threshold=1.2)
    json.dumps(r, allow_nan=False)
    pred = (scores > 1.2).astype(int)
    assert (r["pa_precision"], r["pa_recall"], r["pa_f1"]) == tuple(point_adjusted_prf(pred, labels))
    assert (r["precision"], r["recall"], r["f1"]) == tuple(precision_recall_f1(pred, labels))
    assert r["auroc"] == auroc(scores, labels) and r["aupr"] == aupr(scores, labels)
    assert r["best_f1"] == best_f1(scores, labels).f1
    assert (r["affiliation_precision"], r["affiliation_recall"], r["affiliation_f1"]) == tuple(affiliation_prf(pred, labels))
    assert r["n"] == 500 and r["n_anomalous"] == 95 and r["n_predicted"] == int(pred.sum())
    assert all(type(v) in (float, int) for v in r.values())
    # labels with one class: the metrics that need both are None, the rest still computed
    r0 = evaluate(scores, np.zeros(500, int), threshold=0.5)
    assert r0["auroc"] is None and r0["aupr"] is None and r0["precision"] == 0.0
    json.dumps(r0, allow_nan=False)


def test_bad_inputs():
    with pytest.raises(ValueError, match="pred and labels: expected equal lengths, got 3 and 2"):
        point_adjust([0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match=r"labels: expected values in \{0, 1\}.*2"):
        precision_recall_f1([0, 1], [0, 2])
    with pytest.raises(ValueError, match="scores: expected finite scores, got 1 NaN"):
        auroc([0.1, np.nan, 0.3], [0, 1, 0])
    with pytest.raises(ValueError, match="scores and labels: expected equal lengths"):
        evaluate([0.1, 0.2], [0, 1, 0], 0.5)
    with pytest.raises(ValueError, match="scores: expected a 1-D"):
        aupr(np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="AUROC needs both"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="threshold: expected a finite"):
        evaluate([0.1, 0.2], [0, 1], float("nan"))
