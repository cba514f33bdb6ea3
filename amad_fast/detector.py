"""``AMADDetector``: the scikit-learn/PyOD-style front end (fit, decision_function, predict, save, load).

Scores follow spec §4 per window of length L: per time step t

    recon_js: softmax over the window's positions of (−T·js̄_t) × mean over channels (x_t − x̂_t)²
    recon:    mean over channels (x_t − x̂_t)²

with js̄_t the Jensen–Shannon divergence at row t averaged over blocks and heads, T = ``temperature``.
Higher means more anomalous.

Three scoring options beyond the spec (``AMADDetector(score_stride=..., error_norm=..., smooth=...)``),
and the input scaling ``binary_scaling`` (see :class:`amad_fast.data.Standardizer`):

* ``score_stride=s`` scores windows starting every s steps and gives each step the mean of the
  squared errors and of the js weights of the windows covering it. ``s = L`` is spec §4's
  protocol (non-overlapping windows, the tail scored from a window aligned to the series end);
  the default, L // 10, averages out where in its window a step happens to fall (errors and js
  depend on the position). Chosen on omi-1 and the synthetic benchmark, 3 seeds each: see
  experiments/results/score_stride_*.md.
* ``error_norm="channel"`` (default) divides channel c's squared error by its mean squared error
  on the validation split of the training series (floored at ``ERROR_SCALE_FLOOR``) before the
  mean over channels, so channels the model reconstructs badly even on normal data (e.g. rare
  binary command channels whose z-scores are huge) do not drown the others. ``"none"`` is the
  spec's plain mean. Chosen on omi-1 (development entity, 2 seeds): see
  experiments/results/scoring_omi1.md.
* ``position_norm="train"`` (default) divides the squared error at each position p of a scoring
  window by the model's mean error at position p over the training windows (the *position profile*,
  mean 1 over positions) before the windows covering a step are averaged. The model reconstructs the
  first and last positions of its window worse than the middle (on the synthetic entities about 4×
  at p = 0 and p = L − 1); in the middle of a series every step is averaged over many positions,
  but a series' first and last steps are seen only at a window's edge, so without it they score
  high for where they sit, not for what they are (issue 13). ``"none"`` averages raw errors.
  Measured per entity on the development benchmarks: experiments/results/position_norm.md.
* ``smooth=w`` replaces each step's score by the centred mean over w steps (default None = half a
  window, window_size // 2; 1 = per step). Chosen per entity on SMAP, omi-1 and synthetic entities:
  experiments/results/per_entity_*.md.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any, Optional, Tuple

import numpy as np
import torch

from .data import BINARY_SCALINGS, Standardizer, check_series, window_starts
from .estimator import THRESHOLDS, DetectorBase
from .model import AMAD
from .files import FileFormatError, content_must_fit, read_file, write_file
from .train import TrainConfig, progress_line, train_model, validation_segments

__all__ = ["AMADDetector", "StreamScorer", "causal_step_terms", "trailing_mean", "score_series", "step_terms", "combine_terms", "channel_error_scale", "smooth_scores",
           "position_error_profile", "SCORES", "POSITION_NORMS",
           "THRESHOLDS", "ERROR_NORMS"]

SCORES = ("recon_js", "recon")
ERROR_NORMS = ("none", "channel")
POSITION_NORMS = ("none", "train")
#: at most this many training windows (evenly spread) measure the position profile at fit time
PROFILE_WINDOWS = 1000
ERROR_SCALE_FLOOR = 1e-3
FORMAT = "amad_fast.detector/1"


def _resolve_device(device: Any) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: expected an available device, got {device!r} but CUDA is not available")
    return dev


def _window_terms(model: AMAD, x: torch.Tensor, temperature: float,
                  pos: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per window of x (B, L, C): the squared error (B, L, C) (divided by the position profile
    ``pos`` (L,) when given) and the recon_js weight (B, L), softmax over positions of −T·js̄."""
    res = model(x, need_branches=False)
    e = (x - res.recon).double() ** 2
    if pos is not None:
        e = e / pos[None, :, None]
    js = res.js.mean(dim=(0, 2))  # mean over blocks and heads → (B, L)
    return e, torch.softmax(-float(temperature) * js, dim=-1).double()


