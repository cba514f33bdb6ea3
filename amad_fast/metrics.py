"""Anomaly-detection metrics and thresholds (numpy only; spec §4).

Conventions: ``labels`` and predictions are 0/1 per time step; a higher score means more anomalous;
a threshold predicts ``scores > threshold`` (as Anomaly Transformer does), see :func:`predict`.

Point adjustment is reported for comparison with published tables, always beside the unadjusted
point-wise P/R/F1, AUROC, AUPR and the affiliation metrics, because point adjustment lets even
random scores look strong (on SMAP uniform random scores reach a point-adjusted F1 of about 0.95).

VUS-PR / VUS-ROC (:func:`vus_pr`, :func:`vus_roc`) and their window rule
(:func:`sliding_window_length`) reproduce TSB-AD 1.5 exactly; tests/data/vus_golden.json holds
TSB-AD's own values for them (scripts/tsb_ad_golden.py).
"""
from __future__ import annotations

import math
from typing import Any, Dict, NamedTuple, Optional, Tuple

import numpy as np

from .data import check_labels

__all__ = [
    "PRF",
    "BestF1",
    "predict",
    "point_adjust",
    "precision_recall_f1",
    "point_adjusted_prf",
    "auroc",
    "aupr",
    "best_f1",
    "affiliation_prf",
    "affiliation_zones",
    "paper_threshold",
    "train_threshold",
    "pot_threshold",
    "fit_gpd",
    "select_threshold",
    "ANOMALY_RATIO_PERCENT",
    "vus",
    "vus_pr",
    "vus_roc",
    "sliding_window_length",
    "TSB_AD_DEFAULT_WINDOW",
    "TSB_AD_THRESHOLDS",
    "evaluate",
]


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


# ----------------------------------------------------------------------------------------------
# Thresholds
# ----------------------------------------------------------------------------------------------
def _ratio(r: Any) -> float:
    r = float(r)
    if not 0.0 < r < 100.0:
        raise ValueError(f"anomaly_ratio_percent: expected a percentage in (0, 100), got {r}")
    return r


def paper_threshold(train_scores: Any, test_scores: Any, anomaly_ratio_percent: float) -> float:
    """Percentile ``100 − r`` of the concatenated train and test scores (Anomaly Transformer's rule).

    Uses test statistics (not labels); reported for comparability with published tables.
    """
    r = _ratio(anomaly_ratio_percent)
    s = np.concatenate((_scores(train_scores, "train_scores"), _scores(test_scores, "test_scores")))
    return float(np.percentile(s, 100.0 - r))


def train_threshold(train_scores: Any, anomaly_ratio_percent: float) -> float:
    """Percentile ``100 − r`` of the training scores only (no test statistics)."""
    r = _ratio(anomaly_ratio_percent)
    return float(np.percentile(_scores(train_scores, "train_scores"), 100.0 - r))


def _gpd_loglik(y: np.ndarray, gamma: float, sigma: float) -> float:
    if sigma <= 0:
        return -math.inf
    if abs(gamma) < 1e-12:
        return float(-y.size * math.log(sigma) - y.sum() / sigma)
    z = 1.0 + gamma * y / sigma
    if (z <= 0).any():
        return -math.inf
    return float(-y.size * math.log(sigma) - (1.0 + 1.0 / gamma) * np.log(z).sum())


