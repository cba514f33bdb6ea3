"""A fitted :class:`~amad_fast.detection.detector.AMADDetector` as one self-contained TorchScript
file: ``AMADDetector.export(path)`` writes it, ``torch.jit.load(path)`` reads it back without
``amad_fast`` installed, and calling the loaded module on a raw (T, C) float series returns the
float64 (T,) scores of ``det.decision_function(X)``; its ``threshold`` attribute is the detector's
fixed threshold (``threshold_``), so ``scores > threshold`` are its ``predict``.

What the file holds, and where each part comes from (nothing is reimplemented for the export
except the two-line affine standardisation, whose statistics come from the detector):

* the standardisation of :class:`amad_fast.data.Standardizer` (per-channel ``(x − mean) / std`` in
  float64 from the float32 input, two-valued channels on their 0/1 scale when fitted with
  ``binary_scaling="unit"``, values beyond ±``Z_LIMIT`` clipped), on the fitted statistics;
* the model's per-window terms, :func:`amad_fast.detection.scoring._window_terms` (forward pass,
  squared error divided by the position profile, js weight), *traced* on a copy of the model that
  runs the reference attention (plain PyTorch ops: no compiled extension, no Triton);
* the windows at the detector's score stride, their stride averaging, the channel error scale, the
  js weighting and the smoothing: the functions of :mod:`amad_fast.detection.scoring` that the
  detector itself scores with (:func:`scoring_window_starts`, :func:`add_window_terms`,
  :func:`combine_step_terms`, :func:`centred_moving_average`), *scripted* into the file.

What it does not do: non-finite input (NaN, ±Inf) is refused with an error instead of being
interpolated (the detector's ``nan_policy="interpolate"``); the warning for clipped extreme values
is not given (the values are clipped all the same); it runs on the CPU in float32, as traced. A
detector with ``threshold="paper"`` has no fixed threshold and is refused.

Why TorchScript and not ONNX (checked with torch 2.13): torch's TorchScript-based ONNX exporter
has no symbolic for ``aten::logaddexp``, which the reference attention forms the divergence anchor
with (``UnsupportedOperatorError`` at opsets 17 and 20); writing it as
``max(a, b) + log1p(exp(−|a − b|))`` avoids that operator but differs from ``logaddexp`` by up to
one float32 ulp, so the reference's numbers would change; past that operator the exporter stops
for want of the ``onnx`` package (the dynamo-based one for want of ``onnxscript``), which amad_fast
does not depend on, so whether the rest of the graph exports is unchecked;
and the scorer's length-dependent parts (the number of windows, the batch loop, the index
additions) need control flow over the runtime length, which scripting gives directly. TorchScript
itself is deprecated in torch 2.13 (``torch.jit`` warns so) but still writes and loads these files.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from amad_fast.data import Z_LIMIT
from amad_fast.detection.model import AMAD
from amad_fast.detection.scoring import (
    _window_terms,
    add_window_terms,
    centred_moving_average,
    combine_step_terms,
    scoring_window_starts,
)

#: the formats ``AMADDetector.export`` writes
EXPORT_FORMATS = ("torchscript",)

__all__ = ["EXPORT_FORMATS", "ExportedScorer", "WindowTerms", "export_detector"]


class WindowTerms(nn.Module):
    """:func:`~amad_fast.detection.scoring._window_terms` of a model as a module, so that it can be
    traced: standardised windows (B, L, C) → squared error (B, L, C) divided by ``position_scale``
    (L,) when given, and js weight (B, L), both float64."""

    def __init__(self, model: AMAD, temperature: float, position_scale: Optional[Tensor]) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        self.position_scale = position_scale

    def forward(self, windows: Tensor) -> Tuple[Tensor, Tensor]:
        return _window_terms(self.model, windows, self.temperature, self.position_scale)


class ExportedScorer(nn.Module):
    """The scoring of a fitted detector on raw series (module docstring); scripted by
    :func:`export_detector`. ``forward(X)``: X (T, C) float, T ≥ window_size → scores (T,) float64."""

    def __init__(self, window_terms: nn.Module, mean: Tensor, std: Tensor, channel_scale: Tensor, recon_js: bool,
                 window_size: int, score_stride: int, smooth: int, batch_size: int, threshold: float) -> None:
        super().__init__()
        self.window_terms = window_terms
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.register_buffer("channel_scale", channel_scale)
        self.recon_js = bool(recon_js)
        self.window_size = int(window_size)
        self.n_channels = int(mean.shape[0])
        self.score_stride = int(score_stride)
        self.smooth = int(smooth)
        self.batch_size = int(batch_size)
        self.threshold = float(threshold)
        self.z_limit = float(Z_LIMIT)

    def standardise(self, X: Tensor) -> Tensor:
        """X (T, C) → the model's float32 input: the detector's ``standardizer_.transform(X)``."""
        if X.dim() != 2 or X.shape[1] != self.n_channels:
            raise ValueError(f"X: expected a (T, C) series with C = {self.n_channels}, got shape {list(X.shape)}")
        if X.shape[0] < self.window_size:
            raise ValueError(f"X: expected at least window_size={self.window_size} time steps, got {X.shape[0]}")
        A = X.to(torch.float32)
        if not bool(torch.isfinite(A).all()):
            raise ValueError("X: expected finite values (within the float32 range); fill NaN/Inf before scoring")
        Z = (A.to(torch.float64) - self.mean) / self.std
        return Z.clamp(-self.z_limit, self.z_limit).to(torch.float32)

    def step_terms(self, Z: Tensor) -> Tuple[Tensor, Tensor]:
        """Per-step squared error (T, C) and js weight (T,) of the standardised series, averaged
        over the windows at the score stride that cover each step (``scoring.step_terms``)."""
        T, C, L = Z.shape[0], Z.shape[1], self.window_size
        starts, n_regular, regular_end = scoring_window_starts(T, L, self.score_stride, Z.device)
        err = torch.zeros(T, C, dtype=torch.float64, device=Z.device)
        weight = torch.zeros(T, dtype=torch.float64, device=Z.device)
        count = torch.zeros(T, dtype=torch.float64, device=Z.device)
        offsets = torch.arange(L, device=Z.device)
        for i in range(0, starts.shape[0], self.batch_size):
            idx = starts[i : i + self.batch_size].unsqueeze(1) + offsets
            e, w = self.window_terms(Z[idx])
            add_window_terms(err, weight, count, idx, i, n_regular, regular_end, e, w)
        return err / count.unsqueeze(1), weight / count

    def forward(self, X: Tensor) -> Tensor:
        err, weight = self.step_terms(self.standardise(X))
        scores = centred_moving_average(combine_step_terms(err, weight, self.recon_js, self.channel_scale), self.smooth)
        if not bool(torch.isfinite(scores).all()):
            raise FloatingPointError("scores: the computation overflowed (NaN/Inf scores); refusing to return them")
        return scores


def export_detector(det: Any, path: Any, format: str = "torchscript") -> None:
    """Write the fitted AMADDetector ``det`` to ``path`` as one TorchScript file (module docstring)."""
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format: expected one of {EXPORT_FORMATS}, got {format!r} (ONNX: see "
                         "amad_fast.detection.export's docstring for why it is not offered)")
    det._require_fitted()
    threshold = det.stream_threshold()  # a ValueError under "paper", which fixes no threshold
    scorer = det.scorer()
    cfg = dict(det.model_.config, backend="reference")
    model = AMAD(**cfg)
    model.load_state_dict({k: v.detach().cpu() for k, v in det.model_.state_dict().items()})
    model.eval().requires_grad_(False)  # the file scores; it does not train
    pos = (None if scorer.position_scale is None
           else torch.as_tensor(np.asarray(scorer.position_scale, dtype=np.float64)))
    terms = WindowTerms(model, scorer.temperature, pos).eval()
    L, C = det.window_size, det.n_channels_
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, L, C, generator=generator)
    with torch.no_grad(), warnings.catch_warnings():
        # the model's input checks read shapes and finiteness while tracing; they hold for every
        # batch of L × C windows, so freezing them as constants is what the export wants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(terms, (example,), check_inputs=[(torch.randn(3, L, C, generator=generator),)])
    channel_scale = (torch.ones(C, dtype=torch.float64) if scorer.channel_scale is None
                     else torch.as_tensor(np.asarray(scorer.channel_scale, dtype=np.float64)))
    std = det.standardizer_
    module = ExportedScorer(
        traced, torch.as_tensor(std.mean, dtype=torch.float64), torch.as_tensor(std.std, dtype=torch.float64),
        channel_scale, scorer.score == "recon_js", L, int(scorer.stride), scorer.smooth, scorer.batch_size,
        threshold)
    scripted = torch.jit.script(module.eval())
    torch.jit.save(scripted, os.fspath(path))

