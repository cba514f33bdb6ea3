"""Every metric of spec §4 at once, for reports."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from amad_fast.metrics.classification import (
    _pair_scores,
    affiliation_prf,
    aupr,
    auroc,
    best_f1,
    point_adjusted_prf,
    precision_recall_f1,
)
from amad_fast.metrics.vus import TSB_AD_DEFAULT_WINDOW, TSB_AD_THRESHOLDS, _nonneg_int, _vus


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
