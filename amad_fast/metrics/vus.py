"""VUS-PR and VUS-ROC (Paparrizos et al., VLDB 2022) exactly as TSB-AD 1.5 computes them, vectorised,
and TSB-AD's window rule; tests/data/vus_golden.json holds TSB-AD's own values (scripts/tsb_ad_golden.py)."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from amad_fast.metrics.classification import _pair_scores, _segments

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
