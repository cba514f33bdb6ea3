"""Thresholds: the one place that turns anomaly scores into a threshold (spec §4's ``paper`` rule, the
``train`` quantile and ``pot``, peaks over threshold with a generalised Pareto tail).

Every detector (:class:`amad_fast.detection.estimator.DetectorBase`) and every command of the CLI
asks this module, through :func:`select_threshold` (any rule), :func:`fit_time_threshold` (what
``fit`` can fix) and :func:`stream_threshold` (what a live stream compares with).

``contamination`` is the expected fraction of anomalous steps, in (0, 1): PyOD's and scikit-learn's
name and unit for it (``contamination=0.01`` = 1 %). The percentile rules flag the scores above
the ``1 − contamination`` quantile. A step is flagged when its score is above the threshold."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from amad_fast.metrics.classification import _scores

#: the threshold rules a detector accepts (``threshold=``); see :func:`select_threshold`
THRESHOLDS = ("paper", "train", "pot")
#: the rules whose threshold ``fit`` fixes from the training scores alone; "paper" also needs the
#: scores being judged, so it has no value before them (and none for a stream)
FIT_TIME_THRESHOLDS = ("train", "pot")
#: the default expected fraction of anomalous steps (1 %, spec §4's SMAP/MSL value)
DEFAULT_CONTAMINATION = 0.01
#: contamination of the ``paper`` threshold per data set, as in spec §4 / Anomaly Transformer's
#: scripts (their ``anomaly_ratio`` percentages 1, 1, 0.5, 1, 0.1 as fractions)
CONTAMINATION = {"SMAP": 0.01, "MSL": 0.01, "SMD": 0.005, "PSM": 0.01, "SWaT": 0.001}


def check_rule(method: Any, name: str = "threshold") -> str:
    """``method`` when it is one of :data:`THRESHOLDS`, else a ValueError naming ``name``."""
    if not isinstance(method, str) or method not in THRESHOLDS:
        raise ValueError(f"{name}: expected one of {THRESHOLDS}, got {method!r}")
    return method


def check_contamination(value: Any, name: str = "contamination") -> float:
    """``value`` as a float when it is a fraction in (0, 1), else a ValueError naming ``name``.

    A number of 1 or more is refused rather than read as a percentage: ``contamination=1.0``
    would flag everything, and a percentage passed by mistake must not become a silent 100×."""
    try:
        c = float(value)
    except (TypeError, ValueError):
        c = float("nan")
    if isinstance(value, bool) or not 0.0 < c < 1.0:
        raise ValueError(f"{name}: expected a fraction in (0, 1) (e.g. 0.01 for 1 %), got {value!r}")
    return c


def percentile_threshold(scores: Any, contamination: float, name: str = "scores") -> float:
    """The ``1 − contamination`` quantile of ``scores`` (percentile 100 − 100·contamination, linear
    interpolation): the score above which about a fraction ``contamination`` of them lies."""
    c = check_contamination(contamination)
    return float(np.percentile(_scores(scores, name), 100.0 - 100.0 * c))


def paper_threshold(train_scores: Any, test_scores: Any, contamination: float) -> float:
    """:func:`percentile_threshold` of the concatenated train and test scores (Anomaly Transformer's rule).

    Uses test statistics (not labels); reported for comparability with published tables.
    """
    s = np.concatenate((_scores(train_scores, "train_scores"), _scores(test_scores, "test_scores")))
    return percentile_threshold(s, contamination)


def train_threshold(train_scores: Any, contamination: float) -> float:
    """:func:`percentile_threshold` of the training scores only (no test statistics)."""
    return percentile_threshold(train_scores, contamination, "train_scores")


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


def select_threshold(method: str, train_scores: Any, test_scores: Any = None,
                     contamination: Any = None, q: float = 1e-3, level: float = 0.98) -> float:
    """One entry point for the spec's threshold knob: ``"paper"``, ``"train"`` or ``"pot"``
    (``contamination`` for the first two, ``q``/``level`` for ``"pot"``)."""
    check_rule(method, "method")
    if method == "pot":
        return pot_threshold(train_scores, q=q, level=level)
    if contamination is None:
        raise ValueError(f"contamination: expected a fraction in (0, 1) for the {method!r} threshold, got None")
    if method == "train":
        return train_threshold(train_scores, contamination)
    if test_scores is None:
        raise ValueError("test_scores: expected the test scores for the 'paper' threshold, got None")
    return paper_threshold(train_scores, test_scores, contamination)


def fit_time_threshold(method: str, train_scores: Any, contamination: Any) -> Optional[float]:
    """The threshold ``fit`` fixes from the training scores: ``"train"``'s or ``"pot"``'s, and
    None for ``"paper"``, which needs the scores being judged (:func:`select_threshold` then)."""
    if check_rule(method) not in FIT_TIME_THRESHOLDS:
        return None
    return select_threshold(method, train_scores, contamination=contamination)


def stream_threshold(method: str, fitted_threshold: Optional[float]) -> float:
    """The threshold a live stream compares each score with: the one fixed at fit time
    (``fitted_threshold``, a detector's ``threshold_``). The ``"paper"`` rule has none (it takes a
    percentile of the whole scored series, which a stream never has): a ValueError says so."""
    if check_rule(method) not in FIT_TIME_THRESHOLDS or fitted_threshold is None:
        raise ValueError(f"the threshold rule {method!r} needs the whole scored series, which a stream never has; "
                         f"give a threshold value, or fit with threshold in {FIT_TIME_THRESHOLDS}")
    return float(fitted_threshold)
