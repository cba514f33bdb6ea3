"""Simple per-step baselines as detectors with :class:`~amad_fast.detection.detector.AMADDetector`'s API.

Sarfraz et al., "Quo Vadis, Unsupervised Time Series Anomaly Detection?" (ICML 2024, code
``ssarfraz/QuoVadisTAD``) show that scores computed from one time step at a time beat most deep
detectors. This module makes them first-class detectors, so methods can be compared by name::

    from amad_fast.detection.registry import make_detector, load_detector
    det = make_detector("knn").fit(train)          # or "random", "l2", "maxz", "pca", "iforest", "amad"
    scores = det.decision_function(test); labels = det.predict(test)
    det.save("knn.pt"); det = load_detector("knn.pt")

Every baseline z-scores each channel with the statistics of its *training* series
(:class:`~amad_fast.data.Standardizer`: mean and population std; a channel whose training std is
zero keeps std 1, so it is only centred), computed in float64, and scores each step ``z_t`` (C,):

==========  =========================================  ==============================================
name        class                                      score of step t (higher = more anomalous)
==========  =========================================  ==============================================
random      :class:`RandomDetector`                    ``numpy.random.default_rng(seed).uniform()``,
                                                       one draw per step (same seed and length →
                                                       same scores; the inputs are ignored)
l2          :class:`L2NormDetector`                    ``‖z_t‖₂``
maxz        :class:`MaxAbsZDetector`                   ``max_c |z_tc|``
pca         :class:`PCAErrorDetector`                  ``‖(z_t − μ) − (z_t − μ)VᵀV‖₂²``: squared
                                                       reconstruction error summed over channels,
                                                       V the principal axes of the standardised
                                                       training series (mean μ) explaining a fraction
                                                       ``variance`` (0.9) of its variance; none when
                                                       it has no variance at all
knn         :class:`NearestNeighborDetector`           Euclidean distance (not squared) to the
                                                       ``n_neighbors``-th (default 1st) nearest
                                                       training point, computed exactly
iforest     :class:`IsolationForestDetector`           ``−IsolationForest(n_estimators, random_state=
                                                       seed).score_samples(z_t)`` (scikit-learn)
==========  =========================================  ==============================================

Training scores (for the ``"train"``/``"pot"``/``"paper"`` thresholds, exactly AMADDetector's
rules) are the same scores of the training series, except for ``knn``: a training point's
nearest training point is itself (distance 0), so its training score is **leave-one-out**, the
distance to its ``n_neighbors``-th nearest *other* training point (a duplicate of it counts, at 0).

Ties are kept exact on purpose. Telemetry repeats itself: on SMAP 29 % of the test steps are exact
copies of a training point, and two entities have a single distinct training point. Brute-force
nearest neighbours through the product form ‖q‖² − 2q·r + ‖r‖² (scikit-learn's
``euclidean_distances``, behind ``NearestNeighbors`` and ``pairwise_distances``) turns those zero
distances into rounding noise (up to ~1e-8, growing with the norms), so the tied steps are ranked
by rounding, and partly by their norm, i.e. by the ``l2`` score: SMAP's mean 1-NN AUROC moves from
0.600 (exact, ties counted as ties) to 0.609. ``knn`` therefore computes every distance from the
differences, and ``pca`` sets squared errors at rounding level to 0 (see :func:`_pca_error`).

Dependencies: ``pca`` (a float64 SVD in torch, with scikit-learn's rule for
``PCA(n_components=variance, svd_solver="full")``) and ``knn`` (chunked torch) need only numpy and
torch; ``iforest`` needs scikit-learn (``pip install 'amad_fast[baselines]'``) and raises an
ImportError with that hint when it is missing. Importing this module never needs scikit-learn.

Relation to QuoVadisTAD's code (``quovadis_tad/baselines/simple_baselines.py``,
``evaluation/evaluation.py``, ``dataset_utils/data_utils.py``): ``LNorm`` =
``np.linalg.norm(x, axis=1)`` and ``NNDistance`` = ``pairwise_distances(test, train).min(1)``
(Euclidean, not squared) are the ``l2`` and ``knn`` (k = 1) definitions here. Differences: their
published runs scale each trace to [0, 1] with a training-set ``MinMaxScaler``
(``data_normalization="0-1"``), not z-scores; and their ``PCAError`` keeps a fixed 10 components
(≤ 50 channels), returns ``|x − x̂|`` per channel, and then picks per data set, by best F1 on the
test labels, one of three per-channel score normalisations (each followed by a moving average)
before a max over channels. That choice uses test labels, so it has no place in a detector: ``pca``
here keeps the fraction-of-variance rule and the squared error summed over channels, and every
baseline z-scores (this project's definition). In scikit-learn, a training series without variance
gives NaN variance ratios and one arbitrary component (it projects out whichever channel the SVD
returns first); here it gives no component.

Files written by :meth:`PointScoreDetector.save` hold plain dicts, lists and tensors only
(``torch.load(path, weights_only=True)`` opens them; no pickled scikit-learn object), with the
format, package version and checksum every amad_fast file carries (:mod:`amad_fast.files`): the
standardiser, the parameters, the training scores and threshold, and per method what rebuilds the
scorer exactly: PCA's mean and axes, knn's standardised training points, the isolation forest's
standardised training series (the forest is refitted with the stored seed on load; a refit that
does not reproduce the stored training scores, e.g. under another scikit-learn version, warns).
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Optional, Type

import numpy as np
import torch

from amad_fast.data import Standardizer, check_series
from amad_fast.data.series import NAN_POLICIES
from amad_fast.detection.estimator import DetectorBase
from amad_fast.detection.thresholds import DEFAULT_CONTAMINATION
from amad_fast.files import content_must_fit, read_file, write_file

__all__ = [
    "PointScoreDetector",
    "RandomDetector",
    "L2NormDetector",
    "MaxAbsZDetector",
    "PCAErrorDetector",
    "NearestNeighborDetector",
    "IsolationForestDetector",
    "BASELINES",
    "pca_fit",
    "kth_neighbor_distance",
    "FORMAT",
]

FORMAT = "amad_fast.baseline/1"
SKLEARN_HINT = "pip install 'amad_fast[baselines]' (or pip install scikit-learn)"


def _check_int(value: Any, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")


# ----------------------------------------------------------------------------------------------
# Scoring kernels (float64, in torch: numpy's BLAS threads and torch's would fight over the cores
# when both are used in one process, as comparing AMAD with the baselines does)
# ----------------------------------------------------------------------------------------------
def pca_fit(Z: np.ndarray, variance: float) -> Dict[str, np.ndarray]:
    """Mean (C,) and principal axes (k, C) of Z (T, C) explaining a fraction ``variance`` of its variance.

    k is scikit-learn's rule for ``PCA(n_components=variance, svd_solver="full")``: the fewest
    leading components whose explained-variance ratios sum to more than ``variance`` (all of them
    for ``variance`` = 1). When Z has no variance at all (every channel constant; scikit-learn then
    divides 0 by 0) k = 0: nothing is explained and the error is the squared distance to the mean.
    """
    Zt = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float64))
    mean = Zt.mean(dim=0)
    S, Vt = torch.linalg.svd(Zt - mean, full_matrices=False)[1:]
    ev = (S ** 2).numpy()
    total = float(ev.sum())
    if not total > 0.0:
        k = 0
    else:
        k = int(np.searchsorted(np.cumsum(ev / total), float(variance), side="right")) + 1
        k = min(k, int(np.count_nonzero(ev > 0)))
    return {"mean": mean.numpy(), "components": np.ascontiguousarray(Vt[:k].numpy())}


#: squared PCA errors below this fraction of (1 + ‖z − μ‖²) are rounding noise and count as 0
PCA_ZERO_TOL = 1e-20


def _pca_error(Z: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Squared distance of each row of Z to the affine subspace mean + span(components).

    Float64 rounding leaves a point that lies in the subspace a residual of ~1e-16·‖z − μ‖, a
    squared error of ~1e-32·‖z − μ‖²; errors below ``PCA_ZERO_TOL``·(1 + ‖z − μ‖²) are set to 0 so
    that such points tie, as they should, instead of being ranked by rounding. (On SMAP the noise
    lies between 1e-36 and 1e-31 of that scale and every real error above 1e-12.)
    """
    D = torch.from_numpy(np.ascontiguousarray(Z, dtype=np.float64)) - torch.from_numpy(np.asarray(mean, np.float64))
    V = torch.from_numpy(np.ascontiguousarray(components, dtype=np.float64))
    R = D - (D @ V.T) @ V
    err = (R * R).sum(1)
    err[err <= PCA_ZERO_TOL * (1.0 + (D * D).sum(1))] = 0.0
    return err.numpy()


