"""Thresholds: the one place that turns anomaly scores into a threshold (spec §4's ``paper`` rule, the
``train`` quantile and ``pot``, peaks over threshold with a generalised Pareto tail)."""
from __future__ import annotations

import math
from typing import Any, Tuple

import numpy as np

from amad_fast.metrics.classification import _scores

#: the threshold rules a detector accepts (``threshold=``); see :func:`select_threshold`
THRESHOLDS = ("paper", "train", "pot")


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