def fit_gpd(excesses: Any, n_grid: int = 400) -> Tuple[float, float]:
    """Maximum-likelihood (gamma, sigma) of a generalised Pareto distribution, by Grimshaw's reduction.

    Grimshaw (1993): at a stationary point of the likelihood, x = gamma/sigma solves
    u(x)·v(x) = 1 with u(x) = mean(1/(1 + x·Y)), v(x) = 1 + mean(log(1 + x·Y)), and then
    gamma = v(x) − 1, sigma = gamma/x. The roots are bracketed on log-spaced grids over
    (−1/max Y, 0) and (0, 2(mean − min)/min²] (the bounds SPOT uses), refined by bisection; the
    candidate with the highest likelihood wins, the exponential (gamma = 0, sigma = mean) included.
    This is the fit of SPOT (Siffer et al., KDD 2017), with a grid + bisection root search instead
    of scipy's optimiser.
    """
    y = _scores(excesses, "excesses")
    if (y < 0).any():
        raise ValueError("excesses: expected non-negative excesses over the initial threshold")
    y = y[y > 0]
    if y.size == 0:
        return 0.0, 0.0
    ymean, ymin, ymax = float(y.mean()), float(y.min()), float(y.max())
    cands = [(0.0, ymean)]

    def w(x: np.ndarray) -> np.ndarray:
        s = 1.0 + np.outer(x, y)
        return (1.0 / s).mean(axis=1) * (1.0 + np.log(s).mean(axis=1)) - 1.0

    # x = 0 is a trivial root (w ≡ 0 up to rounding there): start the grids well away from it and
    # ignore sign changes within rounding noise
    upper = 2.0 * (ymean - ymin) / (ymin ** 2)
    if not (math.isfinite(upper) and upper > 0):
        upper = 1e6 / ymean
    grids = (-np.geomspace(1e-10, 1.0 - 1e-10, n_grid) / ymax,     # (−1/max Y, 0)
             np.geomspace(1e-10 / ymax, upper, n_grid))            # (0, upper]
    for g in grids:
        g = np.sort(g)
        wg = w(g)
        loud = np.abs(wg) > 1e-12
        for i in np.flatnonzero((np.sign(wg[:-1]) * np.sign(wg[1:]) < 0) & loud[:-1] & loud[1:]):
            lo, hi, flo = g[i], g[i + 1], wg[i]
            for _ in range(80):
                m = 0.5 * (lo + hi)
                fm = w(np.array([m]))[0]
                if np.sign(fm) == np.sign(flo):
                    lo, flo = m, fm
                else:
                    hi = m
            x = 0.5 * (lo + hi)
            gamma = float(np.log1p(x * y).mean())
            if x != 0 and gamma != 0:
                cands.append((gamma, gamma / x))
    best = max(cands, key=lambda c: _gpd_loglik(y, c[0], c[1]))
    return float(best[0]), float(best[1])


def pot_threshold(train_scores: Any, q: float = 1e-3, level: float = 0.98) -> float:
    """Peaks-over-threshold threshold on training scores (SPOT's initial step, Siffer et al. KDD 2017).

    t = the ``level`` quantile of the scores; the excesses over t are fitted by a generalised
    Pareto distribution (:func:`fit_gpd`, Grimshaw MLE); the returned threshold is the score
    exceeded with probability ``q``: z = t + sigma/gamma·((q·n/N_t)^(−gamma) − 1) (gamma ≠ 0),
    z = t − sigma·log(q·n/N_t) (gamma = 0), with n scores and N_t excesses. With no excess
    (constant tail) t is returned.
    """
    s = _scores(train_scores, "train_scores")
    if not 0.0 < float(q) < 1.0:
        raise ValueError(f"q: expected a probability in (0, 1), got {q}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level: expected a quantile level in (0, 1), got {level}")
    t = float(np.quantile(s, level))
    peaks = s[s > t] - t
    if peaks.size == 0:
        return t
    gamma, sigma = fit_gpd(peaks)
    r = float(q) * s.size / peaks.size
    if abs(gamma) < 1e-12:
        return float(t - sigma * math.log(r))
    return float(t + sigma / gamma * (r ** (-gamma) - 1.0))


#: r (percent) of the ``paper`` threshold per data set, as in spec §4 / Anomaly Transformer's scripts.
ANOMALY_RATIO_PERCENT = {"SMAP": 1.0, "MSL": 1.0, "SMD": 0.5, "PSM": 1.0, "SWaT": 0.1}


def select_threshold(method: str, train_scores: Any, test_scores: Any = None,
                     anomaly_ratio_percent: Any = None, q: float = 1e-3, level: float = 0.98) -> float:
    """One entry point for the spec's threshold knob: ``"paper"``, ``"train"`` or ``"pot"``."""
    if method == "pot":
        return pot_threshold(train_scores, q=q, level=level)
    if method not in ("paper", "train"):
        raise ValueError(f"method: expected 'paper', 'train' or 'pot', got {method!r}")
    if anomaly_ratio_percent is None:
        raise ValueError(f"anomaly_ratio_percent: expected a percentage for the {method!r} threshold, got None")
    if method == "train":
        return train_threshold(train_scores, anomaly_ratio_percent)
    if test_scores is None:
        raise ValueError("test_scores: expected the test scores for the 'paper' threshold, got None")
    return paper_threshold(train_scores, test_scores, anomaly_ratio_percent)


