"""Series containers, input checks, standardisation and windowing (numpy only)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One injected anomaly: steps ``start <= t < end`` of the test series, on ``channels``."""

    kind: str
    start: int
    end: int
    channels: Tuple[int, ...]

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "end": self.end, "channels": list(self.channels)}


@dataclass
class SeriesSplit:
    """A train/test split of one multivariate series.

    train:        (T_train, C) float32, assumed (mostly) free of anomalies; fits the standardiser.
    test:         (T_test, C) float32.
    test_labels:  (T_test,) int8 in {0, 1}, or None when the data set ships no labels.
    name:         short name used in reports.
    channel_names: column names when the source has them.
    train_labels: (T_train,) int8 when the source labels its training part (omi, SWaT), else None.
    segments:     injected anomalies (synthetic data only), in time order.
    info:         free-form provenance (paths, generator parameters, dropped columns).
    """

    train: np.ndarray
    test: np.ndarray
    test_labels: Optional[np.ndarray]
    name: str
    channel_names: Optional[List[str]] = None
    train_labels: Optional[np.ndarray] = None
    segments: Optional[List[Segment]] = None
    info: Dict[str, Any] = field(default_factory=dict)

    @property
    def n_channels(self) -> int:
        return int(self.train.shape[1])

    @property
    def anomaly_ratio_percent(self) -> Optional[float]:
        """Percentage of anomalous test steps (None without labels)."""
        if self.test_labels is None:
            return None
        return 100.0 * float(np.mean(self.test_labels)) if self.test_labels.size else 0.0

    def segments_by_kind(self) -> Dict[str, List[Segment]]:
        out: Dict[str, List[Segment]] = {}
        for seg in self.segments or []:
            out.setdefault(seg.kind, []).append(seg)
        return out

    def __repr__(self) -> str:  # arrays are big: show shapes only
        lab = "None" if self.test_labels is None else f"{int(self.test_labels.sum())} anomalous"
        return (f"SeriesSplit(name={self.name!r}, train={self.train.shape}, test={self.test.shape}, "
                f"test_labels={lab})")


class CSVData(NamedTuple):
    """What :func:`load_csv` returns."""

    values: np.ndarray            # (T, C) float32
    labels: Optional[np.ndarray]  # (T,) int8 or None
    columns: List[str]            # names of the value columns (generated when there is no header)
    dropped: List[str]            # non-numeric columns that were skipped (e.g. timestamps)
    ignored: Dict[str, str] = {}  # every column not used as a value -> why (index, timestamp, text, labels, ...)
    name: str = ""                # the file's name, for messages

    def describe(self) -> str:
        """One line: which columns are the series' channels and which are ignored, and why."""
        return describe_columns(self.name, self.columns, self.ignored)


def _name_list(names: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f", … ({len(names)} in all)" if len(names) > most else "")


def describe_columns(name: str, used: Sequence[str], ignored: Dict[str, str]) -> str:
    """``NAME: using N columns 'a', 'b'; ignoring 'time' (timestamp), 'note' (text, not a number)``."""
    line = f"{name}: using {len(used)} column{'s' if len(used) != 1 else ''} {_name_list(list(used))}"
    if ignored:
        line += "; ignoring " + ", ".join(f"{k!r} ({v})" for k, v in ignored.items())
    else:
        line += "; ignoring none"
    return line


# ----------------------------------------------------------------------------------------------
# Input hygiene
# ----------------------------------------------------------------------------------------------
def _to_numpy(X: Any, name: str) -> np.ndarray:
    """numpy view/copy of X; torch tensors are detached and moved to the CPU without importing torch."""
    if type(X).__module__.split(".")[0] == "torch" and hasattr(X, "detach"):
        t = X.detach()
        if getattr(t, "is_floating_point", lambda: False)() and str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        return t.cpu().numpy()
    try:
        return np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: expected an array-like of numbers, got {type(X).__name__} ({exc})") from None


