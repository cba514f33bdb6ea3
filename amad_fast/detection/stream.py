"""Live scoring: :class:`StreamScorer` (``AMADDetector.stream()``) scores rows as they arrive, each step
from the window that ends at it, in O(window) memory; it equals ``decision_function(X, causal=True)``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from amad_fast.detection.detector import AMADDetector
from amad_fast.detection.scoring import _position_tensor, _window_terms, combine_terms


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