# ----------------------------------------------------------------------------------------------
# VUS-PR and VUS-ROC (Paparrizos et al., VLDB 2022) exactly as TSB-AD 1.5 computes them
# ----------------------------------------------------------------------------------------------
#: TSB-AD's ``get_metrics`` default ``slidingWindow`` (used by :func:`evaluate` when no window is given).
TSB_AD_DEFAULT_WINDOW = 100
#: TSB-AD's ``thre``: how many score thresholds each VUS curve is sampled at.
TSB_AD_THRESHOLDS = 250


def _nonneg_int(x: Any, name: str, minimum: int = 0) -> int:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {x!r} ({type(x).__name__})")
    if int(x) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {int(x)}")
    return int(x)


def _vus_inputs(scores: Any, labels: Any, window: Any, n_thresholds: Any, what: str):
    s, y = _pair_scores(scores, labels)
    w = _nonneg_int(window, "window")
    thre = _nonneg_int(n_thresholds, "n_thresholds", minimum=1)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError(f"labels: {what} is undefined without an anomalous step (TSB-AD fails on such "
                         f"labels too), got none of {y.size}")
    if n_pos == y.size:
        raise ValueError(f"labels: {what} is undefined when every step is anomalous (TSB-AD finds no "
                         f"segment and fails), got {n_pos} anomalous of {y.size}")
    return s, y, w, thre