def _fill_nonfinite(X: np.ndarray, name: str) -> np.ndarray:
    """Linear interpolation of non-finite entries per channel; edges take the nearest finite value."""
    bad = ~np.isfinite(X)
    cols = np.flatnonzero(bad.any(axis=0))
    all_bad = [int(c) for c in cols if bad[:, c].all()]
    if all_bad:
        raise ValueError(f"{name}: channel(s) {all_bad} contain no finite value, so they cannot be "
                         f"interpolated; expected at least one finite value per channel")
    X = X.copy()
    t = np.arange(X.shape[0])
    for c in cols:
        ok = ~bad[:, c]
        X[bad[:, c], c] = np.interp(t[bad[:, c]], t[ok], X[ok, c])
    warnings.warn(f"{name}: {int(bad.sum())} non-finite value(s) (NaN, ±Inf, or beyond the float32 range) in "
                  f"{len(cols)} channel(s) were filled by linear interpolation", RuntimeWarning, stacklevel=3)
    return X


#: what :func:`check_series` does with non-finite values (``nan_policy=``)
NAN_POLICIES = ("interpolate", "raise", "mask")


def missing_steps(Z: np.ndarray) -> Optional[np.ndarray]:
    """The missing steps of a series checked under ``nan_policy="mask"``: (T,) bool, True where any
    channel is NaN; None when every step is observed (so the unmasked path runs unchanged)."""
    missing = np.isnan(Z).any(axis=1)
    return missing if missing.any() else None


def fill_missing_steps(Z: np.ndarray, missing: Optional[np.ndarray]) -> np.ndarray:
    """Z with every channel of each ``missing`` step set to 0 (the training mean after
    standardisation): the model's token embedding mixes neighbouring steps, so a missing step must
    hold the same values whatever was observed in its other channels; attention ignores it
    through the key padding mask. Z itself when ``missing`` is None."""
    if missing is None:
        return Z
    filled = Z.copy()
    filled[missing] = 0.0
    return filled


