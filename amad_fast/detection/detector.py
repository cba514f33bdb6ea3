"""``AMADDetector``: the scikit-learn/PyOD-style estimator of AMAD (fit, decision_function, predict,
save, load). The per-step scores come from :mod:`amad_fast.detection.scoring`, the training from
:mod:`amad_fast.detection.training`, the threshold from :mod:`amad_fast.detection.thresholds`."""
from __future__ import annotations

import math
import os
import warnings
from typing import Any, Optional, Tuple

import numpy as np
import torch

from amad_fast.data import BINARY_SCALINGS, Standardizer, check_series, window_starts
from amad_fast.data.series import NAN_POLICIES, missing_steps
from amad_fast.detection.estimator import DetectorBase
from amad_fast.detection.model import AMAD
from amad_fast.detection.progress import progress_line
from amad_fast.detection.scoring import (
    ERROR_NORMS,
    POSITION_NORMS,
    SCORES,
    ForwardCache,
    WindowScorer,
    _resolve_device,
    default_score_stride,
    default_smooth,
    fitted_channel_scale,
    position_error_profile,
)
from amad_fast.detection.stream import StreamScorer
from amad_fast.detection.thresholds import DEFAULT_CONTAMINATION
from amad_fast.detection.training import TrainConfig, train_model, validation_segments
from amad_fast.files import FileFormatError, content_must_fit, read_file, write_file

#: the file format of a saved AMAD detector (see :mod:`amad_fast.files`)
FORMAT = "amad_fast.detector/1"


