"""Live scoring: :class:`StreamScorer` (``AMADDetector.stream()``) scores rows as they arrive, each step
from the window that ends at it, in O(window) memory; it equals ``decision_function(X, causal=True)``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from amad_fast.detection.scoring import TrailingMeanState, WindowScorer

if TYPE_CHECKING:
    from amad_fast.detection.detector import AMADDetector


class StreamScorer:
    """Live scoring of one series with a fitted :class:`AMADDetector` (``det.stream()``).

    ``update(x)`` takes one row (C,) or several (n, C) in time order and returns, as float64, the
    scores of the steps that became computable: nothing until ``window_size`` rows have arrived,
    then the first ``window_size`` scores at once, then one score per row. The numbers are
    ``det.decision_function(series, causal=True)``'s (step t from the window ending at t, the
    score smoothed over the steps up to t). Memory is O(window_size + smooth) whatever the length
    of the stream. Compare scores with ``det.stream_threshold()`` (the "train" and "pot" rules fix
    it at fit time; "paper" needs the whole scored series and has no streaming threshold).
    A row with NaN/Inf is refused under every ``nan_policy``, ``"mask"`` included (a stream cannot
    interpolate from steps that have not arrived, and its causal scores take observed steps only);
    rows far outside the training range are clipped as in ``decision_function``.
    """

    def __init__(self, detector: AMADDetector, scorer: WindowScorer) -> None:
        from collections import deque

        self.detector = detector
        self.scorer = scorer  # the detector's scoring (detector.scorer())
        param = next(scorer.model.parameters())
        self._dtype, self._device = param.dtype, param.device
        self._rows: "deque[np.ndarray]" = deque(maxlen=scorer.window_size)  # the last L standardised rows
        self._smoothing = TrailingMeanState(scorer.smooth)  # the last raw scores, for the trailing mean
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
        L = self.scorer.window_size
        windows, first = [], False
        for row in Z:
            self._rows.append(row)
            self.n_seen += 1
            if self.n_seen >= L:
                first = first or self.n_seen == L
                windows.append(np.stack(self._rows))
        if not windows:
            return np.empty(0)
        errs, weights = [], []
        batch = self.scorer.batch_size
        for i in range(0, len(windows), batch):
            xb = torch.as_tensor(np.stack(windows[i : i + batch]), dtype=self._dtype, device=self._device)
            e, w = self.scorer.window_terms(xb)
            if i == 0 and first:  # the first window also scores its first L - 1 steps
                errs.append(e[0, :-1]), weights.append(w[0, :-1])
            errs.append(e[:, -1]), weights.append(w[:, -1])
        raw = self.scorer.raw_scores(torch.cat(errs).cpu().numpy(), torch.cat(weights).cpu().numpy())
        out = self._smoothing.push(raw)
        self.n_scored += len(out)
        return det.finite_scores(out, "the stream")
