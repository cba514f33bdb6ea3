"""AMAD's per-step anomaly scores (the detector's scoring half).

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
  high for where they sit, not for what they are. ``"none"`` averages raw errors.
  Measured per entity on the development benchmarks: experiments/results/position_norm.md.
* ``smooth=w`` replaces each step's score by the centred mean over w steps (default None = half a
  window, window_size // 2; 1 = per step). Chosen per entity on SMAP, omi-1 and synthetic entities:
  experiments/results/per_entity_*.md."""
from __future__ import annotations

import sys
from collections import deque
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from amad_fast.data import window_starts
from amad_fast.data.series import fill_missing_steps, missing_steps
from amad_fast.detection.model import AMAD

SCORES = ("recon_js", "recon")
ERROR_NORMS = ("none", "channel")
POSITION_NORMS = ("none", "train")
#: at most this many training windows (evenly spread) measure the position profile at fit time
PROFILE_WINDOWS = 1000
ERROR_SCALE_FLOOR = 1e-3


def default_score_stride(window_size: int) -> int:
    """The stride between scoring windows when ``score_stride`` is None: a tenth of the window (at least 1)."""
    return max(1, int(window_size) // 10)


def default_smooth(window_size: int) -> int:
    """The smoothing width when ``smooth`` is None: half a window (at least 1)."""
    return max(1, int(window_size) // 2)


def _resolve_device(device: Any) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: expected an available device, got {device!r} but CUDA is not available")
    return dev


class ForwardCache:
    """Model outputs of scoring batches kept for a later pass over the same windows: fit scores the
    training series twice (the position profile, then the scores divided by it), and where a batch
    of the second pass holds exactly the windows of one of the first (same starts, same order), its
    forward is taken from here instead of being computed again (the same numbers bit for bit: the
    same model on the same input). An entry is dropped when it is used; at most
    ``PROFILE_WINDOWS`` windows' outputs are kept."""

    def __init__(self) -> None:
        self.outputs: dict = {}

    @staticmethod
    def _key(starts: np.ndarray) -> bytes:
        return np.ascontiguousarray(starts, dtype=np.int64).tobytes()

    def put(self, starts: np.ndarray, output: Any) -> None:
        self.outputs[self._key(starts)] = output

    def take(self, starts: np.ndarray) -> Any:
        """The output stored for this batch of window starts (removed), or None."""
        return self.outputs.pop(self._key(starts), None)


def _window_terms(model: AMAD, x: torch.Tensor, temperature: float, pos: Optional[torch.Tensor], res: Any = None,
                  missing: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per window of x (B, L, C): the squared error (B, L, C) (divided by the position profile
    ``pos`` (L,) when given) and the recon_js weight (B, L), softmax over positions of −T·js̄.
    ``res``: the model's output for x when already computed (:class:`ForwardCache`). ``missing``
    (B, L) bool: missing steps, masked keys of the forward; the softmax runs over the observed
    positions and both terms are 0 at missing ones (a window with no observed step gives 0s: its
    rows have no allowed key)."""
    if res is None:
        res = model(x, need_branches=False, key_padding_mask=missing)
    e = (x - res.recon).double() ** 2
    if pos is not None:
        e = e / pos[None, :, None]
    logits = -float(temperature) * res.js.mean(dim=(0, 2))  # js averaged over blocks and heads → (B, L)
    if missing is None:
        return e, torch.softmax(logits, dim=-1).double()
    w = torch.softmax(logits.masked_fill(missing, float("-inf")), dim=-1).double()
    return e.masked_fill(missing[..., None], 0.0), w.masked_fill(missing, 0.0)


def _position_tensor(position_scale: Optional[np.ndarray], L: int, device: torch.device) -> Optional[torch.Tensor]:
    if position_scale is None:
        return None
    pos = torch.as_tensor(np.asarray(position_scale, dtype=np.float64), device=device)
    if pos.shape != (L,) or not bool(torch.isfinite(pos).all() and (pos > 0).all()):
        raise ValueError(f"position_scale: expected {L} finite positive values (one per window position), "
                         f"got shape {tuple(pos.shape)}")
    return pos


def scoring_window_starts(T: int, L: int, stride: int, device: torch.device) -> Tuple[torch.Tensor, int, int]:
    """The scoring windows of a series of T steps, as :func:`amad_fast.data.window_starts` with
    ``cover_tail=True`` places them, in torch so that the exported scorer computes them too:
    ``(starts (N,) int64, n_regular, regular_end)``. Windows start at 0, stride, 2·stride, … while
    they fit (the first ``n_regular``, covering steps [0, regular_end)); when steps remain
    uncovered, one more window aligned to the series end (start T − L) follows."""
    n_regular = (T - L) // stride + 1
    regular_end = (n_regular - 1) * stride + L
    starts = torch.arange(n_regular, dtype=torch.long, device=device) * stride
    if regular_end < T:
        starts = torch.cat([starts, torch.full([1], T - L, dtype=torch.long, device=device)])
    return starts, n_regular, regular_end


def add_window_terms(err: torch.Tensor, weight: torch.Tensor, count: torch.Tensor, idx: torch.Tensor,
                     first: int, n_regular: int, regular_end: int, e: torch.Tensor, w: torch.Tensor,
                     observed: Optional[torch.Tensor] = None) -> None:
    """Add one batch of windows' terms into the per-step sums ``err`` (T, C), ``weight`` (T,) and
    ``count`` (T,) (float64, in place). ``idx`` (B, L) are the batch's step indices, ``first`` the
    index of its first window among all scoring windows, ``e`` (B, L, C) and ``w`` (B, L) its
    squared errors and js weights (:func:`_window_terms`). The end-aligned tail window (index ≥
    ``n_regular``) adds only the steps the regular windows leave uncovered (≥ ``regular_end``).
    ``observed`` (B, L) bool: only these steps are added (missing steps keep a count of 0)."""
    is_tail = torch.arange(first, first + idx.shape[0], device=idx.device)[:, None] >= n_regular
    kept = ~is_tail | (idx >= regular_end)
    if observed is not None:
        kept = kept & observed
    keep = kept.reshape(-1).double()
    flat = idx.reshape(-1)
    err.index_add_(0, flat, e.reshape(-1, err.shape[1]) * keep[:, None])
    weight.index_add_(0, flat, w.reshape(-1) * keep)
    count.index_add_(0, flat, keep)


@torch.inference_mode()
def step_terms(model: AMAD, series: np.ndarray, temperature: float = 50.0, batch_size: int = 128,
               stride: Optional[int] = None, progress: bool = False,
               position_scale: Optional[np.ndarray] = None,
               cache: Optional[ForwardCache] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Per-step ingredients of every score of a standardised series (T, C), spec §4.

    Returns ``(err, weight)``: ``err`` (T, C) float64 the squared reconstruction error per channel,
    ``weight`` (T,) float64 the softmax over the step's window positions of (−T·js̄_t). Windows
    start at 0, ``stride``, 2·``stride``, … (``stride`` None = L, spec §4's non-overlapping
    windows); a step covered by several windows gets the mean of their values. When the regular
    windows leave the last steps uncovered, a window aligned to the series end scores only those
    (:func:`scoring_window_starts`, :func:`add_window_terms`).
    ``position_scale`` (L,) divides each window's squared error at position p by
    ``position_scale[p]`` first (:func:`position_error_profile`; None = raw errors).
    Batched, under ``torch.inference_mode``, in eval mode; ``progress`` shows a bar when stderr is a
    terminal. ``cache``: forwards of an earlier pass over the same series, used where a batch matches.
    NaN in the series marks missing steps (any NaN channel; ``nan_policy="mask"``): masked keys of
    every window holding them (:func:`_window_terms`), their ``err`` and ``weight`` NaN (a missing
    step has no score, being counted by no window); a window without an observed step adds nothing.
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
    missing_np = missing_steps(series)
    data = torch.as_tensor(fill_missing_steps(series, missing_np), dtype=param.dtype, device=param.device)
    missing = None if missing_np is None else torch.as_tensor(missing_np, device=data.device)
    starts, n_regular, regular_end = scoring_window_starts(T, L, stride, data.device)
    err = torch.zeros(T, C, dtype=torch.float64, device=data.device)
    weight = torch.zeros(T, dtype=torch.float64, device=data.device)
    count = torch.zeros(T, dtype=torch.float64, device=data.device)
    offsets = torch.arange(L, device=data.device)
    pos = _position_tensor(position_scale, L, data.device)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(starts), desc="scoring windows", unit="win", leave=False, dynamic_ncols=True,
               disable=not (progress and sys.stderr.isatty()))
    for i in range(0, len(starts), batch_size):
        batch = starts[i : i + batch_size]
        idx = batch[:, None] + offsets  # (B, L)
        stored = cache.take(batch.cpu().numpy()) if cache is not None else None
        window_missing = None if missing is None else missing[idx]
        e, w = _window_terms(model, data[idx], temperature, pos, stored, window_missing)
        add_window_terms(err, weight, count, idx, i, n_regular, regular_end, e, w,
                         None if window_missing is None else ~window_missing)
        bar.update(idx.shape[0])
    bar.close()
    model.train(was_training)
    return (err / count[:, None]).cpu().numpy(), (weight / count).cpu().numpy()


@torch.inference_mode()
def position_error_profile(model: AMAD, series: np.ndarray, stride: int, batch_size: int = 128,
                           max_windows: int = PROFILE_WINDOWS, cache: Optional[ForwardCache] = None) -> np.ndarray:
    """The model's mean squared reconstruction error at each position of its window, (L,) float64
    with mean 1 over positions: over the windows of the standardised series (T, C) that start every
    ``stride`` steps (at most ``max_windows`` of them, evenly spread) and over channels, floored at
    ``ERROR_SCALE_FLOOR``. ``position_norm="train"`` divides scoring errors by it (module docstring).
    ``cache`` keeps each batch's model output for a :func:`step_terms` pass over the same windows.
    Missing steps (NaN, as in :func:`step_terms`) are masked keys and left out of the means."""
    L = model.window_size
    missing_np = missing_steps(series)
    starts = window_starts(series.shape[0], L, int(stride), cover_tail=False)
    if missing_np is not None:
        starts = starts[~missing_np[starts[:, None] + np.arange(L)].all(axis=1)]
        cache = None  # step_terms skips those windows too, but its batches need not line up with these
    if len(starts) > max_windows:
        starts = starts[np.linspace(0, len(starts) - 1, max_windows).round().astype(np.int64)]
        cache = None  # a spread subset: no batch of a full pass over the series holds the same windows
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    data = torch.as_tensor(fill_missing_steps(series, missing_np), dtype=param.dtype, device=param.device)
    missing = None if missing_np is None else torch.as_tensor(missing_np, device=data.device)
    offsets = torch.arange(L, device=data.device)
    total = torch.zeros(L, dtype=torch.float64, device=data.device)
    observed_count = torch.zeros(L, dtype=torch.float64, device=data.device)
    for i in range(0, len(starts), batch_size):
        idx = torch.as_tensor(starts[i : i + batch_size], device=data.device)[:, None] + offsets
        x = data[idx]
        window_missing = None if missing is None else missing[idx]
        res = model(x, need_branches=False, key_padding_mask=window_missing)
        if cache is not None:
            cache.put(starts[i : i + batch_size], res)
        step_error = ((x - res.recon).double() ** 2).mean(dim=2)
        if window_missing is None:
            total += step_error.sum(dim=0)
        else:
            total += step_error.masked_fill(window_missing, 0.0).sum(dim=0)
            observed_count += (~window_missing).sum(dim=0)
    model.train(was_training)
    if missing is not None:  # the mean over the windows where each position is observed
        total = total * len(starts) / observed_count.clamp(min=1)
    profile = total.cpu().numpy()
    mean = profile.mean()
    if not (np.isfinite(mean) and mean > 0):  # a perfect (or broken) reconstruction: nothing to correct
        return np.ones(L)
    return np.maximum(profile / mean, ERROR_SCALE_FLOOR)


def combine_step_terms(err: torch.Tensor, weight: torch.Tensor, recon_js: bool,
                       channel_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """Score per step (T,) from per-step terms (float64 tensors): mean over channels of err (T, C)
    / ``channel_scale`` (C,) (None = 1, the spec's plain mean), times ``weight`` (T,) when
    ``recon_js``. The one implementation behind :func:`combine_terms` and the exported scorer."""
    e = err if channel_scale is None else err / channel_scale
    s = e.mean(dim=1)
    return s * weight if recon_js else s


def combine_terms(err: np.ndarray, weight: np.ndarray, score: str = "recon_js",
                  channel_scale: Optional[np.ndarray] = None) -> np.ndarray:
    """Score per step from :func:`step_terms` output: mean over channels of err / channel_scale
    (``channel_scale`` None = 1, the spec's plain mean), times ``weight`` for ``"recon_js"``
    (:func:`combine_step_terms` on float64 arrays)."""
    if score not in SCORES:
        raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
    scale = None if channel_scale is None else torch.from_numpy(np.asarray(channel_scale, dtype=np.float64))
    return combine_step_terms(_float64_tensor(err), _float64_tensor(weight), score == "recon_js", scale).numpy()


def _float64_tensor(values: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(values, dtype=np.float64))


def channel_error_scale(err: np.ndarray, floor: float = ERROR_SCALE_FLOOR) -> np.ndarray:
    """Per-channel typical squared error (mean over steps; over the scored steps when missing ones
    are NaN), floored at ``floor`` so that channels the model reconstructs (near-)perfectly on
    held-out data do not get an unbounded weight."""
    err = np.asarray(err, dtype=np.float64)
    return np.maximum(np.nanmean(err, axis=0) if np.isnan(err).any() else err.mean(axis=0), float(floor))


def centred_moving_average(scores: torch.Tensor, width: int) -> torch.Tensor:
    """Centred moving average of length ``width`` of a float64 (T,) tensor (odd widths are
    symmetric); near the ends the mean is over the neighbours that exist, so the ends are not
    pulled towards zero. width 1 = identity. NaN scores (missing steps) stay NaN and the others
    average over the scored steps around them. The one implementation behind
    :func:`smooth_scores` and the exported scorer."""
    if width <= 1:
        return scores
    n = scores.shape[0]
    zero = torch.zeros(1, dtype=scores.dtype, device=scores.device)
    i = torch.arange(n, device=scores.device)
    lo = torch.clamp(i - (width - 1) // 2, 0, n)
    hi = torch.clamp(i + width // 2 + 1, 0, n)
    missing = torch.isnan(scores)
    if bool(missing.any()):
        c = torch.cat([zero, torch.cumsum(scores.masked_fill(missing, 0.0), dim=0)])
        scored = torch.cat([zero, torch.cumsum((~missing).to(scores.dtype), dim=0)])
        return torch.where(missing, scores, (c[hi] - c[lo]) / (scored[hi] - scored[lo]))
    c = torch.cat([zero, torch.cumsum(scores, dim=0)])
    return (c[hi] - c[lo]) / (hi - lo)


def smooth_scores(scores: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of length ``width`` (:func:`centred_moving_average`), float64 numpy."""
    return centred_moving_average(_float64_tensor(scores), int(width)).numpy()


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
    return WindowScorer(model, score, temperature, stride, smooth, channel_scale, None, batch_size).scores(series)


def fitted_channel_scale(train_err: np.ndarray, held_out: Sequence[Tuple[int, int]],
                         unit_channels: Any = ()) -> np.ndarray:
    """The per-channel error divisor of ``error_norm="channel"``: :func:`channel_error_scale` of the
    training series' squared errors ``train_err`` (T, C) over the ``held_out`` steps (``[a, b)``
    ranges: the validation split, never trained on, so it measures the error on unseen normal
    data), or over all of them when there is none. ``unit_channels`` (the two-valued channels
    scaled to 0/1, where an error of 1 is one flip) keep the scale 1."""
    part = np.concatenate([train_err[a:b] for a, b in held_out]) if len(held_out) else train_err
    scale = channel_error_scale(part)
    scale[np.asarray(unit_channels, dtype=np.int64)] = 1.0
    return scale


class TrailingMeanState:
    """:func:`trailing_mean` one value at a time, in O(width) memory: ``push(values)`` returns, for
    each new value, the mean of it and the up to ``width − 1`` values before it (a live stream's
    smoothing; the same means as ``trailing_mean`` of the whole sequence, up to rounding)."""

    def __init__(self, width: int) -> None:
        self.recent: "deque[float]" = deque(maxlen=max(1, int(width)))

    def push(self, values: Iterable[float]) -> np.ndarray:
        out: List[float] = []
        for v in values:
            self.recent.append(float(v))
            out.append(sum(self.recent) / len(self.recent))
        return np.asarray(out, dtype=np.float64)


class WindowScorer:
    """How a trained model's windows become per-step anomaly scores: the model with every scoring
    setting (module docstring) fixed, for batch, causal and live scoring alike.

    ``score`` ("recon_js"/"recon"), ``temperature`` (of the js weight), ``stride`` between scoring
    windows (None = L), ``smooth`` (width of the centred moving average; the trailing one for causal
    scores), ``channel_scale`` (C,) (None = the spec's plain channel mean), ``position_scale`` (L,)
    (None = raw errors), ``batch_size`` windows per forward pass, ``progress`` bar when stderr is a
    terminal. :class:`amad_fast.detection.detector.AMADDetector` builds one from its parameters and
    what ``fit`` measured (``det.scorer()``); its scores are this object's.
    """

    def __init__(self, model: AMAD, score: str = "recon_js", temperature: float = 50.0,
                 stride: Optional[int] = None, smooth: int = 1, channel_scale: Optional[np.ndarray] = None,
                 position_scale: Optional[np.ndarray] = None, batch_size: int = 128, progress: bool = False) -> None:
        if score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
        self.model, self.score, self.temperature = model, score, float(temperature)
        self.stride, self.smooth, self.batch_size, self.progress = stride, int(smooth), int(batch_size), progress
        self.channel_scale, self.position_scale = channel_scale, position_scale
        self._position_tensors: dict = {}

    @property
    def window_size(self) -> int:
        return self.model.window_size

    def terms(self, Z: np.ndarray, cache: Optional[ForwardCache] = None) -> Tuple[np.ndarray, np.ndarray]:
        """:func:`step_terms` of the standardised series Z (T, C): ``(err (T, C), weight (T,))``
        (``cache``: forwards of an earlier pass over Z, see :class:`ForwardCache`)."""
        return step_terms(self.model, Z, self.temperature, self.batch_size, self.stride, progress=self.progress,
                          position_scale=self.position_scale, cache=cache)

    def raw_scores(self, err: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Per-step scores of ``(err, weight)`` before smoothing (:func:`combine_terms`)."""
        return combine_terms(err, weight, self.score, self.channel_scale)

    def scores_from_terms(self, err: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """The scores of :meth:`terms` output: :meth:`raw_scores` under the centred moving average."""
        return smooth_scores(self.raw_scores(err, weight), self.smooth)

    def scores(self, Z: np.ndarray) -> np.ndarray:
        """Anomaly score per step of the standardised series Z (T, C), float64 (T,)."""
        return self.scores_from_terms(*self.terms(Z))

    def causal_scores(self, Z: np.ndarray) -> np.ndarray:
        """Scores that use nothing after their step: :func:`causal_step_terms`, then the trailing
        mean over ``smooth`` steps (:func:`trailing_mean`); what a live stream computes. A series
        with missing (NaN) steps is refused: live scoring takes observed steps only."""
        if missing_steps(Z) is not None:
            raise ValueError("X: causal (live) scoring takes no missing steps, got NaN at step "
                             f"{int(np.flatnonzero(missing_steps(Z))[0])}; score it with causal=False, where "
                             "nan_policy='mask' masks them, or fill them first")
        err, weight = causal_step_terms(self.model, Z, self.temperature, self.batch_size, self.position_scale)
        return trailing_mean(self.raw_scores(err, weight), self.smooth)

    @torch.no_grad()
    def window_terms(self, windows: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Squared error (B, L, C) and js weight (B, L) of a batch of standardised windows (B, L, C)
        on the model's device and dtype, the model in eval mode (a stream scores one window per row)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return _window_terms(self.model, windows, self.temperature, self._position_tensor(windows.device))
        finally:
            self.model.train(was_training)

    def _position_tensor(self, device: torch.device) -> Optional[torch.Tensor]:
        if device not in self._position_tensors:
            self._position_tensors[device] = _position_tensor(self.position_scale, self.window_size, device)
        return self._position_tensors[device]