class AMADDetector(DetectorBase):
    """Unsupervised multivariate anomaly detector (AMAD, spec §2–§4).

    ``fit(X)`` standardises X (T, C) with its own statistics, trains on windows taken every
    ``train_stride`` steps (``val_fraction`` of X held out for early stopping, at its end or, with
    ``val_split="blocks"``, at the end of each of many blocks) and scores the
    training series for the thresholds. ``decision_function(X)`` gives one score per time step
    (higher = more anomalous); ``predict(X)`` 0/1 by the threshold rule:

    * ``"train"`` (default): the ``1 − contamination`` quantile of the training scores only, fixed
      at fit time, so predict(X) of one step does not depend on the rest of X and clean data is
      flagged only where it scores above what training saw;
    * ``"pot"``: peaks-over-threshold on the training scores (fixed at fit time);
    * ``"paper"``: the published papers' protocol (Anomaly Transformer and its followers), for
      comparing with their tables: the same quantile of the stored training scores and X's scores
      together. It uses statistics of the data being judged, so about a fraction ``contamination``
      of any scored batch is flagged, even of clean data.

    The defaults are the configuration chosen per entity on the development data (SMAP's 53
    entities, omi-1, 8 synthetic entities; experiments/results/per_entity_*.md, rule in
    experiments/README.md): d_model 64 × 3 blocks, 4 heads, 2 epochs on windows every 5 steps,
    ``binary_scaling="unit"`` (two-valued channels on a 0/1 scale, not z-scored), score ``"recon"``
    (the spec's recon_js scores a little lower on the development benchmarks: both are reported)
    smoothed over half a window (``smooth=None``). maxmin, k, mu and lr come from the earlier
    ablations (experiments/results/ablation_omi1.md, ablation_synthetic.md): exact, k=1, mu=0.1,
    lr=1e-3. ``error_norm="channel"`` (per-channel error divided by its validation-split mean;
    "none" = spec §4's plain mean) was chosen on omi-1 (experiments/results/scoring_omi1.md);
    ``score_stride=None`` (windows every window_size // 10 steps, each step's terms averaged over
    the windows covering it; window_size = spec §4's non-overlapping windows) on omi-1 and the
    synthetic benchmark (experiments/results/score_stride_*.md); ``position_norm="train"`` (each
    window position's error divided by its training mean, so a series' first and last steps score
    like its middle; "none" = raw errors) on the same (experiments/results/position_norm.md).
    ``contamination`` is the expected fraction of anomalous steps in (0, 1) (PyOD's name and unit;
    0.01 = 1 %, the default). ``device="auto"`` (default) trains and scores on CUDA when it
    is available, else on the CPU (fit's plan line says which); a saved detector loads on any
    device. After ``fit``: ``decision_scores_`` (the training scores), ``threshold_`` and
    ``labels_`` as PyOD names them; ``error_scale_`` (C,) and ``position_scale_`` (L,), what scoring
    divides by (None under error_norm / position_norm "none"); ``scorer()`` the scoring itself. ``backend`` goes to every AutoMaskAttention. ``progress``
    shows a tqdm bar when stderr is a terminal. ``save``/``load`` round-trip exactly.
    ``nan_policy`` says what a NaN/Inf input value is: ``"interpolate"`` (default) fills it linearly
    per channel, ``"raise"`` refuses it, ``"mask"`` makes its step (any channel missing) a missing
    step: the standardisation statistics come from observed values, the step is a masked key
    (``key_padding_mask``) of every window holding it, the losses and score terms leave it out,
    windows with no observed step are skipped, and its score is NaN (never flagged, left out of
    thresholds). ``stream()`` and ``causal=True`` refuse missing steps.
    """

    def __init__(
        self,
        window_size: int = 100,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 3,
        num_scales: int = 4,
        d_ff: Optional[int] = None,
        dropout: float = 0.0,
        maxmin: str = "exact",
        k: float = 1.0,
        mu: float = 0.1,
        tau: float = 0.1,
        lr: float = 1e-3,
        epochs: int = 2,
        batch_size: int = 32,
        train_stride: int = 5,
        val_fraction: float = 0.2,
        val_split: str = "tail",
        patience: int = 3,
        score: str = "recon",
        error_norm: str = "channel",
        position_norm: str = "train",
        binary_scaling: str = "unit",
        smooth: Optional[int] = None,
        score_stride: Optional[int] = None,
        threshold: str = "train",
        contamination: float = DEFAULT_CONTAMINATION,
        temperature: float = 50.0,
        backend: str = "auto",
        device: str = "auto",
        seed: int = 0,
        checkpoint_dir: Optional[str] = None,
        resume: bool = False,
        progress: bool = True,
        score_batch_size: int = 128,
        nan_policy: str = "interpolate",
    ) -> None:
        for name, value in list(locals().items()):
            if name != "self":
                setattr(self, name, value)
        self._check_params()
        self.model_: Optional[AMAD] = None

    @property
    def fitted(self) -> bool:
        return self.model_ is not None

    def _check_params(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {self.score!r}")
        if self.error_norm not in ERROR_NORMS:
            raise ValueError(f"error_norm: expected one of {ERROR_NORMS}, got {self.error_norm!r}")
        if self.position_norm not in POSITION_NORMS:
            raise ValueError(f"position_norm: expected one of {POSITION_NORMS}, got {self.position_norm!r}")
        if self.binary_scaling not in BINARY_SCALINGS:
            raise ValueError(f"binary_scaling: expected one of {BINARY_SCALINGS}, got {self.binary_scaling!r}")
        if self.smooth is not None and (isinstance(self.smooth, bool) or not isinstance(self.smooth, (int, np.integer))
                                        or self.smooth < 1):
            raise ValueError(f"smooth: expected None (= window_size // 2) or an integer >= 1 (1 = no smoothing), "
                             f"got {self.smooth!r}")
        stride = self.score_stride
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, (int, np.integer))
                                   or not 1 <= stride <= self.window_size):
            raise ValueError(f"score_stride: expected None or an integer in [1, window_size={self.window_size}] "
                             f"(window_size = the paper's non-overlapping windows), got {stride!r}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {self.nan_policy!r}")
        self._check_threshold_params()
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature: expected a finite positive number, got {self.temperature!r}")
        self._train_config().validate()

    def _train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs, batch_size=self.batch_size, train_stride=self.train_stride, lr=self.lr,
            k=self.k, mu=self.mu, tau=self.tau, maxmin=self.maxmin, val_fraction=self.val_fraction,
            val_split=self.val_split,
            patience=self.patience, seed=self.seed, progress=self.progress,
            checkpoint_dir=self.checkpoint_dir, resume=self.resume,
        )

    def _build_model(self, n_channels: int) -> AMAD:
        return AMAD(
            n_channels, window_size=self.window_size, d_model=self.d_model, n_heads=self.n_heads,
            n_layers=self.n_layers, num_scales=self.num_scales, d_ff=self.d_ff, dropout=self.dropout,
            backend=self.backend,
        )

    def resolved_score_stride(self) -> int:
        """The stride between scoring windows in use: ``score_stride``, or window_size // 10 when None."""
        return int(self.score_stride) if self.score_stride is not None else default_score_stride(self.window_size)

    def resolved_smooth(self) -> int:
        """The width of the centred moving average of the scores: ``smooth``, or half a window
        (window_size // 2, at least 1) when None."""
        return int(self.smooth) if self.smooth is not None else default_smooth(self.window_size)

    def _position_scale(self, position_norm: str) -> Optional[np.ndarray]:
        """The position profile scoring divides by under ``position_norm``: the one measured at fit
        time for ``"train"``, None for ``"none"`` (so ``set_params(position_norm="none")`` scores a
        fitted detector with raw errors, for comparison)."""
        if position_norm not in POSITION_NORMS:
            raise ValueError(f"position_norm: expected one of {POSITION_NORMS}, got {position_norm!r}")
        if position_norm == "none":
            return None
        scale = getattr(self, "position_scale_", None)
        if scale is None:
            raise RuntimeError("position_norm='train' needs the position profile measured at fit time; this "
                               "detector was fitted with position_norm='none': refit it or set position_norm='none'")
        return scale

    def scorer(self, score: Optional[str] = None, smooth: Optional[int] = None, error_norm: Optional[str] = None,
               score_stride: Optional[int] = None, position_norm: Optional[str] = None) -> WindowScorer:
        """This fitted detector's scoring (:class:`~amad_fast.detection.scoring.WindowScorer`): its
        model, ``temperature`` and scoring parameters with what fit measured (error scale, position
        profile), or the ``score``, ``smooth`` (1 = per step), ``error_norm``, ``score_stride`` and
        ``position_norm`` given here, e.g. to compare scoring variants of one trained model."""
        self._require_fitted()
        return WindowScorer(
            self.model_, score=self.score if score is None else score, temperature=self.temperature,
            stride=self.resolved_score_stride() if score_stride is None else int(score_stride),
            smooth=self.resolved_smooth() if smooth is None else int(smooth),
            channel_scale=self._channel_scale(self.error_norm if error_norm is None else error_norm),
            position_scale=self._position_scale(self.position_norm if position_norm is None else position_norm),
            batch_size=self.score_batch_size, progress=self.progress)

    # -- fit / score / predict --------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "AMADDetector":
        """Train on X (T, C) (numpy array or tensor); ``y`` is ignored (unsupervised)."""
        self._check_params()
        A = check_series(X, "X", nan_policy=self.nan_policy)
        if A.shape[0] < self.window_size:
            raise ValueError(f"X: expected at least window_size={self.window_size} time steps, got {A.shape[0]}")
        self.standardizer_ = Standardizer(binary=self.binary_scaling).fit(A, name="X", nan_policy=self.nan_policy)
        Z = self.standardizer_.transform(A, name="X", nan_policy=self.nan_policy)
        missing = missing_steps(Z)
        if missing is not None and missing.all():
            raise ValueError("X: expected some fully observed steps, got a missing value in every step")
        device = _resolve_device(self.device)
        torch.manual_seed(self.seed)
        model = self._build_model(A.shape[1]).to(device)
        self.n_channels_ = int(A.shape[1])
        cfg = self._train_config()
        extra = {"standardizer": self.standardizer_.to_dict(), "detector_params": self.get_params()}
        result = train_model(model, Z, cfg, extra_state=extra)
        self.model_ = model
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        if self.progress:
            n_win = len(window_starts(Z.shape[0], self.window_size, self.resolved_score_stride(), cover_tail=True))
            progress_line(f"scoring the training series for the threshold ({n_win} windows, twice: the position "
                          f"profile, then the scores)")
        forwards = ForwardCache()  # the profile's forwards serve the scores' pass where its batches match
        self.position_scale_ = (position_error_profile(self.model_, Z, self.resolved_score_stride(),
                                                       self.score_batch_size, cache=forwards)
                                if self.position_norm == "train" else None)
        err, weight = self.scorer(error_norm="none").terms(Z, forwards)  # the terms do not depend on the error scale
        del forwards
        self.error_scale_ = None
        if self.error_norm == "channel":
            _, held_out = validation_segments(Z.shape[0], self.window_size, float(self.val_fraction), self.val_split)
            self.error_scale_ = fitted_channel_scale(err, held_out, self.standardizer_.binary_channels)
        self.train_scores_ = self.finite_scores(self.scorer().scores_from_terms(err, weight), "the training series X",
                                                missing)
        self.threshold_ = self._fixed_threshold()
        return self

    def score_terms(self, X: Any, score_stride: Optional[int] = None,
                    position_norm: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The model's per-step ingredients of X's scores, ``(err (T, C), weight (T,))`` as
        :func:`~amad_fast.detection.scoring.step_terms` computes them on X standardised with the
        training statistics, at this detector's ``score_stride`` and ``position_norm`` or the ones
        given here. ``scores_from_terms(*score_terms(X))`` equals ``decision_function(X)``; several
        scoring variants can share one set of forward passes."""
        Z = self._standardise(X)
        return self.scorer(score_stride=score_stride, position_norm=position_norm).terms(Z)

    def scores_from_terms(self, err: np.ndarray, weight: np.ndarray, score: Optional[str] = None,
                          smooth: Optional[int] = None, error_norm: Optional[str] = None) -> np.ndarray:
        """Scores from :meth:`score_terms` output under this detector's ``score``, ``smooth`` and
        ``error_norm``, or the ones given here (``smooth`` 1 = per step)."""
        return self.scorer(score=score, smooth=smooth, error_norm=error_norm).scores_from_terms(err, weight)

    def _channel_scale(self, error_norm: str) -> Optional[np.ndarray]:
        """The per-channel error divisor of ``error_norm`` (None for "none")."""
        if error_norm not in ERROR_NORMS:
            raise ValueError(f"error_norm: expected one of {ERROR_NORMS}, got {error_norm!r}")
        if error_norm == "none":
            return None
        scale = getattr(self, "error_scale_", None)
        if scale is None:
            raise RuntimeError("error_norm='channel' needs the error scale measured at fit time; "
                               "this detector was fitted with error_norm='none': refit it")
        return scale

    def _standardise(self, X: Any) -> np.ndarray:
        self._require_fitted()
        A = check_series(X, "X", expected_channels=self.n_channels_, nan_policy=self.nan_policy)
        if A.shape[0] < self.window_size:
            raise ValueError(f"X: expected at least window_size={self.window_size} time steps, got {A.shape[0]}")
        return self.standardizer_.transform(A, name="X", nan_policy=self.nan_policy)

    def decision_function(self, X: Any, causal: bool = False) -> np.ndarray:
        """Anomaly score per time step of X (T, C), float64 (T,); higher = more anomalous. Never
        NaN/Inf but for missing steps under ``nan_policy="mask"`` (NaN: a missing step has no
        score; causal scoring refuses them): non-finite inputs follow ``nan_policy``, values beyond ``Z_LIMIT`` training
        standard deviations are clipped (with a warning) or refused, and a score the model still
        could not compute finitely is a FloatingPointError (:meth:`DetectorBase.finite_scores`).

        ``causal=True`` scores as a live monitor can: step t from the one window that ends at t
        (the first L − 1 steps from the first window) and smoothed over the ``smooth`` steps up to
        t, so no step's score uses anything after it (:meth:`WindowScorer.causal_scores`). These are the
        numbers :meth:`stream` gives; the default, centred scoring is what the benchmarks measure."""
        Z = self._standardise(X)
        scorer = self.scorer()
        return self.finite_scores(scorer.causal_scores(Z) if causal else scorer.scores(Z), missing=missing_steps(Z))

    def stream(self) -> "StreamScorer":
        """A scorer for a series that arrives a few rows at a time (:class:`StreamScorer`): its
        ``update(rows)`` returns the scores of the steps those rows make computable, the same
        numbers as ``decision_function(whole series, causal=True)``, in O(window) memory."""
        self._require_fitted()
        return StreamScorer(self, self.scorer())

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the fitted detector to ``path``: atomic, plain data and tensors only (loadable with
        ``torch.load(weights_only=True)``), with the format, package version and a checksum of the
        content (:func:`amad_fast.files.write_file`)."""
        self._require_fitted()
        state = {
            "params": self.get_params(),
            "model_config": dict(self.model_.config),
            "model": {k: v.detach().cpu() for k, v in self.model_.state_dict().items()},
            "standardizer": self.standardizer_.to_dict(),
            "n_channels": self.n_channels_,
            "train_scores": torch.from_numpy(np.asarray(self.train_scores_, dtype=np.float64)),
            "threshold": self.threshold_,
            "error_scale": None if self.error_scale_ is None else torch.from_numpy(self.error_scale_),
            "position_scale": (None if getattr(self, "position_scale_", None) is None
                               else torch.from_numpy(np.asarray(self.position_scale_, dtype=np.float64))),
            "history": self.history_,
            "best_epoch": self.best_epoch_,
        }
        write_file(os.fspath(path), FORMAT, state)

    def export(self, path: str, format: str = "torchscript") -> None:
        """Write this fitted detector's scoring as one self-contained TorchScript file, loadable with
        ``torch.jit.load(path)`` where ``amad_fast`` is not installed: the loaded module maps a raw
        (T, C) float tensor to the float64 (T,) scores of :meth:`decision_function` (through the
        reference attention, on the CPU) and holds ``threshold_`` as its ``threshold`` attribute.
        Non-finite input is refused rather than interpolated; ``threshold="paper"`` (no fixed
        threshold) is refused. Why not ONNX: :mod:`amad_fast.detection.export`."""
        from amad_fast.detection.export import export_detector

        export_detector(self, path, format)

    @classmethod
    def load(cls, path: str, device: Optional[str] = None, backend: Optional[str] = None) -> "AMADDetector":
        """Load a detector written by :meth:`save`; ``device``/``backend`` override the stored ones.

        Read safely (``weights_only=True``; format and checksum checked, see
        :func:`amad_fast.files.read_file`): a file that is not a valid detector file raises a
        :class:`~amad_fast.files.FileFormatError` (a ValueError) naming it. The loaded detector does
        not inherit ``checkpoint_dir``/``resume`` (kept in ``fit_checkpoint_dir_``): refitting it
        must not overwrite, or resume from, the checkpoints of the run that trained it; set them
        again with ``set_params`` to checkpoint a new fit.
        """
        p = os.fspath(path)
        return cls._from_file_state(read_file(p, "detector file", formats=(FORMAT,), what="an AMAD detector file"),
                                    p, device, backend)

    @classmethod
    def _from_file_state(cls, state: dict, p: str, device: Optional[str] = None,
                         backend: Optional[str] = None) -> "AMADDetector":
        """The detector of a file's checked content (``read_file``); damage is a FileFormatError naming ``p``."""
        with content_must_fit(p, "detector file", "an AMAD detector"):
            return cls._from_state(state, p, device, backend)

    @classmethod
    def _from_state(cls, state: dict, p: str, device: Optional[str], backend: Optional[str]) -> "AMADDetector":
        params = cls._stored_params(state["params"])
        params.setdefault("error_norm", "none")  # files written before these options scored the spec's way:
        params.setdefault("score_stride", params.get("window_size", 100))  # non-overlapping windows
        params.setdefault("val_split", "tail")
        params.setdefault("binary_scaling", "zscore")
        params.setdefault("position_norm", "none")
        if device is not None:
            params["device"] = device
        elif str(params.get("device", "cpu")).startswith("cuda") and not torch.cuda.is_available():
            warnings.warn(f"load: the detector was fitted on {params['device']!r} but CUDA is not available; "
                          "loading it on the CPU", RuntimeWarning, stacklevel=3)
            params["device"] = "cpu"
        if backend is not None:
            params["backend"] = backend
        fit_checkpoint_dir = params.get("checkpoint_dir")
        params["checkpoint_dir"], params["resume"] = None, False  # see load's docstring
        known = set(cls._param_names())
        unknown = sorted(set(params) - known)
        if unknown:
            warnings.warn(f"load: ignoring unknown stored parameters {unknown}", RuntimeWarning, stacklevel=3)
        try:
            det = cls(**{k: v for k, v in params.items() if k in known})
        except ValueError as exc:
            raise FileFormatError(f"{p}: not a valid detector file: its stored parameters are invalid ({exc})") from None
        cfg = dict(state["model_config"])
        cfg["backend"] = det.backend
        model = AMAD(**cfg)
        model.load_state_dict(state["model"])
        det.model_ = model.to(_resolve_device(det.device)).eval()
        det.standardizer_ = Standardizer.from_dict(state["standardizer"])
        det.n_channels_ = int(state["n_channels"])
        det.train_scores_ = state["train_scores"].numpy()
        det.threshold_ = state["threshold"]
        scale = state.get("error_scale")
        det.error_scale_ = None if scale is None else scale.numpy()
        if det.error_norm == "channel" and det.error_scale_ is None:
            raise FileFormatError(f"{p}: not a valid detector file: it asks for error_norm='channel' but stores "
                                  "no error scale")
        pscale = state.get("position_scale")
        det.position_scale_ = None if pscale is None else pscale.numpy()
        if det.position_norm == "train" and (det.position_scale_ is None
                                             or det.position_scale_.shape != (det.window_size,)):
            raise FileFormatError(f"{p}: not a valid detector file: it asks for position_norm='train' but stores "
                                  f"no position profile of {det.window_size} values")
        det.history_ = state["history"]
        det.best_epoch_ = state["best_epoch"]
        det.fit_checkpoint_dir_ = fit_checkpoint_dir
        return det
