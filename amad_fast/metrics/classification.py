"""Anomaly-detection metrics and thresholds (numpy only; spec §4).

Conventions: ``labels`` and predictions are 0/1 per time step; a higher score means more anomalous;
a threshold predicts ``scores > threshold`` (as Anomaly Transformer does), see :func:`predict`.

Point adjustment is reported for comparison with published tables, always beside the unadjusted
point-wise P/R/F1, AUROC, AUPR and the affiliation metrics, because point adjustment lets even
random scores look strong (on SMAP uniform random scores reach a point-adjusted F1 of about 0.95).

VUS-PR / VUS-ROC (:func:`vus_pr`, :func:`vus_roc`) and their window rule
(:func:`sliding_window_length`) reproduce TSB-AD 1.5 exactly; tests/data/vus_golden.json holds
TSB-AD's own values for them (scripts/tsb_ad_golden.py)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Tuple

import numpy as np

from amad_fast.data import check_labels


class PRF(NamedTuple):
    precision: float
    recall: float
    f1: float


class BestF1(NamedTuple):
    f1: float
    threshold: float
    precision: float
    recall: float


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------
def _binary(x: Any, name: str) -> np.ndarray:
    return check_labels(x, name).astype(bool)


def _scores(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of scores, got shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric scores, got dtype {a.dtype}")
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one score, got an empty array")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite scores, got {int((~np.isfinite(a)).sum())} NaN/Inf value(s)")
    return a


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{na} and {nb}: expected equal lengths, got {a.shape[0]} and {b.shape[0]}")


def _pair_binary(pred: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray]:
    p, y = _binary(pred, "pred"), _binary(labels, "labels")
    _same_length(p, y, "pred", "labels")
    return p, y


def _pair_scores(scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray]:
    s, y = _scores(scores, "scores"), _binary(labels, "labels")
    _same_length(s, y, "scores", "labels")
    return s, y


def _both_classes(y: np.ndarray, what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"labels: {what} needs both normal and anomalous steps, got {n_pos} anomalous of {y.size}")


def _segments(y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of True in a boolean vector."""
    d = np.diff(np.concatenate(([0], y.astype(np.int8), [0])))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b > 0 else 0.0


# ----------------------------------------------------------------------------------------------
# Point-wise and point-adjusted
# ----------------------------------------------------------------------------------------------
def predict(scores: Any, threshold: float) -> np.ndarray:
    """0/1 predictions ``scores > threshold`` (int8)."""
    return (_scores(scores, "scores") > float(threshold)).astype(np.int8)


def point_adjust(pred: Any, labels: Any) -> np.ndarray:
    """Anomaly-Transformer point adjustment: a labelled segment with any predicted step is all predicted.

    Predictions outside labelled segments are left as they are. Returns int8. (Anomaly
    Transformer's loop differs only in never back-filling step 0 of a segment starting there.)
    """
    p, y = _pair_binary(pred, labels)
    out = p.copy()
    starts, ends = _segments(y)
    if starts.size:
        csum = np.concatenate(([0], np.cumsum(p)))
        hit = (csum[ends] - csum[starts]) > 0
        mark = np.zeros(p.size + 1, dtype=np.int64)  # +1 at each hit segment's start, −1 at its end
        mark[starts[hit]] = 1
        mark[ends[hit]] = -1
        out |= np.cumsum(mark[:-1]) > 0
    return out.astype(np.int8)


def precision_recall_f1(pred: Any, labels: Any) -> PRF:
    """Point-wise precision, recall and F1 of the positive (anomalous) class; 0 where undefined."""
    p, y = _pair_binary(pred, labels)
    tp = int(np.count_nonzero(p & y))
    prec, rec = _div(tp, p.sum()), _div(tp, y.sum())
    return PRF(prec, rec, _div(2 * prec * rec, prec + rec))


def point_adjusted_prf(pred: Any, labels: Any) -> PRF:
    """P/R/F1 after :func:`point_adjust` (the protocol of Anomaly Transformer's published tables)."""
    return precision_recall_f1(point_adjust(pred, labels), labels)


