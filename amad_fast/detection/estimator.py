"""What every detector of the package shares: scikit-learn-style parameters and the threshold rules.

:class:`DetectorBase` applies the threshold rules of :mod:`amad_fast.detection.thresholds` (the one
place where scores become a threshold) for AMAD (:class:`amad_fast.detection.detector.AMADDetector`)
and the baselines (:mod:`amad_fast.detection.baselines`) alike:

* ``"paper"``: the ``1 − contamination`` quantile of the stored training scores and the judged
  scores together (Anomaly Transformer's protocol; it uses statistics of the data being judged);
* ``"train"``: the same quantile of the training scores only (fixed at fit time);
* ``"pot"``: peaks over threshold on the training scores (fixed at fit time).

``contamination`` is the expected fraction of anomalous steps in (0, 1), PyOD's name and unit.
A step is flagged when its score is above the threshold.
:meth:`DetectorBase.predict_proba` and :meth:`DetectorBase.predict_confidence` are PyOD's
transformations of a score against the training scores (min-max or Gaussian scaling; ExCeeD's
confidence in the 0/1 label), with PyOD's definitions; neither is a calibrated probability that a
step is anomalous.

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

__all__ = ["DetectorBase", "PROBA_METHODS"]

#: the rules of :meth:`DetectorBase.predict_proba` (PyOD's)
PROBA_METHODS = ("linear", "unify")


class DetectorBase:
    """Parameters (``get_params``/``set_params``/``repr``), thresholds, ``predict`` and PyOD's
    ``predict_proba``/``predict_confidence`` of a detector."""

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

    def __sklearn_is_fitted__(self) -> bool:
        """Whether ``fit`` has run, for scikit-learn's ``check_is_fitted`` (which otherwise guesses
        from the attributes ending in ``_``)."""
        return self.fitted

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's description of the estimator (asked for by its utilities such as
        ``check_is_fitted`` from version 1.6 on, where these tags exist): an outlier detector, as PyOD
        marks its own, that needs fit and takes no target."""
        from sklearn.utils import Tags, TargetTags

        return Tags(estimator_type="outlier_detector", target_tags=TargetTags(required=False))

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

    def predict(self, X: Any, return_confidence: bool = False) -> Any:
        """0/1 (int8) per time step: score > threshold (see :meth:`threshold_for`); with
        ``return_confidence=True`` also :meth:`predict_confidence`'s value per step (PyOD's signature),
        from the same scores."""
        scores = self.decision_function(X)
        self.last_threshold_ = self.threshold_for(scores)
        labels = _flags(scores, self.last_threshold_)
        if return_confidence:
            return labels, self._confidence_of_scores(scores, self.last_threshold_)
        return labels

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X).predict(X)

    # -- PyOD's transformations of the scores -------------------------------------------------------
    def predict_proba(self, X: Any, method: str = "linear", return_confidence: bool = False) -> Any:
        """PyOD's ``predict_proba``: per time step ``[1 − p, p]`` (shape ``(n, 2)``), ``p`` a score
        rescaled into [0, 1] by a fixed rule against the training scores ``decision_scores_``.

        ``p`` is **not** a calibrated probability that the step is anomalous: it is a monotone
        transformation of the score, and nothing ties its value to how often such steps are anomalous.
        It orders steps exactly as the score does (up to the clipping at 0 and 1) and does not depend on
        the threshold. The rules, as in ``pyod.models.base.BaseDetector.predict_proba``:

        * ``"linear"``: min-max scaling, ``(s − min) / (max − min)`` of the training scores, clipped
          to [0, 1] (computed as scikit-learn's ``MinMaxScaler`` does: a range under 10 machine epsilons
          counts as 1). A score above every training score gives 1, one below them 0.
        * ``"unify"``: Kriegel et al. (2011)'s Gaussian scaling, ``erf((s − μ) / (σ √2))`` clipped to
          [0, 1], with μ and σ the mean and (population) standard deviation of the training scores; it
          supposes those scores Gaussian, and every score at or below μ gives 0. Needs SciPy (installed
          with scikit-learn, the ``baselines`` extra); a ValueError when the training scores are
          constant (σ = 0), where the rule is undefined.

        ``return_confidence=True`` also returns :meth:`predict_confidence`'s values for the same scores.
        """
        if method not in PROBA_METHODS:
            raise ValueError(f"predict_proba: method: expected one of {PROBA_METHODS}, got {method!r}")
        self._require_fitted()
        scores = self.decision_function(X)
        train = np.asarray(self.train_scores_, dtype=np.float64)
        if method == "linear":
            span = float(train.max() - train.min())
            scale = 1.0 / (1.0 if span < 10 * np.finfo(np.float64).eps else span)
            p = scores * scale + (0.0 - train.min() * scale)
        else:
            from scipy.special import erf

            sigma = np.std(train)
            if sigma == 0:
                raise ValueError(f"{type(self).__name__}.predict_proba(method='unify'): the training scores are "
                                 f"all equal (standard deviation 0), so the Gaussian scaling is undefined; use "
                                 f"method='linear'")
            p = erf((scores - np.mean(train)) / (sigma * np.sqrt(2)))
        p = p.clip(0, 1)
        proba = np.stack((1 - p, p), axis=1)
        if return_confidence:
            return proba, self._confidence_of_scores(scores, self.threshold_for(scores))
        return proba

    def predict_confidence(self, X: Any) -> np.ndarray:
        """PyOD's ``predict_confidence``: per time step, ExCeeD's confidence (Perini et al., 2020) in
        :meth:`predict`'s 0/1 label, in [0, 1].

        It is **not** a probability that the step is anomalous: it is the probability, under ExCeeD's
        Bayesian model, that the detector would give the step the same label had it been fitted on
        another sample of ``n`` training scores. A step's position among the ``n`` training scores
        (``k`` of them at or below its score) gives ``p = (1 + k) / (2 + n)``; the step is flagged when
        it ranks among the top ``m`` training scores, with probability
        ``c = 1 − BinomialCDF(n − m; n, p)``; the confidence is ``c`` for a flagged step and
        ``1 − c`` for the others. ``m = int(n · contamination)`` under ``threshold="train"`` (PyOD's rule
        for a contamination-quantile threshold); under ``"pot"`` and ``"paper"``, whose thresholds do not
        come from ``contamination``, ``m`` is the number of training scores above the threshold the
        label uses (PyOD's rule for a threshold given by other means). ExCeeD treats the training scores
        as independent draws; the steps of a series are correlated, so there are fewer independent
        scores than ``n`` and the confidences are higher than the data warrant. Needs SciPy.
        """
        scores = self.decision_function(X)
        return self._confidence_of_scores(scores, self.threshold_for(scores))

    def _confidence_of_scores(self, scores: np.ndarray, threshold: float) -> np.ndarray:
        """:meth:`predict_confidence` of the steps with these scores, labelled by ``threshold``."""
        from scipy.stats import binom

        train = np.sort(np.asarray(self.train_scores_, dtype=np.float64))
        n = train.size
        if self.threshold == "train":
            n_flagged = int(n * self.contamination)
        else:
            n_flagged = int(np.count_nonzero(train > threshold))
        at_or_below = np.searchsorted(train, scores, side="right")
        posterior = (1 + at_or_below) / (2 + n)
        confidence = 1 - binom.cdf(n - n_flagged, n, posterior)
        return np.where(scores > threshold, confidence, 1 - confidence)


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