def _position_tensor(position_scale: Optional[np.ndarray], L: int, device: torch.device) -> Optional[torch.Tensor]:
    if position_scale is None:
        return None
    pos = torch.as_tensor(np.asarray(position_scale, dtype=np.float64), device=device)
    if pos.shape != (L,) or not bool(torch.isfinite(pos).all() and (pos > 0).all()):
        raise ValueError(f"position_scale: expected {L} finite positive values (one per window position), "
                         f"got shape {tuple(pos.shape)}")
    return pos


@torch.no_grad()
def step_terms(model: AMAD, series: np.ndarray, temperature: float = 50.0, batch_size: int = 128,
               stride: Optional[int] = None, progress: bool = False,
               position_scale: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Per-step ingredients of every score of a standardised series (T, C), spec §4.

    Returns ``(err, weight)``: ``err`` (T, C) float64 the squared reconstruction error per channel,
    ``weight`` (T,) float64 the softmax over the step's window positions of (−T·js̄_t). Windows
    start at 0, ``stride``, 2·``stride``, … (``stride`` None = L, spec §4's non-overlapping
    windows); a step covered by several windows gets the mean of their values. When the regular
    windows leave the last steps uncovered, a window aligned to the series end scores only those.
    ``position_scale`` (L,) divides each window's squared error at position p by
    ``position_scale[p]`` first (:func:`position_error_profile`; None = raw errors).
    Batched, under ``torch.no_grad``, in eval mode; ``progress`` shows a bar when stderr is a terminal.
    """
    L = model.window_size
    T, C = series.shape
    if T < L:
        raise ValueError(f"X: expected at least window_size={L} time steps to score, got {T}")
    stride = L if stride is None else int(stride)
    if not 1 <= stride <= L:
        raise ValueError(f"stride: expected an integer in [1, window_size={L}], got {stride}")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    data = torch.as_tensor(series, dtype=param.dtype, device=param.device)
    starts = window_starts(T, L, stride, cover_tail=True)
    n_regular = (T - L) // stride + 1  # starts[n_regular:] is the end-aligned tail window, if any
    regular_end = (n_regular - 1) * stride + L  # steps [0, regular_end) are covered by regular windows
    err = torch.zeros(T, C, dtype=torch.float64, device=data.device)
    weight = torch.zeros(T, dtype=torch.float64, device=data.device)
    count = torch.zeros(T, dtype=torch.float64, device=data.device)
    offsets = torch.arange(L, device=data.device)
    pos = _position_tensor(position_scale, L, data.device)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(starts), desc="scoring windows", unit="win", leave=False, dynamic_ncols=True,
               disable=not (progress and sys.stderr.isatty()))
    for i in range(0, len(starts), batch_size):
        idx = torch.as_tensor(starts[i : i + batch_size], device=data.device)[:, None] + offsets  # (B, L)
        e, w = _window_terms(model, data[idx], temperature, pos)
        is_tail = torch.arange(i, i + idx.shape[0], device=data.device)[:, None] >= n_regular
        keep = (~is_tail | (idx >= regular_end)).reshape(-1).double()  # the tail adds uncovered steps only
        flat = idx.reshape(-1)
        err.index_add_(0, flat, e.reshape(-1, C) * keep[:, None])
        weight.index_add_(0, flat, w.reshape(-1) * keep)
        count.index_add_(0, flat, keep)
        bar.update(idx.shape[0])
    bar.close()
    model.train(was_training)
    return (err / count[:, None]).cpu().numpy(), (weight / count).cpu().numpy()


@torch.no_grad()
def position_error_profile(model: AMAD, series: np.ndarray, stride: int, batch_size: int = 128,
                           max_windows: int = PROFILE_WINDOWS) -> np.ndarray:
    """The model's mean squared reconstruction error at each position of its window, (L,) float64
    with mean 1 over positions: over the windows of the standardised series (T, C) that start every
    ``stride`` steps (at most ``max_windows`` of them, evenly spread) and over channels, floored at
    ``ERROR_SCALE_FLOOR``. ``position_norm="train"`` divides scoring errors by it (module docstring)."""
    L = model.window_size
    starts = window_starts(series.shape[0], L, int(stride), cover_tail=False)
    if len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(np.int64)]
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    data = torch.as_tensor(series, dtype=param.dtype, device=param.device)
    offsets = torch.arange(L, device=data.device)
    total = torch.zeros(L, dtype=torch.float64, device=data.device)
    for i in range(0, len(starts), batch_size):
        x = data[torch.as_tensor(starts[i : i + batch_size], device=data.device)[:, None] + offsets]
        total += ((x - model(x, need_branches=False).recon).double() ** 2).mean(dim=2).sum(dim=0)
    model.train(was_training)
    profile = total.cpu().numpy()
    mean = profile.mean()
    if not (np.isfinite(mean) and mean > 0):  # a perfect (or broken) reconstruction: nothing to correct
        return np.ones(L)
    return np.maximum(profile / mean, ERROR_SCALE_FLOOR)


def combine_terms(err: np.ndarray, weight: np.ndarray, score: str = "recon_js",
                  channel_scale: Optional[np.ndarray] = None) -> np.ndarray:
    """Score per step from :func:`step_terms` output: mean over channels of err / channel_scale
    (``channel_scale`` None = 1, the spec's plain mean), times ``weight`` for ``"recon_js"``."""
    if score not in SCORES:
        raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
    e = err if channel_scale is None else err / np.asarray(channel_scale, dtype=np.float64)
    s = e.mean(axis=1)
    return s * weight if score == "recon_js" else s


def channel_error_scale(err: np.ndarray, floor: float = ERROR_SCALE_FLOOR) -> np.ndarray:
    """Per-channel typical squared error (mean over steps), floored at ``floor`` so that channels
    the model reconstructs (near-)perfectly on held-out data do not get an unbounded weight."""
    return np.maximum(np.asarray(err, dtype=np.float64).mean(axis=0), float(floor))


def smooth_scores(scores: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of length ``width`` (odd widths are symmetric); near the ends the mean
    is over the neighbours that exist, so the ends are not pulled towards zero. width 1 = identity."""
    s = np.asarray(scores, dtype=np.float64)
    if width <= 1:
        return s
    c = np.concatenate(([0.0], np.cumsum(s)))
    i = np.arange(len(s))
    lo = np.clip(i - (width - 1) // 2, 0, len(s))
    hi = np.clip(i + width // 2 + 1, 0, len(s))
    return (c[hi] - c[lo]) / (hi - lo)


def trailing_mean(scores: np.ndarray, width: int) -> np.ndarray:
    """Causal moving average: step t gets the mean of steps max(0, t − width + 1) … t (the first
    steps average over those that exist). width 1 = identity."""
    s = np.asarray(scores, dtype=np.float64)
    if width <= 1:
        return s
    c = np.concatenate(([0.0], np.cumsum(s)))
    i = np.arange(len(s))
    lo = np.maximum(i - width + 1, 0)
    return (c[i + 1] - c[lo]) / (i + 1 - lo)


@torch.no_grad()
def causal_step_terms(model: AMAD, series: np.ndarray, temperature: float = 50.0, batch_size: int = 128,
                      position_scale: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`step_terms` as a live monitor can compute them: step t ≥ L − 1 from the one window
    that ends at it (its last position), so nothing after t is used; the first L − 1 steps from the
    first window (positions 0 … L − 2), known once L steps have arrived. (T, C) and (T,), float64."""
    L = model.window_size
    T, C = series.shape
    if T < L:
        raise ValueError(f"X: expected at least window_size={L} time steps to score, got {T}")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    data = torch.as_tensor(series, dtype=param.dtype, device=param.device)
    pos = _position_tensor(position_scale, L, data.device)
    offsets = torch.arange(L, device=data.device)
    err = torch.empty(T, C, dtype=torch.float64, device=data.device)
    weight = torch.empty(T, dtype=torch.float64, device=data.device)
    for s0 in range(0, T - L + 1, batch_size):
        starts = torch.arange(s0, min(s0 + batch_size, T - L + 1), device=data.device)
        e, w = _window_terms(model, data[starts[:, None] + offsets], temperature, pos)
        err[starts + L - 1], weight[starts + L - 1] = e[:, -1], w[:, -1]
        if s0 == 0:
            err[: L - 1], weight[: L - 1] = e[0, :-1], w[0, :-1]
    model.train(was_training)
    return err.cpu().numpy(), weight.cpu().numpy()


def score_series(model: AMAD, series: np.ndarray, score: str = "recon_js", temperature: float = 50.0,
                 batch_size: int = 128, channel_scale: Optional[np.ndarray] = None,
                 smooth: int = 1, stride: Optional[int] = None) -> np.ndarray:
    """Anomaly score per time step of a standardised series (T, C) (spec §4), float64 (T,).

    ``channel_scale`` (C,) divides each channel's squared error before the mean over channels
    (``error_norm="channel"`` of :class:`AMADDetector`); None keeps the spec's plain mean.
    ``smooth`` > 1 replaces each step's score by the centred mean over ``smooth`` steps.
    ``stride`` between scoring windows as in :func:`step_terms` (None = L, non-overlapping).
    """
    if score not in SCORES:
        raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
    err, weight = step_terms(model, series, temperature, batch_size, stride)
    return smooth_scores(combine_terms(err, weight, score, channel_scale), smooth)


class AMADDetector(DetectorBase):
    """Unsupervised multivariate anomaly detector (AMAD, spec §2–§4).

    ``fit(X)`` standardises X (T, C) with its own statistics, trains on windows taken every
    ``train_stride`` steps (``val_fraction`` of X held out for early stopping, at its end or, with
    ``val_split="blocks"``, at the end of each of many blocks) and scores the
    training series for the thresholds. ``decision_function(X)`` gives one score per time step
    (higher = more anomalous); ``predict(X)`` 0/1 by the threshold rule:

    * ``"train"`` (default): percentile 100 − ``anomaly_ratio`` of the training scores only, fixed
      at fit time, so predict(X) of one step does not depend on the rest of X and clean data is
      flagged only where it scores above what training saw;
    * ``"pot"``: peaks-over-threshold on the training scores (fixed at fit time);
    * ``"paper"``: the published papers' protocol (Anomaly Transformer and its followers), for
      comparing with their tables: the same percentile of the stored training scores and X's scores
      together. It uses statistics of the data being judged, so about ``anomaly_ratio`` % of any
      scored batch is flagged, even of clean data.

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
    ``anomaly_ratio`` is in percent. ``device="auto"`` (default) trains and scores on CUDA when it
    is available, else on the CPU (fit's plan line says which); a saved detector loads on any
    device. After ``fit``: ``decision_scores_`` (the training scores), ``threshold_`` and
    ``labels_`` as PyOD names them. ``backend`` goes to every AutoMaskAttention. ``progress``
    shows a tqdm bar when stderr is a terminal. ``save``/``load`` round-trip exactly.
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
        anomaly_ratio: float = 1.0,
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
        return int(self.score_stride) if self.score_stride is not None else max(1, self.window_size // 10)

    def resolved_smooth(self) -> int:
        """The width of the centred moving average of the scores: ``smooth``, or half a window
        (window_size // 2, at least 1) when None."""
        return int(self.smooth) if self.smooth is not None else max(1, int(self.window_size) // 2)

    def _position_scale(self) -> Optional[np.ndarray]:
        """The position profile scoring divides by: the one measured at fit time under
        ``position_norm="train"``, None under ``"none"`` (so ``set_params(position_norm="none")``
        scores a fitted detector with raw errors, for comparison)."""
        if self.position_norm == "none":
            return None
        scale = getattr(self, "position_scale_", None)
        if scale is None:
            raise RuntimeError("position_norm='train' needs the position profile measured at fit time; this "
                               "detector was fitted with position_norm='none': refit it or set position_norm='none'")
        return scale

    def _step_terms(self, Z: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return step_terms(self.model_, Z, self.temperature, self.score_batch_size, self.resolved_score_stride(),
                          progress=self.progress, position_scale=self._position_scale())

    # -- fit / score / predict --------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "AMADDetector":
        """Train on X (T, C) (numpy array or tensor); ``y`` is ignored (unsupervised)."""
        self._check_params()
        A = check_series(X, "X", nan_policy=self.nan_policy)
        if A.shape[0] < self.window_size:
            raise ValueError(f"X: expected at least window_size={self.window_size} time steps, got {A.shape[0]}")
        self.standardizer_ = Standardizer(binary=self.binary_scaling).fit(A, name="X")
        Z = self.standardizer_.transform(A, name="X", nan_policy=self.nan_policy)
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
        self.position_scale_ = (position_error_profile(self.model_, Z, self.resolved_score_stride(),
                                                       self.score_batch_size)
                                if self.position_norm == "train" else None)
        err, weight = self._step_terms(Z)
        self.error_scale_ = self._error_scale(err)
        self.train_scores_ = self._finite_scores(self._combine(err, weight), "the training series X")
        self.threshold_ = self._fixed_threshold()
        return self

    def _error_scale(self, train_err: np.ndarray) -> Optional[np.ndarray]:
        """Per-channel squared-error scale for ``error_norm="channel"``: mean over the validation
        split of the training series (never trained on, so it measures the error the model makes on
        unseen normal data; see ``val_split``), or over all of it when there is no split."""
        if self.error_norm == "none":
            return None
        _, val = validation_segments(train_err.shape[0], self.window_size, float(self.val_fraction), self.val_split)
        part = np.concatenate([train_err[a:b] for a, b in val]) if val else train_err
        scale = channel_error_scale(part)
        scale[self.standardizer_.binary_channels] = 1.0  # unit-scaled flags: an error of 1 is one flip
        return scale

    def _combine(self, err: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return self.scores_from_terms(err, weight)

    def score_terms(self, X: Any) -> Tuple[np.ndarray, np.ndarray]:
        """The model's per-step ingredients of X's scores, ``(err (T, C), weight (T,))`` as
        :func:`step_terms` computes them on X standardised with the training statistics, at this
        detector's ``score_stride``. ``scores_from_terms(*score_terms(X))`` equals
        ``decision_function(X)``; several scoring variants can share one set of forward passes."""
        return self._step_terms(self._standardise(X))

    def scores_from_terms(self, err: np.ndarray, weight: np.ndarray, score: Optional[str] = None,
                          smooth: Optional[int] = None, error_norm: Optional[str] = None) -> np.ndarray:
        """Scores from :meth:`score_terms` output under this detector's ``score``, ``smooth`` and
        ``error_norm``, or the ones given here (``smooth`` 1 = per step)."""
        score = self.score if score is None else score
        width = self.resolved_smooth() if smooth is None else int(smooth)
        scale = self._channel_scale(self.error_norm if error_norm is None else error_norm)
        return smooth_scores(combine_terms(err, weight, score, scale), width)

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
        NaN/Inf: non-finite inputs follow ``nan_policy``, values beyond ``Z_LIMIT`` training
        standard deviations are clipped (with a warning) or refused, and a score the model still
        could not compute finitely is a FloatingPointError (:meth:`DetectorBase._finite_scores`).

        ``causal=True`` scores as a live monitor can: step t from the one window that ends at t
        (the first L − 1 steps from the first window) and smoothed over the ``smooth`` steps up to
        t, so no step's score uses anything after it (:func:`causal_step_terms`). These are the
        numbers :meth:`stream` gives; the default, centred scoring is what the benchmarks measure."""
        Z = self._standardise(X)
        if not causal:
            return self._finite_scores(self._combine(*self._step_terms(Z)))
        err, weight = causal_step_terms(self.model_, Z, self.temperature, self.score_batch_size,
                                        self._position_scale())
        raw = combine_terms(err, weight, self.score, self._channel_scale(self.error_norm))
        return self._finite_scores(trailing_mean(raw, self.resolved_smooth()))

    def stream(self) -> "StreamScorer":
        """A scorer for a series that arrives a few rows at a time (:class:`StreamScorer`): its
        ``update(rows)`` returns the scores of the steps those rows make computable, the same
        numbers as ``decision_function(whole series, causal=True)``, in O(window) memory."""
        self._require_fitted()
        return StreamScorer(self)

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
        params = dict(state["params"])
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


class StreamScorer:
    """Live scoring of one series with a fitted :class:`AMADDetector` (``det.stream()``).

    ``update(x)`` takes one row (C,) or several (n, C) in time order and returns, as float64, the
    scores of the steps that became computable: nothing until ``window_size`` rows have arrived,
    then the first ``window_size`` scores at once, then one score per row. The numbers are
    ``det.decision_function(series, causal=True)``'s (step t from the window ending at t, the
    score smoothed over the steps up to t). Memory is O(window_size + smooth) whatever the length
    of the stream. Compare scores with ``det.threshold_`` (the "train" and "pot" rules fix it at
    fit time; "paper" needs the whole scored series and has no streaming threshold).
    A row with NaN/Inf is refused (a stream cannot interpolate from steps that have not arrived);
    rows far outside the training range are clipped as in ``decision_function``.
    """

    def __init__(self, detector: AMADDetector) -> None:
        from collections import deque

        self.detector = detector
        L = detector.window_size
        param = next(detector.model_.parameters())
        self._dtype, self._device = param.dtype, param.device
        self._pos = _position_tensor(detector._position_scale(), L, param.device)
        self._scale = detector._channel_scale(detector.error_norm)
        self._rows: "deque[np.ndarray]" = deque(maxlen=L)  # the last L standardised rows
        self._recent = deque(maxlen=detector.resolved_smooth())  # the last raw scores, for the smoothing
        self.n_seen = 0  # rows received
        self.n_scored = 0  # scores returned

    def update(self, x: Any) -> np.ndarray:
        """Add rows x, (C,) or (n, C); return the scores of the steps they make computable."""
        det = self.detector
        A = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x)
        if A.ndim == 1:
            A = A[None, :]
        C = det.n_channels_
        if A.ndim != 2 or A.shape[1] != C or not np.issubdtype(A.dtype, np.number) or np.iscomplexobj(A):
            raise ValueError(f"x: expected one row of {C} numbers or an (n, {C}) array of them, got "
                             f"{'dtype ' + str(A.dtype) if not np.issubdtype(A.dtype, np.number) else 'shape ' + str(A.shape)}")
        A = A.astype(np.float64)
        bad = ~np.isfinite(A)
        if bad.any():
            r, c = (int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"x: expected finite values, got {A[r, c]} at row {r} of this update (stream step "
                             f"{self.n_seen + r}), channel {c}: a stream cannot interpolate from steps that have "
                             f"not arrived; fill the value (e.g. repeat the last one) before update")
        if A.shape[0] == 0:
            return np.empty(0)
        Z = det.standardizer_.transform(A, name="x", nan_policy=det.nan_policy)
        L = det.window_size
        windows, first = [], False
        for row in Z:
            self._rows.append(row)
            self.n_seen += 1
            if self.n_seen >= L:
                first = first or self.n_seen == L
                windows.append(np.stack(self._rows))
        if not windows:
            return np.empty(0)
        model = det.model_
        was_training = model.training
        model.eval()
        errs, weights = [], []
        with torch.no_grad():
            for i in range(0, len(windows), det.score_batch_size):
                xb = torch.as_tensor(np.stack(windows[i : i + det.score_batch_size]), dtype=self._dtype,
                                     device=self._device)
                e, w = _window_terms(model, xb, det.temperature, self._pos)
                if i == 0 and first:  # the first window also scores its first L - 1 steps
                    errs.append(e[0, :-1]), weights.append(w[0, :-1])
                errs.append(e[:, -1]), weights.append(w[:, -1])
        model.train(was_training)
        raw = combine_terms(torch.cat(errs).cpu().numpy(), torch.cat(weights).cpu().numpy(), det.score, self._scale)
        out = np.empty(len(raw))
        for i, r in enumerate(raw):
            self._recent.append(float(r))
            out[i] = sum(self._recent) / len(self._recent)
        self.n_scored += len(out)
        return det._finite_scores(out, "the stream")