# ----------------------------------------------------------------------------------------------
# Threshold-free
# ----------------------------------------------------------------------------------------------
def _ranked_counts(s: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores descending, with cumulative TP and FP when predicting ``scores >= value``."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.flatnonzero(np.diff(s_sorted) != 0)
    idx = np.concatenate((last_of_tie, [s.size - 1]))
    tps = np.cumsum(y_sorted)[idx].astype(np.float64)
    fps = (idx + 1) - tps
    return s_sorted[idx], tps, fps


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve; tied scores count one half (the Mann–Whitney statistic)."""
    s, y = _pair_scores(scores, labels)
    _both_classes(y, "AUROC")
    _, tps, fps = _ranked_counts(s, y)
    tpr = np.concatenate(([0.0], tps / tps[-1]))
    fpr = np.concatenate(([0.0], fps / fps[-1]))
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))  # trapezoids = ties count half


def aupr(scores: Any, labels: Any) -> float:
    """Average precision: Σ_n (R_n − R_{n−1}) P_n over distinct thresholds (ties form one step).

    The same definition as scikit-learn's ``average_precision_score`` (no interpolation).
    """
    s, y = _pair_scores(scores, labels)
    if not y.any():
        raise ValueError(f"labels: AUPR needs at least one anomalous step, got none of {y.size}")
    _, tps, fps = _ranked_counts(s, y)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))


def _threshold_between(values: np.ndarray, k: int) -> float:
    """A threshold t with ``values[k] > t >= values[k+1]`` (values distinct, descending).

    The midpoint when it stays strictly inside also after rounding to float32 (so ``scores > t``
    gives the same answer on float32 scores), else the lower value itself.
    """
    hi = float(values[k])

    def inside(t: float, lo: float) -> bool:
        return lo <= t < hi and lo <= float(np.float32(t)) < hi

    if k + 1 < values.size:
        lo = float(values[k + 1])
        mid = lo + (hi - lo) / 2.0
        return mid if inside(mid, lo) else lo
    t = hi - max(1.0, abs(hi)) * 1e-6
    return t if inside(t, -math.inf) else float(np.nextafter(np.float32(hi), np.float32(-np.inf)))


def best_f1(scores: Any, labels: Any, point_adjusted: bool = False) -> BestF1:
    """The best F1 over every threshold, with that threshold (use ``scores > threshold``) and its P/R.

    The returned threshold lies midway between the lowest predicted score and the next lower
    distinct score (or is that lower score itself when the midpoint would not survive float32). With ``point_adjusted=True`` the F1 is computed after point adjustment (a
    segment is detected at a threshold when its highest score exceeds it) — exact, not sampled.
    """
    s, y = _pair_scores(scores, labels)
    if not y.any():
        raise ValueError(f"labels: best F1 needs at least one anomalous step, got none of {y.size}")
    if not point_adjusted:
        values, tps, fps = _ranked_counts(s, y)
        fns = tps[-1] - tps
    else:
        starts, ends = _segments(y)
        bounds = np.stack((starts, ends), axis=1).reshape(-1)
        seg_max = np.maximum.reduceat(np.append(s, 0.0), bounds)[::2]   # max score of each segment
        seg_len = (ends - starts).astype(np.float64)
        values = np.unique(s)[::-1]                                     # every distinct score, descending
        # predicting scores >= v: TP = length of segments whose max >= v, FP = normal steps >= v
        o = np.argsort(seg_max, kind="mergesort")
        len_ge = np.concatenate((np.cumsum(seg_len[o][::-1])[::-1], [0.0]))
        tps = len_ge[np.searchsorted(seg_max[o], values, side="left")]
        neg = np.sort(s[~y])
        fps = (neg.size - np.searchsorted(neg, values, side="left")).astype(np.float64)
        fns = seg_len.sum() - tps
    prec = np.divide(tps, tps + fps, out=np.zeros_like(tps), where=(tps + fps) > 0)
    rec = np.divide(tps, tps + fns, out=np.zeros_like(tps), where=(tps + fns) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tps), where=(prec + rec) > 0)
    k = int(np.argmax(f1))
    return BestF1(float(f1[k]), _threshold_between(values, k), float(prec[k]), float(rec[k]))


# ----------------------------------------------------------------------------------------------
# Affiliation metrics (Huet, Navarro, Rossi, KDD 2022)
# ----------------------------------------------------------------------------------------------
def _relu_integral(lo: np.ndarray, hi: np.ndarray, alpha: float, beta: np.ndarray) -> np.ndarray:
    """∫_lo^hi max(0, alpha·x + beta) dx (elementwise, hi >= lo, alpha != 0)."""
    F = lambda x: np.maximum(0.0, alpha * x + beta) ** 2 / (2.0 * alpha)
    return F(hi) - F(lo)


def _lin_integral(lo: np.ndarray, hi: np.ndarray, alpha: float, beta: np.ndarray) -> np.ndarray:
    """∫_lo^hi (alpha·x + beta) dx."""
    return alpha * (hi ** 2 - lo ** 2) / 2.0 + beta * (hi - lo)


def _zone_borders(gs: np.ndarray, ge: np.ndarray, T: float) -> np.ndarray:
    """Zone borders: midpoints between consecutive events; the first and last reach 0 and T."""
    return np.concatenate(([0.0], (ge[:-1] + gs[1:]) / 2.0, [float(T)]))


def affiliation_prf(pred: Any, labels: Any) -> PRF:
    """Affiliation precision, recall and their F1 (Huet et al., KDD 2022), computed exactly.

    Step t is the interval [t, t+1); the time range is [0, T). Each labelled event J_j owns the
    zone I_j of points closer to it than to any other event. Within a zone, for a predicted point x
    the precision probability is P(dist(X, J_j) >= dist(x, J_j)) for X uniform on I_j; for a true
    point y the recall probability is P(|X − y| >= dist(y, Ŷ_j)) with Ŷ_j the prediction inside I_j
    (0 if there is none). Zone precision/recall average these over the predicted set / over J_j;
    precision is the mean over zones holding a prediction, recall the mean over all zones.
    The integrals are closed-form (piecewise quadratic), so there is no discretisation error.
    Events and predictions are converted as in the authors' package and as DCdetector calls it
    (runs of 1s → [start, end), time range (0, T)). One deliberate difference: precision is 0
    when nothing is predicted (the authors return NaN), so F1 stays a number. Labels need at
    least one anomalous step.
    """
    zone_prec, zone_rec = affiliation_zones(pred, labels)
    has_pred = ~np.isnan(zone_prec)
    precision = float(zone_prec[has_pred].mean()) if has_pred.any() else 0.0
    recall = float(zone_rec.mean())
    return PRF(precision, recall, _div(2 * precision * recall, precision + recall))


def affiliation_zones(pred: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Per-event affiliation precision (NaN where the zone holds no prediction) and recall.

    See :func:`affiliation_prf`; one entry per labelled event, in time order.
    """
    p, y = _pair_binary(pred, labels)
    if not y.any():
        raise ValueError(f"labels: affiliation metrics need at least one anomalous step, got none of {y.size}")
    T = float(y.size)
    gs, ge = (a.astype(np.float64) for a in _segments(y))
    borders = _zone_borders(gs, ge, T)
    n_zones = gs.size
    ps, pe = (a.astype(np.float64) for a in _segments(p))

    # predicted intervals cut at the zone borders -> pieces (u, v) in zone z
    z0 = np.searchsorted(borders, ps, side="right") - 1
    z1 = np.searchsorted(borders, pe, side="left") - 1
    counts = z1 - z0 + 1
    z = np.repeat(z0, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    u = np.maximum(np.repeat(ps, counts), borders[z])
    v = np.minimum(np.repeat(pe, counts), borders[z + 1])
    keep = v > u
    z, u, v = z[keep], u[keep], v[keep]

    a, b = borders[z], borders[z + 1]
    j0, j1 = gs[z], ge[z]
    width = b - a
    # precision: ∫_piece F̄(dist(x, J)) dx with F̄(d) = P(dist(X, J) >= d), X ~ U(a, b)
    lu, lv = u, np.minimum(v, j0)                      # left of J: F̄ = [(x − a) + (x + b − j0 − j1)^+]/(b − a)
    lv = np.maximum(lv, lu)
    left = _lin_integral(lu, lv, 1.0, -a) + _relu_integral(lu, lv, 1.0, b - j0 - j1)
    ru, rv = np.maximum(u, j1), v                      # right of J: F̄ = [(j0 + j1 − a − x)^+ + (b − x)]/(b − a)
    ru = np.minimum(ru, rv)
    right = _relu_integral(ru, rv, -1.0, j0 + j1 - a) + _lin_integral(ru, rv, -1.0, b)
    inside = np.maximum(0.0, np.minimum(v, j1) - np.maximum(u, j0))
    prec_int = np.bincount(z, weights=inside + (left + right) / width, minlength=n_zones)
    pred_len = np.bincount(z, weights=v - u, minlength=n_zones)
    has_pred = pred_len > 0

    # recall: each y in J goes to its closest piece in the zone (cells split at midpoints between pieces)
    same_prev = np.concatenate(([False], z[1:] == z[:-1]))
    same_next = np.concatenate((z[:-1] == z[1:], [False]))
    mid = (v[:-1] + u[1:]) / 2.0
    cell_lo = np.where(same_prev, np.concatenate(([0.0], mid)), a)
    cell_hi = np.where(same_next, np.concatenate((mid, [0.0])), b)
    y0, y1 = np.maximum(j0, cell_lo), np.minimum(j1, cell_hi)
    y1 = np.maximum(y0, y1)
    # y left of the piece:  F̄ = [(2y − u − a)^+ + (b − u)]/(b − a)
    l0, l1 = y0, np.maximum(y0, np.minimum(y1, u))
    rec_left = _relu_integral(l0, l1, 2.0, -u - a) + (b - u) * (l1 - l0)
    # y right of the piece: F̄ = [(v − a) + (b + v − 2y)^+]/(b − a)
    r0, r1 = np.minimum(y1, np.maximum(y0, v)), y1
    rec_right = (v - a) * (r1 - r0) + _relu_integral(r0, r1, -2.0, b + v)
    rec_in = np.maximum(0.0, np.minimum(y1, v) - np.maximum(y0, u))
    rec_int = np.bincount(z, weights=rec_in + (rec_left + rec_right) / width, minlength=n_zones)

    zone_prec = np.full(n_zones, np.nan)
    zone_prec[has_pred] = prec_int[has_pred] / pred_len[has_pred]
    return zone_prec, rec_int / (ge - gs)