def check_series(X: Any, name: str = "X", expected_channels: Optional[int] = None,
                 nan_policy: str = "interpolate") -> np.ndarray:
    """Validate a series and return it as a C-contiguous float32 (T, C) numpy array.

    Accepts numpy arrays, array-likes and torch tensors (any device). A 1-D input is one channel.
    Errors name the argument, what was expected and what came. Non-finite values (NaN, ±Inf, or
    values beyond the float32 range) are, by ``nan_policy``: ``"interpolate"`` — filled linearly
    per channel (edges by the nearest finite value) with a warning giving the count; ``"raise"`` —
    a ValueError; ``"mask"`` — kept as NaN (±Inf become NaN): the step is missing
    (:func:`missing_steps`). A channel with no finite value is always an error.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy: expected one of {NAN_POLICIES}, got {nan_policy!r}")
    A = _to_numpy(X, name)
    if A.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected a numeric (integer or floating) array, got dtype {A.dtype}")
    if A.ndim == 1:
        A = A[:, None]
    elif A.ndim != 2:
        raise ValueError(f"{name}: expected a 1-D (T,) or 2-D (T, C) array, got shape {tuple(A.shape)}")
    if A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (T, C) array with T >= 1 and C >= 1, "
                         f"got shape {tuple(A.shape)}")
    if expected_channels is not None and A.shape[1] != int(expected_channels):
        raise ValueError(f"{name}: expected {int(expected_channels)} channel(s) (the count the model was "
                         f"fitted with), got {A.shape[1]} (shape {tuple(A.shape)})")
    with np.errstate(over="ignore"):
        A = np.ascontiguousarray(A, dtype=np.float32)
    if not np.isfinite(A).all():
        if nan_policy == "raise":
            bad = ~np.isfinite(A)
            t, c = np.argwhere(bad)[0]
            raise ValueError(f"{name}: expected finite values, got {int(bad.sum())} non-finite value(s) "
                             f"(NaN, ±Inf, or beyond the float32 range), first at step {int(t)}, channel {int(c)}")
        if nan_policy == "interpolate":
            return _fill_nonfinite(A, name)
        A = np.where(np.isfinite(A), A, np.float32("nan"))
        empty = [int(c) for c in np.flatnonzero(np.isnan(A).all(axis=0))]
        if empty:
            raise ValueError(f"{name}: channel(s) {empty} contain no finite value; expected at least one observed "
                             f"value per channel (its standardisation statistics come from them)")
    return A


def check_labels(labels: Any, name: str = "labels", length: Optional[int] = None,
                 length_of: str = "the series") -> np.ndarray:
    """Validate 0/1 labels or predictions (bool, integer, or float that is exactly 0/1; a (T, 1)
    column is flattened); return a (T,) int8 array. Also the check behind amad_fast.metrics."""
    y = _to_numpy(labels, name)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of 0/1 values, got shape {tuple(y.shape)}")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric 0/1 values, got dtype {y.dtype}")
    if length is not None and y.shape[0] != int(length):
        raise ValueError(f"{name}: expected length {int(length)} (the length of {length_of}), got {y.shape[0]}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name}: expected 0/1 values, got {int((~np.isfinite(y)).sum())} non-finite value(s)")
    bad = (y != 0) & (y != 1)
    if bad.any():
        vals = np.unique(y[bad])[:5]
        raise ValueError(f"{name}: expected values in {{0, 1}}, got others such as {vals.tolist()}")
    return y.astype(np.int8)


BINARY_SCALINGS = ("zscore", "unit")

#: standardised values beyond ±Z_LIMIT (training standard deviations from the training mean) are
#: clipped to it with a warning, or refused under nan_policy="raise" (see Standardizer.zscore)
Z_LIMIT = 1e6


def _limit_extremes(Z: np.ndarray, name: str, nan_policy: str) -> np.ndarray:
    """Clip |Z| > Z_LIMIT in place (float64 Z) with a warning, or refuse under nan_policy="raise"."""
    big = np.abs(Z) > Z_LIMIT
    if not big.any():
        return Z
    t, c = (int(v) for v in np.argwhere(big)[0])
    worst = float(np.abs(Z).max())
    detail = (f"{int(big.sum())} value(s) lie more than {Z_LIMIT:g} training standard deviations from the "
              f"training mean (largest |z| = {worst:.3g}; first at step {t}, channel {c})")
    if nan_policy == "raise":
        raise ValueError(f"{name}: expected values within {Z_LIMIT:g} training standard deviations of the training "
                         f"mean, got {detail}; nan_policy='interpolate' clips them instead")
    warnings.warn(f"{name}: {detail}; they are clipped to ±{Z_LIMIT:g} (still the most anomalous values) so that "
                  f"the scores stay finite", RuntimeWarning, stacklevel=4)
    return np.clip(Z, -Z_LIMIT, Z_LIMIT, out=Z)


class Standardizer:
    """Per-channel z-scoring with statistics of the training series (spec §2).

    Channels whose training standard deviation is (numerically) zero keep std = 1, so they are only
    centred; their indices are in ``constant_channels`` and reported with a warning at fit time.
    ``binary="unit"`` maps each channel that takes exactly two values in the training series
    (on/off flags, such as SMAP's and MSL's command channels) to {0, 1} (lower value → 0) instead of
    z-scoring it: z-scoring a flag that is rarely on multiplies it by 1/std, so one flip reads as
    a deviation of tens of standard deviations and drowns the continuous channels; on the unit
    scale a flip is a change of 1, about one standard deviation of a z-scored channel. Their
    indices are in ``binary_channels``. It stays an affine map (x − mean) / std per channel.
    Serialisable with :meth:`to_dict` / :meth:`from_dict` (plain floats, JSON-safe).
    """

    def __init__(self, eps: float = 1e-8, binary: str = "zscore"):
        if binary not in BINARY_SCALINGS:
            raise ValueError(f"binary: expected one of {BINARY_SCALINGS}, got {binary!r}")
        self.eps = float(eps)
        self.binary = binary
        self.mean: Optional[np.ndarray] = None
        self.std: Optional[np.ndarray] = None
        self.constant_channels: List[int] = []
        self.binary_channels: List[int] = []

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    @property
    def n_channels(self) -> int:
        self._require_fitted()
        return int(self.mean.shape[0])

    def fit(self, X: Any, name: str = "train", warn: bool = True, nan_policy: str = "interpolate") -> "Standardizer":
        """Per-channel statistics of X (checked under ``nan_policy``); under ``"mask"`` from the
        observed steps only (a step with any NaN channel is missing, all of its values unused)."""
        A = check_series(X, name, nan_policy=nan_policy).astype(np.float64)
        missing = missing_steps(A)
        if missing is not None:
            if missing.all():
                raise ValueError(f"{name}: expected some fully observed steps, got a missing value in every step")
            A = A[~missing]
        mean = A.mean(axis=0)
        std = A.std(axis=0)
        const = std <= self.eps * np.maximum(1.0, np.abs(mean))
        std = np.where(const, 1.0, std)
        binary: List[int] = []
        if self.binary == "unit":
            lo, hi = A.min(axis=0), A.max(axis=0)
            for c in np.flatnonzero(~const):
                if np.all((A[:, c] == lo[c]) | (A[:, c] == hi[c])):
                    mean[c], std[c] = lo[c], hi[c] - lo[c]
                    binary.append(int(c))
        self.mean, self.std = mean, std
        self.constant_channels = [int(c) for c in np.flatnonzero(const)]
        self.binary_channels = binary
        if warn and self.constant_channels:
            warnings.warn(f"{name}: {len(self.constant_channels)} constant channel(s) {self.constant_channels} "
                          f"are only centred (std set to 1)", RuntimeWarning, stacklevel=2)
        return self

    def _require_fitted(self) -> None:
        if self.mean is None:
            raise RuntimeError("Standardizer: call fit(train) before transform / inverse_transform")

    def transform(self, X: Any, name: str = "X", nan_policy: str = "interpolate") -> np.ndarray:
        """Standardised X as float32 (the model's input); see :meth:`zscore`."""
        return self.zscore(X, name, nan_policy, np.float32)

    def zscore(self, X: Any, name: str = "X", nan_policy: str = "interpolate", dtype: Any = np.float64) -> np.ndarray:
        """(X − mean) / std per channel, computed in float64 and returned as ``dtype``.

        X is checked by :func:`check_series` (NaN/Inf by ``nan_policy``). A finite value can still be
        so far from the training data (1e20 in a channel of unit spread, say) that its z-score, or
        its square inside a model, overflows float32 and turns scores into NaN: values beyond
        ±:data:`Z_LIMIT` training standard deviations are clipped to it with a RuntimeWarning
        (the clipped value stays by far the most anomalous of the series), or refused with a
        ValueError under ``nan_policy="raise"``. Shared by AMAD and the baselines.
        """
        self._require_fitted()
        A = check_series(X, name, expected_channels=self.mean.shape[0], nan_policy=nan_policy)
        Z = (A.astype(np.float64) - self.mean) / self.std
        return _limit_extremes(Z, name, nan_policy).astype(dtype, copy=False)

    def fit_transform(self, X: Any, name: str = "train") -> np.ndarray:
        return self.fit(X, name).transform(X, name)

    def inverse_transform(self, Z: Any, name: str = "Z") -> np.ndarray:
        self._require_fitted()
        A = check_series(Z, name, expected_channels=self.mean.shape[0], nan_policy="raise")
        return (A * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> Dict[str, Any]:
        self._require_fitted()
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "constant_channels": list(self.constant_channels), "eps": self.eps,
                "binary": self.binary, "binary_channels": list(self.binary_channels)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Standardizer":
        for key in ("mean", "std"):
            if key not in d:
                raise KeyError(f"Standardizer.from_dict: expected key {key!r}, got keys {sorted(d)}")
        s = cls(eps=d.get("eps", 1e-8), binary=d.get("binary", "zscore"))  # older files: z-scores only
        s.mean = np.asarray(d["mean"], dtype=np.float64)
        s.std = np.asarray(d["std"], dtype=np.float64)
        if s.mean.ndim != 1 or s.mean.shape != s.std.shape or not (s.std > 0).all():
            raise ValueError(f"Standardizer.from_dict: expected equal-length mean/std with std > 0, got "
                             f"{s.mean.shape} and {s.std.shape}")
        s.constant_channels = [int(c) for c in d.get("constant_channels", [])]
        s.binary_channels = [int(c) for c in d.get("binary_channels", [])]
        return s


# ----------------------------------------------------------------------------------------------
# Windowing
# ----------------------------------------------------------------------------------------------
def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def window_starts(T: int, window: int, stride: int, cover_tail: bool = True) -> np.ndarray:
    """Start indices of the windows over a series of length T (spec §4).

    Starts are 0, stride, 2·stride, … while the window fits. With ``cover_tail`` a last window
    aligned to the series end (start T − window) is added when the regular ones leave steps
    uncovered, so with stride == window every step is covered, and all but the tail exactly once.
    """
    T = _positive_int(T, "T")
    window = _positive_int(window, "window")
    stride = _positive_int(stride, "stride")
    if T < window:
        raise ValueError(f"window: expected at most the series length T={T}, got window={window}; "
                         f"the series is too short to hold one window")
    starts = np.arange(0, T - window + 1, stride, dtype=np.int64)
    if cover_tail and starts[-1] + window < T:
        starts = np.append(starts, T - window)
    return starts


def sliding_windows(X: Any, window: int, stride: int = 1, cover_tail: bool = False) -> np.ndarray:
    """(N, window, C) windows of a (T, C) (or (T,)) array at :func:`window_starts` positions.

    Without a tail window the result is a read-only strided view (no copy); with one it is a
    copy (the tail start breaks the regular stride).
    """
    A = np.asarray(X)
    if A.ndim == 1:
        A = A[:, None]
    if A.ndim != 2:
        raise ValueError(f"X: expected a 1-D (T,) or 2-D (T, C) array, got shape {tuple(A.shape)}")
    starts = window_starts(A.shape[0], window, stride, cover_tail)
    view = np.lib.stride_tricks.sliding_window_view(A, int(window), axis=0)  # (T-w+1, C, w)
    view = view.transpose(0, 2, 1)                                           # (T-w+1, w, C)
    regular = view[:: int(stride)]
    if regular.shape[0] == starts.shape[0]:
        return regular
    return view[starts]


def windows_to_series(values: Any, starts: Any, length: int, reduce: str = "first") -> np.ndarray:
    """Map per-window values (N, window[, ...]) back to one value per step (length[, ...]).

    ``reduce="first"``: each step takes its value from the first window (in ``starts`` order, which
    must be ascending) that covers it — with :func:`window_starts` (stride == window, cover_tail) this
    gives each step exactly one score and the tail window contributes only the uncovered steps
    (spec §4). ``reduce="mean"`` averages over all covering windows (for overlapping strides).
    Steps covered by no window raise a ValueError.
    """
    V = np.asarray(values)
    s = np.asarray(starts, dtype=np.int64)
    length = _positive_int(length, "length")
    if V.ndim < 2 or V.shape[0] != s.shape[0]:
        raise ValueError(f"values: expected shape (N, window, ...) with N = len(starts) = {s.shape[0]}, "
                         f"got {tuple(V.shape)}")
    w = V.shape[1]
    if s.size and (s.min() < 0 or s.max() + w > length):
        raise ValueError(f"starts: expected windows inside [0, {length}), got starts in [{s.min()}, {s.max()}] "
                         f"with window {w}")
    if reduce == "first":
        if np.any(np.diff(s) < 0):
            raise ValueError("starts: expected ascending window starts for reduce='first'")
        t = np.arange(length)
        idx = np.searchsorted(s + w, t, side="right")  # first window whose end is beyond t
        ok = idx < s.shape[0]
        ok[ok] &= s[idx[ok]] <= t[ok]
        if not ok.all():
            raise ValueError(f"starts: step {int(np.flatnonzero(~ok)[0])} is covered by no window")
        return V[idx, t - s[idx]]
    if reduce == "mean":
        pos = (s[:, None] + np.arange(w)[None, :]).reshape(-1)
        counts = np.bincount(pos, minlength=length)
        if (counts == 0).any():
            raise ValueError(f"starts: step {int(np.flatnonzero(counts == 0)[0])} is covered by no window")
        flat = V.reshape(s.shape[0] * w, -1).astype(np.float64)
        sums = np.stack([np.bincount(pos, weights=flat[:, k], minlength=length) for k in range(flat.shape[1])], 1)
        return (sums / counts[:, None]).reshape((length,) + V.shape[2:])
    raise ValueError(f"reduce: expected 'first' or 'mean', got {reduce!r}")

def _require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: expected a file at {path!r}, found none")
    return path
