"""Anomaly-detection metrics (numpy only; spec §4): point-wise and point-adjusted P/R/F1, AUROC, AUPR,
best F1 and the affiliation metrics (:mod:`.classification`), VUS-PR / VUS-ROC exactly as TSB-AD 1.5
computes them (:mod:`.vus`), and everything at once for reports (:func:`evaluate`).

Conventions: ``labels`` and predictions are 0/1 per time step; a higher score means more anomalous;
a threshold predicts ``scores > threshold`` (:func:`predict`). Thresholds themselves are chosen in
:mod:`amad_fast.detection.thresholds`.
"""
from amad_fast.metrics.classification import (
    PRF,
    BestF1,
    affiliation_prf,
    affiliation_zones,
    aupr,
    auroc,
    best_f1,
    point_adjust,
    point_adjusted_prf,
    precision_recall_f1,
    predict,
)
from amad_fast.metrics.summary import evaluate
from amad_fast.metrics.vus import (
    TSB_AD_DEFAULT_WINDOW,
    TSB_AD_THRESHOLDS,
    sliding_window_length,
    vus,
    vus_pr,
    vus_roc,
)

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
    "vus",
    "vus_pr",
    "vus_roc",
    "sliding_window_length",
    "TSB_AD_DEFAULT_WINDOW",
    "TSB_AD_THRESHOLDS",
    "evaluate",
]