def _vus_curves(s: np.ndarray, y: np.ndarray, window: int, thre: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per buffer length 0..window: TSB-AD's range-AUC-ROC and range-AUC-PR (two (window+1,) arrays).

    A vectorised transcription of ``basic_metricor.RangeAUC_volume_opt`` (TSB-AD 1.5); see
    :func:`vus_pr` for the definition. What makes it cheap:

    * the thresholds are nested, so step p is predicted from threshold index k(p) on, and every
      per-threshold count is a cumulative sum of a ``bincount`` over k;
    * the extended label of a normal step is 0, one buffer's ``sqrt(1 − d/w)``, or exactly 1 when
      two or more buffers reach it (each term is >= sqrt(1/2) because d <= w//2, so their sum is
      > 1 and TSB-AD's clip at 1 applies): only the two nearest segment ends on either side matter;
    * the segments' buffered regions are disjoint intervals, so "any prediction in the region" is
      a ``minimum.reduceat`` of k over them.
    """
    n = s.size
    starts, stops = _segments(y)
    ends = stops - 1                                       # inclusive, as TSB-AD's segments
    n_seg = starts.size
    # TSB-AD's thresholds: the sorted scores at linspace(0, n − 1, thre).astype(int); predict >=
    thr = np.sort(s)[::-1][np.linspace(0, n - 1, thre).astype(int)]
    # k: the first threshold index with s >= threshold (thre = never, possible only when thre == 1)
    k = thre - np.searchsorted(thr[::-1], s, side="right")

    def per_threshold(idx: np.ndarray, weights: Optional[np.ndarray] = None) -> np.ndarray:
        return np.cumsum(np.bincount(idx, weights=weights, minlength=thre + 1)[:thre]).astype(np.float64)

    n_pred = per_threshold(k)
    hit = per_threshold(k[y])                              # anomalous steps predicted
    P = float(y.sum())

    # normal steps within window//2 of a segment: distance to the nearest / second nearest segment
    # end on the left (d1, d2) and segment start on the right (d3, d4); "far" when there is none
    far = n + window + 1
    pos = np.flatnonzero(~y)
    il = np.searchsorted(ends, pos, side="left") - 1
    ir = np.searchsorted(starts, pos, side="right")
    d1 = np.where(il >= 0, pos - ends[np.maximum(il, 0)], far)
    d3 = np.where(ir < n_seg, starts[np.minimum(ir, n_seg - 1)] - pos, far)
    near = np.minimum(d1, d3)
    keep = near <= window // 2
    pos, il, ir, d1, d3, near = pos[keep], il[keep], ir[keep], d1[keep], d3[keep], near[keep]
    d2 = np.where(il >= 1, pos - ends[np.maximum(il - 1, 0)], far)
    d4 = np.where(ir + 1 < n_seg, starts[np.minimum(ir + 1, n_seg - 1)] - pos, far)
    k_buf = k[pos]
    relevant = y.copy()                                    # steps any buffered region can hold
    relevant[pos] = True
    rel_pos = np.flatnonzero(relevant)
    rel_k = np.append(k[rel_pos], 0)                       # + a pad so reduceat may index one past

    A = np.zeros((window + 1, thre))                       # Σ extended label over predicted buffer steps
    E = np.zeros((window + 1, thre))                       # regions holding a prediction
    n_regions = np.zeros(window + 1)
    for w in range(window + 1):
        h = w // 2
        if h > 0:
            n_reach = (d1 <= h).astype(np.int8) + (d2 <= h) + (d3 <= h) + (d4 <= h)
            one = n_reach == 1
            ext = np.where(n_reach >= 2, 1.0, 0.0)
            ext[one] = np.sqrt(1 - near[one] / w)          # the single reaching buffer is the nearest
            A[w] = per_threshold(k_buf, ext)
        # buffered regions [start − h, end + h], merged as TSB-AD's new_sequence merges them
        split = ends[:-1] + h < starts[1:] - h
        lo = np.maximum(starts[np.concatenate(([True], split))] - h, 0)
        hi = np.minimum(ends[np.concatenate((split, [True]))] + h, n - 1)
        bounds = np.stack((np.searchsorted(rel_pos, lo, side="left"),
                           np.searchsorted(rel_pos, hi, side="right")), axis=1).reshape(-1)
        first_k = np.minimum.reduceat(rel_k, bounds)[::2]
        E[w] = per_threshold(first_k)
        n_regions[w] = lo.size

    tp = hit + A
    p_new = (P + (P + A)) / 2                              # TSB-AD: (P + N_labels) / 2
    tpr = np.minimum(tp / p_new, 1.0) * (E / n_regions[:, None])
    fpr = (n_pred - tp) / (n - p_new)
    precision = tp / n_pred
    zeros, ones = np.zeros((window + 1, 1)), np.ones((window + 1, 1))
    tpr_c = np.concatenate((zeros, tpr, ones), axis=1)
    fpr_c = np.concatenate((zeros, fpr, ones), axis=1)
    roc = np.sum(np.diff(fpr_c, axis=1) * (tpr_c[:, 1:] + tpr_c[:, :-1]) / 2, axis=1)
    pr = np.sum(np.diff(tpr_c[:, :-1], axis=1) * precision, axis=1)
    return roc, pr


def _vus(scores: Any, labels: Any, window: Any, n_thresholds: Any, what: str) -> Tuple[float, float]:
    s, y, w, thre = _vus_inputs(scores, labels, window, n_thresholds, what)
    roc, pr = _vus_curves(s, y, w, thre)
    return float(np.sum(pr)) / (w + 1), float(np.sum(roc)) / (w + 1)


def vus_pr(scores: Any, labels: Any, window: int, n_thresholds: int = TSB_AD_THRESHOLDS) -> float:
    """VUS-PR, the volume under TSB-AD's range-PR surface (TSB-AD's headline metric), exactly as TSB-AD 1.5.

    This is what ``TSB_AD.evaluation.metrics.get_metrics(score, labels, slidingWindow=window,
    version='opt', thre=250)['VUS-PR']`` returns (through ``generate_curve`` →
    ``basic_metricor.RangeAUC_volume_opt``), reproduced step for step but vectorised (a 10,000-step
    series with window 100 takes milliseconds instead of TSB-AD's seconds). Paparrizos et al.,
    "Volume Under the Surface", VLDB 2022; TSB-AD, NeurIPS 2024.

    **The surface.** For each buffer length w = 0, 1, …, ``window`` a range-PR curve is drawn and
    its area taken; VUS-PR is the mean of these ``window + 1`` areas (the volume under the
    surface spanned by threshold and buffer length, divided by the number of buffer lengths).

    **The buffer (what the window does).** With h = w // 2, every labelled segment [s, e] gets a
    soft label on the h normal steps on each side: sqrt(1 − d/w) at distance d (1 <= d <= h);
    overlapping contributions add up and the label is clipped at 1. Steps in a segment keep
    label 1. The segment and its buffer form a region [s − h, e + h] (clipped to the series;
    regions that overlap or touch merge). So w = 0 and w = 1 give the same curve (no buffer).

    **The thresholds (``n_thresholds``, TSB-AD's ``thre=250``).** The scores sorted in decreasing
    order, taken at positions ``linspace(0, n − 1, n_thresholds).astype(int)`` (truncated, so
    positions repeat when n < n_thresholds); a step is predicted when ``score >= threshold``.
    Only the ranks of the scores matter, so any strictly increasing transform leaves VUS unchanged.

    **One curve point** (threshold t, buffer w), with P the number of anomalous steps:
    TP = (anomalous steps predicted) + Σ soft labels of predicted buffer steps;
    P' = P + (Σ soft labels of predicted buffer steps) / 2 (TSB-AD's "(P + N_labels) / 2");
    recall = min(TP / P', 1); existence = fraction of regions that hold a predicted step (a
    prediction in the buffer counts); TPR = recall × existence; precision = TP / (steps predicted);
    FPR = ((steps predicted) − TP) / (n − P'). The PR area is Σ_j (TPR_j − TPR_{j−1}) × precision_j
    with TPR_0 = 0 (a step sum, no interpolation); VUS-ROC (:func:`vus_roc`) uses trapezoids
    through (0, 0), the points, and (1, 1).

    ``window`` is TSB-AD's ``slidingWindow``: TSB-AD sets it per series with ``find_length_rank``
    on the first channel of the data, which :func:`sliding_window_length` reproduces; its
    ``get_metrics`` default is 100 (:data:`TSB_AD_DEFAULT_WINDOW`). Labels with no anomalous step,
    or only anomalous steps, raise ValueError: TSB-AD itself fails on them (an IndexError), and
    the metric is undefined there.
    """
    return _vus(scores, labels, window, n_thresholds, "VUS-PR")[0]


def vus_roc(scores: Any, labels: Any, window: int, n_thresholds: int = TSB_AD_THRESHOLDS) -> float:
    """VUS-ROC, the volume under TSB-AD's range-ROC surface, exactly as TSB-AD 1.5 (``get_metrics``'s 'VUS-ROC').

    The same surface, buffers, thresholds and inputs as :func:`vus_pr`; each buffer length's
    curve is the range-ROC curve (0, 0), (FPR_j, TPR_j) for the ``n_thresholds`` thresholds in
    decreasing order, then (1, 1), integrated by trapezoids; VUS-ROC is the mean over buffer
    lengths 0..``window``. Note TPR carries TSB-AD's existence factor, so even window 0 is not the
    point-wise AUROC (see :func:`auroc`).
    """
    return _vus(scores, labels, window, n_thresholds, "VUS-ROC")[1]


def vus(scores: Any, labels: Any, window: int, n_thresholds: int = TSB_AD_THRESHOLDS) -> Tuple[float, float]:
    """``(VUS-PR, VUS-ROC)`` from one pass over the curves (:func:`vus_pr`, :func:`vus_roc` each
    compute both and keep one)."""
    return _vus(scores, labels, window, n_thresholds, "VUS")


def _next_regular(target: int) -> int:
    """The smallest 5-smooth number >= target (statsmodels' FFT length rule, copied to match it)."""
    if target <= 6 or not (target & (target - 1)):
        return target
    match = math.inf
    p5 = 1
    while p5 < target:
        p35 = p5
        while p35 < target:
            quotient = -(-target // p35)
            n = 2 ** ((quotient - 1).bit_length()) * p35
            if n == target:
                return n
            match = min(match, n)
            p35 *= 3
            if p35 == target:
                return p35
        match = min(match, p35)
        p5 *= 5
        if p5 == target:
            return p5
    return int(min(match, p5))


def sliding_window_length(series: Any) -> int:
    """The VUS ``window`` TSB-AD picks for a series: its ``find_length_rank(series, rank=1)``.

    TSB-AD's protocol is ``find_length_rank(data[:, 0].reshape(-1, 1), rank=1)`` on the series
    being scored (its first channel), passed to ``get_metrics`` as ``slidingWindow``; so pass
    ``test_data[:, 0]`` here. The rule (a dominant period from the autocorrelation):

    1. keep the first 20,000 steps; autocorrelation at lags 0..400 (statsmodels ``acf`` with
       ``fft=True``: demeaned, divided by n at every lag, FFT of length the next 5-smooth number
       >= 2n + 1), computed here in float64 with numpy's FFT;
    2. drop lags 0, 1, 2; take the strict local maxima (both neighbours lower) of the rest;
    3. the highest one, at lag L: return L if 6 <= L <= 303, else 125. With no local maximum
       (a constant series, a series shorter than 6 steps, no periodic structure in 400 lags) the
       answer is TSB-AD's fallback 125 as well (a constant series would give NaN autocorrelations:
       TSB-AD ends at 125 there too, through its ``except``).

    Differences from TSB-AD, on purpose: a series with several channels raises ValueError
    (TSB-AD silently returns 0, i.e. no buffer); NaN/Inf raise (TSB-AD would return 125); one step
    returns 125 (TSB-AD raises TypeError). Near-ties between two autocorrelation peaks could in
    principle resolve differently under another numpy FFT build (differences of ~1e-16).
    """
    x = np.asarray(series)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"series: expected numeric values, got dtype {x.dtype}")
    x = np.squeeze(x).reshape(-1) if x.size == 1 else np.squeeze(x)
    if x.ndim != 1:
        raise ValueError(f"series: expected one channel (a 1-D array or one column), got shape {np.shape(series)}; "
                         f"TSB-AD uses the first channel, data[:, 0]")
    if x.size == 0:
        raise ValueError("series: expected at least one value, got an empty array")
    x = x[:20000].astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"series: expected finite values, got {int((~np.isfinite(x)).sum())} NaN/Inf value(s)")
    n = x.size
    xo = x - x.mean()
    f = np.fft.fft(xo, n=_next_regular(2 * n + 1))
    acov = np.fft.ifft(f * np.conjugate(f))[:n].real / n
    with np.errstate(invalid="ignore", divide="ignore"):
        ac = (acov[:401] / acov[0])[3:]                    # NaN for a constant series: no maximum below
    if ac.size < 3:
        return 125
    local_max = np.flatnonzero((ac[1:-1] > ac[:-2]) & (ac[1:-1] > ac[2:])) + 1
    if local_max.size == 0:
        return 125
    best = int(local_max[np.argsort(ac[local_max])[::-1][0]])   # TSB-AD's expression, ties included
    if best < 3 or best > 300:
        return 125
    return best + 3


# ----------------------------------------------------------------------------------------------
# Everything at once
# ----------------------------------------------------------------------------------------------
def evaluate(scores: Any, labels: Any, threshold: float, vus_window: Optional[int] = None) -> Dict[str, Any]:
    """Every metric of spec §4 for one score series and threshold, as JSON-safe Python floats/ints.

    Keys: threshold; pa_precision/pa_recall/pa_f1 (point-adjusted); precision/recall/f1
    (point-wise); auroc; aupr; best_f1 with best_f1_threshold/_precision/_recall (point-wise);
    affiliation_precision/_recall/_f1; vus_pr/vus_roc (TSB-AD's, :func:`vus_pr`) with vus_window,
    the buffer window they used; n, n_anomalous, n_predicted. Threshold-free metrics that need
    both classes are None when the labels have only one.

    ``vus_window``: TSB-AD's ``slidingWindow``. TSB-AD computes it from the *data* (the series'
    first channel), which this function does not see: pass ``sliding_window_length(test[:, 0])``
    to follow TSB-AD's protocol. None means TSB-AD's own default when no window is given,
    ``get_metrics(..., slidingWindow=100)`` (:data:`TSB_AD_DEFAULT_WINDOW`).
    """
    s, y = _pair_scores(scores, labels)
    thr = float(threshold)
    if not math.isfinite(thr):
        raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
    vw = TSB_AD_DEFAULT_WINDOW if vus_window is None else _nonneg_int(vus_window, "vus_window")
    pred = (s > thr).astype(np.int8)
    out: Dict[str, Any] = {"threshold": thr, "n": int(y.size), "n_anomalous": int(y.sum()),
                           "n_predicted": int(pred.sum())}
    pa, pw = point_adjusted_prf(pred, y), precision_recall_f1(pred, y)
    out.update(pa_precision=pa.precision, pa_recall=pa.recall, pa_f1=pa.f1,
               precision=pw.precision, recall=pw.recall, f1=pw.f1)
    has_pos, has_neg = bool(y.any()), not bool(y.all())
    out["auroc"] = auroc(s, y) if has_pos and has_neg else None
    out["aupr"] = aupr(s, y) if has_pos else None
    out["vus_pr"], out["vus_roc"] = _vus(s, y, vw, TSB_AD_THRESHOLDS, "VUS") if has_pos and has_neg else (None, None)
    out["vus_window"] = vw
    if has_pos:
        b = best_f1(s, y)
        af = affiliation_prf(pred, y)
        out.update(best_f1=b.f1, best_f1_threshold=b.threshold, best_f1_precision=b.precision,
                   best_f1_recall=b.recall, affiliation_precision=af.precision,
                   affiliation_recall=af.recall, affiliation_f1=af.f1)
    else:
        out.update(dict.fromkeys(("best_f1", "best_f1_threshold", "best_f1_precision", "best_f1_recall",
                                  "affiliation_precision", "affiliation_recall", "affiliation_f1")))
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in out.items()}