def _kth_smallest(d2: torch.Tensor, counts: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the k-th smallest of the values d2 (B, M) each repeated counts (B, M) times."""
    v, order = d2.sort(dim=1)
    reached = counts.gather(1, order).cumsum(dim=1) >= k
    return v.gather(1, reached.to(torch.int8).argmax(dim=1, keepdim=True))[:, 0]


def kth_neighbor_distance(query: np.ndarray, ref: np.ndarray, k: int = 1, exclude_self: bool = False,
                          chunk: int = 512) -> np.ndarray:
    """Exact Euclidean distance (float64) from each query row to its k-th nearest row of ``ref``.

    ``exclude_self``: query is ref and row i may not be its own neighbour (leave-one-out; a
    duplicate of it at another index still counts, at distance 0). Exact: every returned distance
    is computed directly from the differences (so a point equal to a reference point is at 0, and
    equal differences give equal distances; the product form ‖q‖² − 2q·r + ‖r‖² that makes
    brute-force search fast blurs distances near 0 into rounding noise of ~1e-8, which reorders
    ties). How: duplicate reference rows are merged (with counts; telemetry repeats itself a lot:
    some SMAP entities have a single distinct training point); per chunk of queries the product
    form picks the k + 7 nearest distinct candidates, whose distances are then recomputed directly;
    a row is recomputed against every distinct reference point when a non-candidate could, within a
    bound on that rounding, be nearer than the k-th candidate. ``chunk`` queries at a time (fewer
    when the distinct reference points are many).
    """
    q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float64))
    n_ref = int(ref.shape[0]) - (1 if exclude_self else 0)
    if not 1 <= k <= n_ref:
        raise ValueError(f"n_neighbors: expected at most {n_ref} (the training points available"
                         f"{' to each one, itself left out' if exclude_self else ''}), got {k}")
    uniq, inverse, counts = np.unique(np.asarray(ref, dtype=np.float64), axis=0, return_inverse=True,
                                      return_counts=True)
    r = torch.from_numpy(np.ascontiguousarray(uniq))
    inv = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
    cnt_all = torch.from_numpy(counts.astype(np.int64))
    U = r.shape[0]
    n_cand = min(U, k + 7)
    rr = (r * r).sum(1)
    rr_max = float(rr.max())
    inf = float("inf")
    out = torch.empty(q.shape[0], dtype=torch.float64)
    chunk = max(1, min(int(chunk), (1 << 22) // U))  # the (chunk, U) distance block stays within 32 MiB
    for i in range(0, q.shape[0], chunk):
        qc = q[i : i + chunk]
        b = qc.shape[0]
        cnt = cnt_all.expand(b, U)
        if exclude_self:
            cnt = cnt.clone()
            cnt[torch.arange(b), inv[i : i + b]] -= 1
        qq = (qc * qc).sum(1, keepdim=True)
        d2 = torch.addmm(rr, qc, r.T, alpha=-2.0).add_(qq)
        d2.masked_fill_(cnt == 0, inf)
        approx, cand = d2.topk(n_cand, dim=1, largest=False)
        cand_cnt = cnt.gather(1, cand)
        exact = ((qc[:, None, :] - r[cand]) ** 2).sum(-1).masked_fill_(cand_cnt == 0, inf)
        kth = _kth_smallest(exact, cand_cnt, k)
        if n_cand < U:
            # a non-candidate j has approx d2_j >= approx[:, -1], and its true d2_j >= that minus the
            # rounding of the product form, at most ~(C + 3)·2^-53·2(‖q‖² + ‖r_j‖²): 1e-12 covers C < ~2000
            tol = 1e-12 * (qq[:, 0] + rr_max)
            redo = torch.nonzero(approx[:, -1] - tol < kth).flatten()
            step = max(1, (1 << 22) // max(1, U * r.shape[1]))
            for j0 in range(0, redo.numel(), step):
                rows = redo[j0 : j0 + step]
                full = ((qc[rows][:, None, :] - r[None]) ** 2).sum(-1)
                kth[rows] = _kth_smallest(full.masked_fill_(cnt[rows] == 0, inf), cnt[rows], k)
        out[i : i + b] = kth
    return np.sqrt(out.numpy())  # numpy's sqrt is correctly rounded (torch's CPU float64 sqrt is not always)


def _sklearn_isolation_forest():
    try:
        from sklearn.ensemble import IsolationForest
    except ImportError as exc:
        raise ImportError(f"IsolationForestDetector needs scikit-learn, which is not installed: {SKLEARN_HINT}") from exc
    return IsolationForest


def _sklearn_version() -> Optional[str]:
    try:
        import sklearn
    except ImportError:
        return None
    return str(sklearn.__version__)


# ----------------------------------------------------------------------------------------------
# The shared detector
# ----------------------------------------------------------------------------------------------
class PointScoreDetector(DetectorBase):
    """Base of the baselines: standardise, score each time step, threshold; save/load.

    Subclasses set ``method`` and implement ``_fit_scorer(Z)`` (fit on the standardised training
    series Z (T, C) float64 and return its training scores), ``_score(Z)`` (scores of a
    standardised series), and, when they hold a fitted model, ``_state()`` / ``_set_state(state)``
    (plain tensors/lists for the file). Everything else is here: the parameters
    (``threshold``, ``contamination`` (the expected fraction of anomalous steps, in (0, 1)), ``seed``,
    ``nan_policy`` plus the subclass's own), input checks (:func:`amad_fast.data.check_series`), the
    thresholds (AMADDetector's rules, :mod:`amad_fast.detection.thresholds`: ``"paper"`` = the
    ``1 − contamination`` quantile of the training and the judged scores together; ``"train"`` = that
    quantile of the training scores; ``"pot"`` = peaks over threshold on the training scores), and
    persistence.

    ``threshold`` defaults to ``"train"``, AMADDetector's default, so that detectors made by name
    with default settings are judged by the same rule. ``seed`` matters to ``random`` and
    ``iforest`` only; every baseline takes it so that all share one set of parameters.

    Fitted attributes: ``standardizer_``, ``n_channels_``, ``train_scores_`` (float64), ``threshold_``
    (None for "paper", which needs the judged scores: see :meth:`threshold_for`).
    """

    method: str = ""

    def __init__(self, threshold: str = "train", contamination: float = DEFAULT_CONTAMINATION, seed: int = 0,
                 nan_policy: str = "interpolate") -> None:
        self.threshold = threshold
        self.contamination = contamination
        self.seed = seed
        self.nan_policy = nan_policy
        self._check_params()
        self.standardizer_: Optional[Standardizer] = None

    def _check_params(self) -> None:
        self._check_threshold_params()
        _check_int(self.seed, "seed", 0)
        if self.nan_policy not in NAN_POLICIES or self.nan_policy == "mask":
            raise ValueError(f"nan_policy: expected 'interpolate' or 'raise' ('mask' is AMADDetector's only), "
                             f"got {self.nan_policy!r}")

    # -- what subclasses provide --------------------------------------------------------------
    def _fit_scorer(self, Z: np.ndarray) -> np.ndarray:
        return self._score(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _state(self) -> Dict[str, Any]:
        return {}

    def _set_state(self, state: Dict[str, Any], path: str) -> None:
        pass

    # -- fit / score / predict ------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.standardizer_ is not None

    def _z(self, A: np.ndarray) -> np.ndarray:
        """z-scores with the Standardizer's training statistics, kept in float64 (its transform
        rounds to the float32 the AMAD model takes; distances and PCA errors need no rounding);
        extreme values are clipped or refused as for AMAD (:meth:`Standardizer.zscore`)."""
        return self.standardizer_.zscore(A, "X", self.nan_policy, np.float64)

    def fit(self, X: Any, y: Any = None) -> "PointScoreDetector":
        """Fit on X (T, C) (numpy array or tensor); ``y`` is ignored (unsupervised)."""
        self._check_params()
        A = check_series(X, "X", nan_policy=self.nan_policy)
        self.standardizer_ = Standardizer().fit(A, name="X")
        self.n_channels_ = int(A.shape[1])
        try:
            self.train_scores_ = self.finite_scores(self._fit_scorer(self._z(A)), "the training series X")
        except BaseException:
            self.standardizer_ = None
            raise
        self.threshold_ = self._fixed_threshold()
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score per time step of X (T, C), float64 (T,); higher = more anomalous."""
        self._require_fitted()
        A = check_series(X, "X", expected_channels=self.n_channels_, nan_policy=self.nan_policy)
        return self.finite_scores(self._score(self._z(A)))

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Write the fitted detector to ``path`` (atomic; loadable with ``torch.load(weights_only=True)``)."""
        self._require_fitted()
        state = {
            "method": self.method,
            "params": self.get_params(),
            "standardizer": self.standardizer_.to_dict(),
            "n_channels": self.n_channels_,
            "train_scores": torch.from_numpy(np.array(self.train_scores_, dtype=np.float64)),
            "threshold": self.threshold_,
            "state": self._state(),
        }
        write_file(os.fspath(path), FORMAT, state)

    @classmethod
    def load(cls, path: Any) -> "PointScoreDetector":
        """Load a detector written by :meth:`save` (of this class's method)."""
        p = os.fspath(path)
        return cls._from_state(read_file(p, "detector file", formats=(FORMAT,), what="a baseline detector file"), p)

    @classmethod
    def _from_state(cls, state: Dict[str, Any], path: str) -> "PointScoreDetector":
        with content_must_fit(path, "detector file", "a baseline detector"):
            return cls._build_from_state(state, path)

    @classmethod
    def _build_from_state(cls, state: Dict[str, Any], path: str) -> "PointScoreDetector":
        if state.get("format") != FORMAT:
            raise ValueError(f"{path}: expected a baseline detector file of format {FORMAT!r}, "
                             f"got format {state.get('format')!r}")
        if cls is PointScoreDetector:  # PointScoreDetector.load opens any baseline
            method = state.get("method")
            if method not in BASELINES:
                raise ValueError(f"{path}: expected a method in {list(BASELINES)}, got {method!r}")
            cls = BASELINES[method]
        elif state.get("method") != cls.method:
            raise ValueError(f"{path}: expected a {cls.method!r} detector file for {cls.__name__}, got method "
                             f"{state.get('method')!r} (load_detector(path) opens any detector file)")
        params = cls._stored_params(state["params"])
        known = set(cls._param_names())
        unknown = sorted(set(params) - known)
        if unknown:
            warnings.warn(f"load: ignoring unknown stored parameters {unknown}", RuntimeWarning, stacklevel=3)
        det = cls(**{k: v for k, v in params.items() if k in known})
        det.standardizer_ = Standardizer.from_dict(state["standardizer"])
        det.n_channels_ = int(state["n_channels"])
        det.train_scores_ = state["train_scores"].numpy().astype(np.float64)
        det.threshold_ = state["threshold"]
        det._set_state(state.get("state") or {}, path)
        return det


# ----------------------------------------------------------------------------------------------
# The baselines
# ----------------------------------------------------------------------------------------------
class RandomDetector(PointScoreDetector):
    """Uniform random scores in [0, 1): ``numpy.random.default_rng(seed).uniform(size=T)`` for a
    series of T steps (the same seed and length give the same scores; the values are ignored).
    The floor every method should clear; point-adjusted F1 famously rewards it."""

    method = "random"

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return np.random.default_rng(int(self.seed)).uniform(size=Z.shape[0])


class L2NormDetector(PointScoreDetector):
    """Euclidean norm of the standardised step: ``‖z_t‖₂`` (QuoVadisTAD's "Simple L2_norm")."""

    method = "l2"

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return np.linalg.norm(Z, axis=1)


class MaxAbsZDetector(PointScoreDetector):
    """Largest absolute z-score over the channels: ``max_c |z_tc|``."""

    method = "maxz"

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return np.abs(Z).max(axis=1)


class PCAErrorDetector(PointScoreDetector):
    """Squared PCA reconstruction error summed over channels.

    PCA is fitted on the standardised training series keeping the fewest components that explain
    more than ``variance`` of its variance (scikit-learn's ``PCA(n_components=variance,
    svd_solver="full")`` rule, computed with torch: no scikit-learn needed); the score of z_t is
    ``‖(z_t − μ) − (z_t − μ)VᵀV‖²``. A training series with no variance at all keeps 0 components
    (score = squared distance to the training mean). ``components_`` (k, C) and ``mean_`` (C,)
    after fit. Needs at least 2 training steps.
    """

    method = "pca"

    def __init__(self, variance: float = 0.9, threshold: str = "train", contamination: float = DEFAULT_CONTAMINATION,
                 seed: int = 0, nan_policy: str = "interpolate") -> None:
        self.variance = variance
        super().__init__(threshold, contamination, seed, nan_policy)

    def _check_params(self) -> None:
        super()._check_params()
        v = self.variance
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0.0 < float(v) <= 1.0:
            raise ValueError(f"variance: expected the fraction of variance to keep, in (0, 1], got {v!r}")

    def _fit_scorer(self, Z: np.ndarray) -> np.ndarray:
        if Z.shape[0] < 2:
            raise ValueError(f"X: expected at least 2 time steps to fit a PCA, got {Z.shape[0]}")
        fitted = pca_fit(Z, float(self.variance))
        self.mean_, self.components_ = fitted["mean"], fitted["components"]
        return self._score(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return _pca_error(Z, self.mean_, self.components_)

    def _state(self) -> Dict[str, Any]:
        return {"mean": torch.from_numpy(self.mean_.copy()), "components": torch.from_numpy(self.components_.copy())}

    def _set_state(self, state: Dict[str, Any], path: str) -> None:
        try:
            self.mean_ = state["mean"].numpy().astype(np.float64)
            self.components_ = state["components"].numpy().astype(np.float64).reshape(-1, self.n_channels_)
        except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{path}: expected the PCA's 'mean' and 'components' tensors for "
                             f"{self.n_channels_} channel(s), got a damaged state ({exc})") from None


class NearestNeighborDetector(PointScoreDetector):
    """Euclidean distance (not squared) to the ``n_neighbors``-th nearest standardised training point.

    ``n_neighbors=1`` is QuoVadisTAD's "1-NN Distance". Exact (float64, in torch, no scikit-learn;
    see :func:`kth_neighbor_distance`). Training scores are leave-one-out: the distance from each
    training point to its ``n_neighbors``-th nearest *other* training point
    (its distance to itself, 0, would make every training score 0 for k = 1). ``train_`` (T, C)
    holds the standardised training points after fit.
    """

    method = "knn"

    def __init__(self, n_neighbors: int = 1, threshold: str = "train", contamination: float = DEFAULT_CONTAMINATION,
                 seed: int = 0, nan_policy: str = "interpolate") -> None:
        self.n_neighbors = n_neighbors
        super().__init__(threshold, contamination, seed, nan_policy)

    def _check_params(self) -> None:
        super()._check_params()
        _check_int(self.n_neighbors, "n_neighbors", 1)

    def _fit_scorer(self, Z: np.ndarray) -> np.ndarray:
        k = int(self.n_neighbors)
        if Z.shape[0] < k + 1:
            raise ValueError(f"X: expected at least n_neighbors + 1 = {k + 1} time steps (training scores "
                             f"leave each point out), got {Z.shape[0]}")
        self.train_ = np.ascontiguousarray(Z, dtype=np.float64)
        return kth_neighbor_distance(self.train_, self.train_, k, exclude_self=True)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return kth_neighbor_distance(Z, self.train_, int(self.n_neighbors))

    def _state(self) -> Dict[str, Any]:
        return {"train": torch.from_numpy(self.train_.copy())}

    def _set_state(self, state: Dict[str, Any], path: str) -> None:
        try:
            self.train_ = state["train"].numpy().astype(np.float64).reshape(-1, self.n_channels_)
        except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{path}: expected the standardised training points ('train') for "
                             f"{self.n_channels_} channel(s), got a damaged state ({exc})") from None


class IsolationForestDetector(PointScoreDetector):
    """``−score_samples`` of scikit-learn's ``IsolationForest(n_estimators, random_state=seed)``
    fitted on the standardised training series (other settings: scikit-learn's defaults,
    ``max_samples="auto"`` = min(256, T)). Needs scikit-learn (``pip install 'amad_fast[baselines]'``).

    The file stores the standardised training series, and :meth:`load` refits the forest with the
    stored seed: the same scikit-learn gives the identical forest; if the refit does not reproduce
    the stored training scores (another scikit-learn version), loading warns. ``forest_`` and
    ``train_`` (T, C) after fit.
    """

    method = "iforest"

    def __init__(self, n_estimators: int = 100, threshold: str = "train",
                 contamination: float = DEFAULT_CONTAMINATION, seed: int = 0, nan_policy: str = "interpolate") -> None:
        self.n_estimators = n_estimators
        super().__init__(threshold, contamination, seed, nan_policy)

    def _check_params(self) -> None:
        super()._check_params()
        _check_int(self.n_estimators, "n_estimators", 1)

    def _build(self, Z: np.ndarray):
        forest = _sklearn_isolation_forest()(n_estimators=int(self.n_estimators), random_state=int(self.seed))
        return forest.fit(Z)

    def _fit_scorer(self, Z: np.ndarray) -> np.ndarray:
        self.train_ = np.ascontiguousarray(Z, dtype=np.float64)
        self.forest_ = self._build(self.train_)
        self.sklearn_version_ = _sklearn_version()
        return self._score(self.train_)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return -self.forest_.score_samples(Z)

    def _state(self) -> Dict[str, Any]:
        return {"train": torch.from_numpy(self.train_.copy()), "sklearn_version": self.sklearn_version_}

    def _set_state(self, state: Dict[str, Any], path: str) -> None:
        try:
            self.train_ = state["train"].numpy().astype(np.float64).reshape(-1, self.n_channels_)
        except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{path}: expected the standardised training series ('train') for "
                             f"{self.n_channels_} channel(s), got a damaged state ({exc})") from None
        self.forest_ = self._build(self.train_)
        self.sklearn_version_ = _sklearn_version()
        if not np.array_equal(self._score(self.train_), self.train_scores_):
            warnings.warn(f"load: the isolation forest refitted from {path} does not reproduce the stored "
                          f"training scores (saved with scikit-learn {state.get('sklearn_version')}, now "
                          f"{self.sklearn_version_}); its scores differ from the saved detector's",
                          RuntimeWarning, stacklevel=4)


# ----------------------------------------------------------------------------------------------
# The baselines by name (:mod:`amad_fast.detection.registry` adds AMAD)
# ----------------------------------------------------------------------------------------------
BASELINES: Dict[str, Type[PointScoreDetector]] = {
    "random": RandomDetector,
    "l2": L2NormDetector,
    "maxz": MaxAbsZDetector,
    "pca": PCAErrorDetector,
    "knn": NearestNeighborDetector,
    "iforest": IsolationForestDetector,
}
