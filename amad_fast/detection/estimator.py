"""What every detector of the package shares: scikit-learn-style parameters and the threshold rules.

:class:`DetectorBase` applies the threshold rules of :mod:`amad_fast.detection.thresholds` (the one
place where scores become a threshold) for AMAD (:class:`amad_fast.detection.detector.AMADDetector`)
and the baselines (:mod:`amad_fast.detection.baselines`) alike:

* ``"paper"``: the ``1 − contamination`` quantile of the stored training scores and the judged
  scores together (Anomaly Transformer's protocol; it uses statistics of the data being judged);
* ``"train"``: the same quantile of the training scores only (fixed at fit time);
* ``"pot"``: peaks over threshold on the training scores (fixed at fit time).

``contamination`` is the expected fraction of anomalous steps in (0, 1), PyOD's name and unit.
A step is flagged when its score is above the threshold. NaN scores (AMAD's missing steps under
``nan_policy="mask"``) are left out of every threshold and never flagged.
Subclasses keep their constructor arguments as attributes of the same names, implement
``decision_function``, ``fitted`` and ``_check_params`` (calling :meth:`_check_threshold_params`),
and set ``train_scores_`` and ``threshold_ = self._fixed_threshold()`` when they fit.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional

import numpy as np

from amad_fast.detection import thresholds
from amad_fast.metrics.classification import predict

__all__ = ["DetectorBase"]


class DetectorBase:
    """Parameters (``get_params``/``set_params``/``repr``), thresholds and ``predict`` of a detector."""

    # -- parameters -------------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> List[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "DetectorBase":
        """Set parameters (validated; nothing changes when one is invalid). On a fitted detector a
        new ``threshold``/``contamination`` refreshes ``threshold_`` at once; other parameters take
        effect at the next fit, or at once where they only change how scores are computed."""
        valid = self._param_names()
        for name in params:
            if name not in valid:
                raise ValueError(f"set_params: unknown parameter {name!r}; expected one of {valid}")
        old = self.get_params()
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._check_params()
        except ValueError:
            for name, value in old.items():
                setattr(self, name, value)
            raise
        if self.fitted:
            self.threshold_ = self._fixed_threshold()
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if defaults.get(k) != v]
        return f"{type(self).__name__}({', '.join(changed)})"

    def _check_params(self) -> None:  # pragma: no cover - every subclass has its own
        self._check_threshold_params()

    def _check_threshold_params(self) -> None:
        thresholds.check_rule(self.threshold)
        thresholds.check_contamination(self.contamination)

    @staticmethod
    def _stored_params(params: Dict[str, Any]) -> Dict[str, Any]:
        """The constructor parameters of a saved detector's ``params``, in today's names and units.

        Files written before ``contamination`` store ``anomaly_ratio`` in percent: it becomes
        ``contamination = anomaly_ratio / 100`` (the same threshold: the percentile rules take
        percentile 100 − 100·contamination, the old 100 − anomaly_ratio to the last bit for the usual
        ratios, e.g. 0.01 … 20 %)."""
        params = dict(params)
        if "anomaly_ratio" in params:
            percent = params.pop("anomaly_ratio")
            params.setdefault("contamination", float(percent) / 100.0)
        return params

    # -- fitted state -----------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not self.fitted:
            name = type(self).__name__
            raise RuntimeError(f"{name}: not fitted yet; call fit(X) or {name}.load(path) first")

    def decision_function(self, X: Any) -> np.ndarray:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def finite_scores(self, scores: Any, what: str = "X", missing: Optional[np.ndarray] = None) -> np.ndarray:
        """``scores`` as float64, or a FloatingPointError when any is NaN/Inf (other than the NaN of
        the ``missing`` steps (T,) bool, which have no score).

        Every detector passes its scores through here (training scores at fit, judged scores in
        ``decision_function``), so that no NaN/Inf score is ever returned or used for a threshold
        silently. Inputs are made safe before (:func:`amad_fast.data.check_series` for NaN/Inf,
        :meth:`amad_fast.data.Standardizer.zscore` for extreme values); a non-finite score here
        means an overflow inside the scorer itself.
        """
        s = np.asarray(scores, dtype=np.float64)
        bad = ~np.isfinite(s)
        if missing is not None:
            bad &= ~(missing & np.isnan(s))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise FloatingPointError(
                f"{type(self).__name__}: {int(bad.sum())} of {s.size} scores of {what} are NaN/Inf (first at step "
                f"{first}): the computation overflowed although the input is finite and within the limits of "
                f"amad_fast.data.Z_LIMIT; refusing to return them. Check the input's scale (e.g. values far "
                f"outside the training range) or the detector (e.g. a model that diverged)")
        return s

    # -- PyOD's names for what fit leaves ----------------------------------------------------------
    @property
    def decision_scores_(self) -> np.ndarray:
        """The training series' scores (PyOD's name; the same array as ``train_scores_``)."""
        self._require_fitted_attribute("decision_scores_")
        return self.train_scores_

    @property
    def labels_(self) -> np.ndarray:
        """0/1 (int8) per training step: its score above the threshold (PyOD's name), i.e. what
        ``predict`` would say of the training series without recomputing its scores."""
        self._require_fitted_attribute("labels_")
        return _flags(self.train_scores_, self.threshold_for(self.train_scores_))

    def _require_fitted_attribute(self, name: str) -> None:
        # an AttributeError, as for any attribute fit has not set yet (hasattr / sklearn's check_is_fitted)
        if not self.fitted:
            raise AttributeError(f"{type(self).__name__}.{name} is set by fit(); call fit(X) first")

    # -- thresholds -------------------------------------------------------------------------------
    def _fixed_threshold(self) -> Optional[float]:
        """The threshold fixed at fit time (None for "paper": :func:`thresholds.fit_time_threshold`)."""
        return thresholds.fit_time_threshold(self.threshold, _scored(self.train_scores_), self.contamination)

    def threshold_for(self, scores: Any) -> float:
        """The decision threshold for these scores (fixed for "train"/"pot"; "paper" uses them)."""
        self._require_fitted()
        if self.threshold in thresholds.FIT_TIME_THRESHOLDS:
            return float(self.threshold_)
        return thresholds.select_threshold(self.threshold, _scored(self.train_scores_), _scored(scores),
                                           self.contamination)

    def stream_threshold(self) -> float:
        """The threshold a live stream compares its scores with (``threshold_``, fixed at fit time);
        a ValueError under ``"paper"``, which has none (:func:`thresholds.stream_threshold`)."""
        self._require_fitted()
        return thresholds.stream_threshold(self.threshold, self.threshold_)

    def predict(self, X: Any) -> np.ndarray:
        """0/1 (int8) per time step: score > threshold (see :meth:`threshold_for`)."""
        scores = self.decision_function(X)
        self.last_threshold_ = self.threshold_for(scores)
        return _flags(scores, self.last_threshold_)

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X).predict(X)


def _scored(scores: Any) -> np.ndarray:
    """The scores that exist: ``scores`` without its NaN (missing steps, which have no score)."""
    s = np.asarray(scores, dtype=np.float64)
    return s[~np.isnan(s)]


def _flags(scores: Any, threshold: float) -> np.ndarray:
    """0/1 (int8) per step, score > threshold; 0 where the score is NaN (a missing step)."""
    s = np.asarray(scores, dtype=np.float64)
    scored = ~np.isnan(s)
    if scored.all():
        return predict(s, threshold)
    flags = np.zeros(s.shape, dtype=np.int8)
    flags[scored] = predict(s[scored], threshold)
    return flags
