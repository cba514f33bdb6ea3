"""Data for amad_fast: loaders, a synthetic generator, input hygiene and windowing (numpy only).

Every loader returns a :class:`SeriesSplit`: a clean-ish training series, a test series and the
test labels (0/1 per time step), all as numpy arrays with time on axis 0 and channels on axis 1.
Nothing here imports torch; :func:`check_series` accepts torch tensors without importing it.

Supported layouts (see each loader's docstring for exactly what is read):

* Anomaly-Transformer ``.npy`` layout (SMAP, MSL, SMD, PSM, SWaT as that repository ships them):
  :func:`load_anomaly_transformer`.
* SMD as published by OmniAnomaly (``train/``, ``test/``, ``test_label/`` text files): :func:`load_smd`.
* PSM as published by eBay RANSynCoders (``train.csv``, ``test.csv``, ``test_label.csv``): :func:`load_psm`.
* SWaT in two CSV layouts used by public code: :func:`load_swat`.
* ``NAME_train.csv`` + ``NAME_test.csv`` pairs (ASD / omi style; ``label`` column optional): :func:`load_omi`;
  one CSV of one series (no labels needed): :func:`load_series_csv`; any CSV: :func:`load_csv`
  (index and time columns are recognised by name and content, never by position).
* A seeded synthetic benchmark (the package's built-in data): :func:`make_synthetic`.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "SeriesSplit",
    "Segment",
    "CSVData",
    "check_series",
    "check_labels",
    "Standardizer",
    "BINARY_SCALINGS",
    "Z_LIMIT",
    "window_starts",
    "sliding_windows",
    "windows_to_series",
    "load_anomaly_transformer",
    "load_smd",
    "load_psm",
    "load_swat",
    "load_csv",
    "load_npy",
    "load_omi",
    "load_series_csv",
    "describe_columns",
    "load_dataset",
    "list_entities",
    "iter_entities",
    "read_entity_table",
    "make_synthetic",
    "ANOMALY_KINDS",
]

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


def check_series(X: Any, name: str = "X", expected_channels: Optional[int] = None,
                 nan_policy: str = "interpolate") -> np.ndarray:
    """Validate a series and return it as a C-contiguous float32 (T, C) numpy array.

    Accepts numpy arrays, array-likes and torch tensors (any device). A 1-D input is one channel.
    Errors name the argument, what was expected and what came. Non-finite values (NaN, ±Inf, or
    values beyond the float32 range) are, by ``nan_policy``: ``"interpolate"`` — filled linearly
    per channel (edges by the nearest finite value) with a warning giving the count; ``"raise"`` —
    a ValueError. A channel with no finite value is always an error.
    """
    if nan_policy not in ("interpolate", "raise"):
        raise ValueError(f"nan_policy: expected 'interpolate' or 'raise', got {nan_policy!r}")
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
        A = _fill_nonfinite(A, name)
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

    def fit(self, X: Any, name: str = "train", warn: bool = True) -> "Standardizer":
        A = check_series(X, name).astype(np.float64)
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


# ----------------------------------------------------------------------------------------------
# File loaders
# ----------------------------------------------------------------------------------------------
def load_npy(path: PathLike, what: str = "array", mmap_mode: Optional[str] = None) -> np.ndarray:
    """``np.load`` of a .npy array without pickles; a file that is not one (truncated, text, an
    object array, empty) is a ValueError that names the path and ``what`` it should hold. A missing
    or unreadable file keeps its OSError (whose message names the path)."""
    p = os.fspath(path)
    try:
        arr = np.load(p, mmap_mode=mmap_mode, allow_pickle=False)
    except OSError as exc:
        if exc.filename is not None:  # the OS refused the path itself
            raise
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{p}: not a valid .npy array ({what}): {type(exc).__name__}: {reason}") from None
    except Exception as exc:  # ValueError, EOFError, UnpicklingError: damage of some kind
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{p}: not a valid .npy array ({what}): {type(exc).__name__}: {reason}") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise ValueError(f"{p}: expected a .npy array ({what}), got a {type(arr).__name__} (an .npz archive?)")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{p}: expected a numeric .npy array ({what}), got dtype {arr.dtype}")
    return arr


def _require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: expected a file at {path!r}, found none")
    return path


def _make_split(name: str, train: Any, test: Any, test_labels: Any, nan_policy: str,
                **extra: Any) -> SeriesSplit:
    """Validate the three arrays together (shapes, channels, label length) and build the split."""
    tr = check_series(train, f"{name} train", nan_policy=nan_policy)
    te = check_series(test, f"{name} test", expected_channels=tr.shape[1], nan_policy=nan_policy)
    lab = None if test_labels is None else check_labels(test_labels, f"{name} test labels", te.shape[0],
                                                        "the test series")
    tl = extra.pop("train_labels", None)
    if tl is not None:
        tl = check_labels(tl, f"{name} train labels", tr.shape[0], "the train series")
    return SeriesSplit(train=tr, test=te, test_labels=lab, name=name, train_labels=tl, **extra)


def load_anomaly_transformer(root: PathLike, name: Optional[str] = None,
                             nan_policy: str = "interpolate") -> SeriesSplit:
    """Load ``root/NAME_train.npy``, ``NAME_test.npy`` and ``NAME_test_label.npy`` (optional).

    This is the layout Anomaly Transformer's loaders read (SMAP, MSL, and its SMD/PSM/SWaT files).
    ``name`` defaults to the single ``*_train.npy`` prefix found in ``root``. NaN/Inf follow
    ``nan_policy`` (see :func:`check_series`).
    """
    root = os.fspath(root)
    if name is None:
        found = sorted(os.path.basename(p)[: -len("_train.npy")]
                       for p in glob.glob(os.path.join(root, "*_train.npy")))
        if len(found) != 1:
            raise ValueError(f"name: expected exactly one NAME_train.npy in {root!r} to infer the name, "
                             f"got {found}; pass name=")
        name = found[0]
    train = load_npy(_require_file(os.path.join(root, f"{name}_train.npy"), "train"), f"{name} train")
    test = load_npy(_require_file(os.path.join(root, f"{name}_test.npy"), "test"), f"{name} test")
    lp = os.path.join(root, f"{name}_test_label.npy")
    labels = load_npy(lp, f"{name} test labels") if os.path.isfile(lp) else None
    return _make_split(name, train, test, labels, nan_policy, info={"root": root, "layout": "anomaly_transformer"})


def _natural_key(s: str) -> List[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def load_smd(root: PathLike, machine: Union[None, str, Sequence[str]] = "machine-1-1",
             nan_policy: str = "interpolate") -> SeriesSplit:
    """Load SMD (Server Machine Dataset) in its published OmniAnomaly layout.

    Reads ``root/train/M.txt``, ``root/test/M.txt`` and ``root/test_label/M.txt`` (comma-separated,
    no header, 38 columns; labels one 0/1 per line) for one machine ``M`` (e.g. ``"machine-1-1"``),
    a list of machines, or ``None`` for all machines found in ``root/train``; several machines are
    concatenated in natural order (machine-1-1, machine-1-2, …, machine-3-11), which is how the
    Anomaly-Transformer ``SMD_*.npy`` files were made. The interpretation labels are not read.
    """
    root = os.fspath(root)
    if machine is None:
        machines = sorted((os.path.basename(p)[:-4] for p in glob.glob(os.path.join(root, "train", "*.txt"))),
                          key=_natural_key)
        if not machines:
            raise FileNotFoundError(f"root: expected SMD text files in {os.path.join(root, 'train')!r}, found none")
    elif isinstance(machine, str):
        machines = [machine]
    else:
        machines = list(machine)
    parts: Dict[str, List[np.ndarray]] = {"train": [], "test": [], "test_label": []}
    for m in machines:
        for sub in parts:
            path = _require_file(os.path.join(root, sub, f"{m}.txt"), f"SMD {sub} of {m}")
            arr = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2 if sub != "test_label" else 1)
            parts[sub].append(arr.reshape(-1) if sub == "test_label" else arr)
    name = "SMD" if len(machines) != 1 else f"SMD/{machines[0]}"
    return _make_split(name, np.concatenate(parts["train"]), np.concatenate(parts["test"]),
                       np.concatenate(parts["test_label"]), nan_policy,
                       info={"root": root, "layout": "smd_omnianomaly", "machines": machines})


def load_psm(root: PathLike, nan_policy: str = "interpolate") -> SeriesSplit:
    """Load PSM (Pooled Server Metrics, eBay) in its published layout.

    ``root/train.csv`` and ``root/test.csv``: header row, first column ``timestamp_(min)`` (dropped),
    25 feature columns; ``root/test_label.csv``: ``timestamp_(min),label``. The training file has
    missing values; they follow ``nan_policy`` (Anomaly Transformer replaced them by 0 instead).
    """
    root = os.fspath(root)
    tr = load_csv(_require_file(os.path.join(root, "train.csv"), "PSM train"), index_column=0,
                  nan_policy=nan_policy, name="PSM train")
    te = load_csv(_require_file(os.path.join(root, "test.csv"), "PSM test"), index_column=0,
                  nan_policy=nan_policy, name="PSM test")
    lab = load_csv(_require_file(os.path.join(root, "test_label.csv"), "PSM test_label"), index_column=0,
                   label_column=-1, name="PSM test_label", allow_no_values=True)
    return _make_split("PSM", tr.values, te.values, lab.labels, nan_policy, channel_names=tr.columns,
                       info={"root": root, "layout": "psm"})


_SWAT_LAYOUTS = (
    # (train file, test file, label column, description)
    ("SWaT_Dataset_Normal_v1.csv", "SWaT_Dataset_Attack_v0.csv", "Normal/Attack", "iTrust xlsx exported to CSV"),
    ("swat_train2.csv", "swat2.csv", -1, "DCdetector / TimesNet-style preprocessed CSVs"),
)


def load_swat(root: PathLike, nan_policy: str = "interpolate") -> SeriesSplit:
    """Load SWaT (Secure Water Treatment, iTrust) from one of two CSV layouts found in public code.

    1. ``SWaT_Dataset_Normal_v1.csv`` / ``SWaT_Dataset_Attack_v0.csv``: the iTrust 2015 spreadsheets
       exported to CSV (as USAD's notebooks use them). Lines before the header (the header is the
       first line containing ``Normal/Attack``) are skipped, the non-numeric ``Timestamp`` column is
       dropped, labels are the ``Normal/Attack`` column (``Normal`` → 0, ``Attack``/``A ttack`` → 1).
    2. ``swat_train2.csv`` / ``swat2.csv`` (as DCdetector's loader reads them): header row, feature
       columns, last column the label (0/1 or Normal/Attack).

    The Anomaly-Transformer ``SWaT_*.npy`` files load with :func:`load_anomaly_transformer`.
    Not done here (papers differ): dropping the first hours of the normal run, down-sampling.
    The raw xlsx files are not read (no spreadsheet dependency); export them to CSV first.
    """
    root = os.fspath(root)
    for train_f, test_f, label_col, desc in _SWAT_LAYOUTS:
        trp, tep = os.path.join(root, train_f), os.path.join(root, test_f)
        if os.path.isfile(trp) and os.path.isfile(tep):
            tr = load_csv(trp, label_column=label_col, nan_policy=nan_policy, name="SWaT train")
            te = load_csv(tep, label_column=label_col, nan_policy=nan_policy, name="SWaT test")
            if tr.columns != te.columns:
                raise ValueError(f"SWaT: expected the same columns in {train_f} and {test_f}, got "
                                 f"{len(tr.columns)} and {len(te.columns)} that differ")
            return _make_split("SWaT", tr.values, te.values, te.labels, nan_policy, channel_names=tr.columns,
                               train_labels=tr.labels,
                               info={"root": root, "layout": desc, "dropped_columns": tr.dropped})
    wanted = " or ".join(f"{a} + {b}" for a, b, _, _ in _SWAT_LAYOUTS)
    raise FileNotFoundError(f"root: expected {wanted} in {root!r}, found neither pair")


# ---- generic CSV ---------------------------------------------------------------------------------
_LABEL_WORDS = {"normal": 0, "attack": 1, "anomaly": 1, "abnormal": 1, "false": 0, "true": 1}


def _is_number(tok: str) -> bool:
    tok = tok.strip().strip('"')
    if tok == "":
        return True  # a missing value in a numeric column
    try:
        float(tok)
        return True
    except ValueError:
        return False


# header names that say "this column is the row's position or time, not a measurement" (compared
# lower-case with everything but letters removed; pandas writes an unnamed index as '' or 'Unnamed: 0')
_INDEX_NAMES = {"", "index", "idx", "t", "ts", "time", "timestamp", "timestampmin", "date", "datetime", "step",
                "timestep", "steps", "row", "rowid", "no", "unnamed"}
_TIME_FORMATS = ("%d/%m/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p", "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S",
                 "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d",
                 "%d.%m.%Y %H:%M:%S", "%d.%m.%Y", "%H:%M:%S", "%H:%M")


def _index_like_name(name: str) -> bool:
    key = re.sub(r"[^a-z]", "", name.lower())
    return key in _INDEX_NAMES or key.startswith("unnamed")


def _parses_as_time(tok: str) -> bool:
    """True when ``tok`` is a date/time (ISO 8601 or a common day/month/year form)."""
    import datetime

    tok = tok.strip().strip('"').strip()
    if not tok or _is_number(tok):
        return False
    try:
        datetime.datetime.fromisoformat(tok.replace("Z", "+00:00"))
        return True
    except ValueError:
        pass
    for fmt in _TIME_FORMATS:
        try:
            datetime.datetime.strptime(tok, fmt)
            return True
        except ValueError:
            continue
    return False


def _is_index(column: np.ndarray, named: bool) -> bool:
    """An index column: when its header names it as an index or time (``named``), strictly
    increasing integers (row numbers, epoch seconds); without a header, integers rising by exactly 1."""
    v = np.asarray(column, dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)) or not np.all(v == np.round(v)):
        return False
    d = np.diff(v)
    return bool(np.all(d > 0)) if named else bool(v.size > 2 and np.all(d == 1))


def _resolve_column(spec: Union[int, str], header: List[str], what: str) -> int:
    n = len(header)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        i = int(spec)
        if not -n <= i < n:
            raise ValueError(f"{what}: expected a column index in [{-n}, {n}), got {i}")
        return i % n
    if isinstance(spec, str):
        names = [h.strip().strip('"').lower() for h in header]
        key = spec.strip().lower()
        if key in names:
            return names.index(key)
        raise ValueError(f"{what}: expected one of the columns {header[:8]}{'…' if n > 8 else ''}, got {spec!r}")
    raise TypeError(f"{what}: expected a column name or index, got {type(spec).__name__}")


def _parse_labels(tokens: np.ndarray, what: str, label_map: Optional[Dict[str, int]],
                  lines: Optional[np.ndarray] = None) -> np.ndarray:
    """0/1 labels from strings: numbers, or words via label_map (spaces and case ignored).
    ``lines`` (the file line of each token) lets an error name the line of the first bad value."""
    toks = np.char.lower(np.char.replace(np.char.strip(np.char.strip(tokens), '"'), " ", ""))
    try:
        return check_labels(toks.astype(np.float64), what)
    except ValueError:
        pass
    mapping = {k.replace(" ", "").lower(): int(v) for k, v in (label_map or _LABEL_WORDS).items()}
    uniq = np.unique(toks)
    lut, unknown = np.zeros(uniq.shape[0], dtype=np.int8), []
    for i, u in enumerate(uniq.tolist()):  # a word of the map, or a number that is 0 or 1
        if u in mapping:
            lut[i] = mapping[u]
            continue
        try:
            number = float(u)
        except ValueError:
            number = None
        if number in (0.0, 1.0):
            lut[i] = int(number)
        else:
            unknown.append(u)
    if unknown:
        at = ""
        if lines is not None:
            first = int(np.flatnonzero(np.isin(toks, unknown))[0])
            at = f" (first on line {int(lines[first])}: {str(tokens[first])!r})"
        raise ValueError(f"{what}: expected 0/1 or one of {sorted(mapping)}, got values such as {unknown[:5]}{at}")
    return check_labels(lut[np.searchsorted(uniq, toks)], what)


_CSV_HEAD_LINES = 64


def _blank(row: Sequence[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _csv_rows(path: str, delimiter: str, first_line: int = 1,
              max_lines: Optional[int] = None) -> Tuple[List[List[str]], List[int]]:
    """Non-blank rows of a delimited file from physical line ``first_line`` on, with the (1-based)
    line each row ends on; at most ``max_lines`` physical lines are read."""
    rows, lines = [], []
    with open(path, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        for row in reader:
            if max_lines is not None and reader.line_num > max_lines:
                break
            if reader.line_num < first_line or _blank(row):
                continue
            rows.append(row)
            lines.append(reader.line_num)
    return rows, lines


def _data_lines(path: str, delimiter: str, first_line: int, width: int, where: str, ref: int) -> np.ndarray:
    """Physical line numbers of the non-blank data rows from ``first_line`` on, after checking that
    each has ``width`` fields (a ValueError naming the first line that does not). Counts delimiters
    on raw bytes (fast) when the file has no quotes; with quotes the csv module does it."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if b'"' in raw or len(delimiter.encode()) != 1:
        rows, lines = _csv_rows(path, delimiter, first_line)
        for row, line in zip(rows, lines):
            if len(row) != width:
                _ragged(where, line, width, len(row), ref)
        return np.asarray(lines, dtype=np.int64)
    a = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(a == ord("\n"))
    if raw and not raw.endswith(b"\n"):
        ends = np.append(ends, len(raw))
    starts = np.concatenate(([0], ends[:-1] + 1))[first_line - 1:]
    ends = ends[first_line - 1:]
    delims = np.flatnonzero(a == delimiter.encode()[0])
    fields = np.searchsorted(delims, ends) - np.searchsorted(delims, starts) + 1  # per physical line
    keep = np.ones(starts.shape[0], dtype=bool)
    for i in np.flatnonzero(fields == 1).tolist():  # only a line without a delimiter can be blank
        keep[i] = bool(raw[starts[i]:ends[i]].strip())
    lines = np.arange(first_line, first_line + starts.shape[0], dtype=np.int64)
    bad = np.flatnonzero(keep & (fields != width))
    if bad.size:
        _ragged(where, int(lines[bad[0]]), width, int(fields[bad[0]]), ref)
    return lines[keep]


def _ragged(where: str, line: int, width: int, got: int, ref: int) -> None:
    raise ValueError(f"{where}, line {line}: expected {width} fields (as many as line {ref}, the first of the "
                     f"table), got {got}{' (an extra field)' if got == width + 1 else ''}")


def _fill_empty_fields(raw: bytes, delimiter: str) -> bytes:
    """``raw`` with every empty field (between two delimiters, or at a line's start or end before
    or after one) written as ``nan``, so that numpy's fast reader reads missing values as NaN. A
    blank line holds no field and stays blank. (Plain byte replacements: a regex is ~50x slower.)"""
    d = delimiter.encode()
    for _ in range(2):  # ",,," -> ",nan,," -> ",nan,nan,"
        raw = raw.replace(d + d, d + b"nan" + d)
    raw = raw.replace(d + b"\r\n", d + b"nan\r\n").replace(d + b"\n", d + b"nan\n").replace(b"\n" + d, b"\nnan" + d)
    if raw.startswith(d):
        raw = b"nan" + raw
    if raw.endswith(d):
        raw += b"nan"
    return raw


def _loadtxt(source: Any, delimiter: str, skip: int, cols: List[int], dtype: Any) -> Optional[np.ndarray]:
    try:
        with warnings.catch_warnings():  # numpy notes that blank lines are not rows: they are not, here too
            warnings.filterwarnings("ignore", message="Input line .* contained no data", category=UserWarning)
            return np.loadtxt(source, delimiter=delimiter, skiprows=skip, usecols=cols, dtype=dtype, ndmin=2,
                              quotechar='"', comments=None)
    except ValueError:
        return None


def _read_fast(path: str, delimiter: str, first_line: int, value_cols: List[int], lab_idx: Optional[int],
               n_rows: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(values float64 (n_rows, len(value_cols)), label tokens (n_rows,) as text) by numpy's C
    reader, None for a part it cannot read exactly (the caller then uses the exact reader).
    Numeric labels come in the same pass as the values; missing values are read by filling empty
    fields in as ``nan`` (files without quotes). ``n_rows`` (the data rows counted while checking
    the widths) guards against the readers disagreeing on which lines are rows."""
    skip = first_line - 1

    def rows_ok(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
        return a if a is not None and a.shape[0] == n_rows else None

    values = labels = None
    if value_cols:
        cols = value_cols + ([lab_idx] if lab_idx is not None else [])
        sources: List[Any] = [path]
        for source in sources:  # the file, then (no quotes) the file with its empty fields filled in
            out = rows_ok(_loadtxt(source, delimiter, skip, cols, np.float64))
            if source is not path:
                source.seek(0)  # read again below
            if out is not None:
                values = out[:, : len(value_cols)]
                if lab_idx is not None and np.isfinite(out[:, -1]).all():
                    labels = out[:, -1].astype(str)
                break
            if lab_idx is not None:  # the labels may be words: the values alone
                values = rows_ok(_loadtxt(source, delimiter, skip, value_cols, np.float64))
                if values is not None:
                    break
            if source is path:
                with open(path, "rb") as fh:
                    raw = fh.read()
                if b'"' not in raw:
                    sources.append(io.BytesIO(_fill_empty_fields(raw, delimiter)))
    if lab_idx is not None and labels is None:
        tokens = rows_ok(_loadtxt(path, delimiter, skip, [lab_idx], str))
        labels = None if tokens is None else tokens[:, 0]
    return values, labels


def _read_all_numeric(path: str, delimiter: str, first_line: int, width: int, value_cols: List[int],
                      lab_idx: Optional[int]) -> Optional[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """(values, label tokens or None) when every field of every data row is a number, read in one
    pass of numpy's C reader over all ``width`` columns: without ``usecols`` numpy refuses a row of
    any other width itself, so no separate count of the fields is needed. None when anything does
    not fit (text, an empty field, a ragged row): the caller's careful path then says what and where."""
    out = _loadtxt(path, delimiter, first_line - 1, None, np.float64)
    if out is None or out.shape[1] != width:
        return None
    labels = out[:, lab_idx].astype(str) if lab_idx is not None else None
    return out[:, value_cols], labels


def _parse_numbers(tokens: List[str], where: str, column: str, lines: Sequence[int]) -> np.ndarray:
    """float64 values of one column's text fields; empty fields are missing (NaN); any other text
    is a ValueError naming the file, the line and the column."""
    arr = np.char.strip(np.asarray(tokens, dtype=str))
    missing = arr == ""
    try:
        return np.where(missing, "nan", arr).astype(np.float64)
    except ValueError:
        pass
    for i, tok in enumerate(arr.tolist()):
        if tok == "":
            continue
        try:
            float(tok)
        except ValueError:
            raise ValueError(f"{where}, line {lines[i]}, column {column!r}: expected a number (or an empty field "
                             f"for a missing value), got {tokens[i]!r}") from None
    raise AssertionError("unreachable: numpy refused a column that Python parses")  # pragma: no cover


def load_csv(path: PathLike, label_column: Union[None, int, str] = None,
             index_column: Union[None, int, str] = "auto",
             delimiter: str = ",", header: Union[str, bool] = "infer", drop_columns: Sequence[Union[int, str]] = (),
             label_map: Optional[Dict[str, int]] = None, nan_policy: str = "interpolate",
             name: Optional[str] = None, allow_no_values: bool = False, label_optional: bool = False) -> CSVData:
    """Read a delimited text file of one series: values (T, C) float32 and optional 0/1 labels.

    ``label_column``/``index_column``/``drop_columns`` take a column index (negative counts from the
    end) or a header name (case-insensitive); with ``label_optional`` a named label column that the
    file does not have means no labels. ``header="infer"`` treats the first line as a header
    when any of its fields is not a number; with a header, leading lines before it that have fewer
    fields are skipped (spreadsheet exports).

    Which columns are values is decided by name and content, never by position: with
    ``index_column="auto"`` (default) a numeric column is an index, and ignored, when its integers
    rise by exactly 1 at every row, or when its header names a position or time (``index``,
    ``time``, ``timestamp``, ``date``, ``step``, an empty name or pandas' ``Unnamed: 0``, ...) and
    its integers rise strictly; ``index_column=None`` keeps every numeric column. Columns whose
    first non-empty value (in the first 64 lines) is not a number are ignored as ``timestamp``
    when it parses as a date/time, else as ``text``; they are also listed in ``dropped``. Every
    ignored column and why is in ``ignored``; :meth:`CSVData.describe` says it in one line. Missing
    (empty) cells become NaN and then follow ``nan_policy``. Labels may be numbers or words
    (``Normal``/``Attack`` by default, see ``label_map``).

    The whole file is read strictly: every non-blank row after the header must have the header's
    number of fields, and every value of a value column must be a number or empty; anything else
    is a ValueError naming the file, the line (1-based) and the column. (Fast path: numpy's C
    reader plus a count of the fields per line; the exact Python reader only when that fails.)
    """
    path = os.fspath(path)
    where = path if name is None else f"{name} ({path})"
    name = name or os.path.basename(path)
    _require_file(path, name)
    rows, row_lines = _csv_rows(path, delimiter, max_lines=_CSV_HEAD_LINES)
    if not rows:
        raise ValueError(f"{name}: expected a non-empty CSV file, got an empty one at {path!r}")
    lengths = [len(r) for r in rows]
    counts = {n: lengths.count(n) for n in lengths}
    usual = max(counts, key=lambda n: (counts[n], -lengths.index(n)))  # the usual row length; earliest on ties
    skip = next(i for i, n in enumerate(lengths) if n >= usual)  # junk lines with fewer fields before the table
    width = lengths[skip]  # the header (or first row) says how many fields every row has
    if isinstance(label_column, str) and header is not False:
        # the header is the first line naming the label column (spreadsheet exports add lines above it)
        key = label_column.strip().lower()
        named = [i for i, r in enumerate(rows) if key in (t.strip().strip('"').lower() for t in r)]
        if named:
            skip = named[0]
            width = len(rows[skip])
    first = rows[skip]
    if header == "infer":
        has_header = not all(_is_number(t) for t in first)
    else:
        has_header = bool(header)
    columns = [h.strip().strip('"') for h in first] if has_header else [f"c{i}" for i in range(width)]
    head = rows[skip + (1 if has_header else 0):]
    head_lines = row_lines[skip + (1 if has_header else 0):]
    if not head:
        raise ValueError(f"{name}: expected data rows after the header in {path!r}, got none")
    ref = row_lines[skip]
    for row, line in zip(head, head_lines):
        if len(row) != width:
            _ragged(where, line, width, len(row), ref)
    first_data_line = head_lines[0]

    if (label_optional and isinstance(label_column, str)
            and label_column.strip().lower() not in [c.lower() for c in columns]):
        label_column = None
    lab_idx = None if label_column is None else _resolve_column(label_column, columns, "label_column")
    ignored: Dict[int, str] = {}
    for d in drop_columns:
        ignored[_resolve_column(d, columns, "drop_columns")] = "dropped as asked"
    auto_index = isinstance(index_column, str) and index_column == "auto"
    if index_column is not None and not auto_index:
        ignored[_resolve_column(index_column, columns, "index_column")] = "index, as asked"
    if lab_idx is not None:
        ignored[lab_idx] = "labels"
    value_cols, dropped = [], []
    for i in range(width):
        if i in ignored:
            continue
        seen = [r[i] for r in head if r[i].strip().strip('"')][:5]  # its first non-empty values
        if _is_number(seen[0] if seen else ""):
            value_cols.append(i)
        else:
            dropped.append(columns[i])
            ignored[i] = "timestamp" if all(_parses_as_time(t) for t in seen) else "text, not a number"
    # by name and content: a header that names a position or time, or no header at all (then only
    # integers rising by exactly 1 count); a column with a header name of its own is a measurement
    index_candidates = [i for i in value_cols if auto_index and (not has_header or _index_like_name(columns[i]))]
    if not value_cols and not allow_no_values:
        raise ValueError(f"{name}: expected at least one numeric value column in {path!r}, got none"
                         + (f" ({describe_columns(name, [], _ignored_names(ignored, columns))})" if ignored else ""))

    def finish(values: np.ndarray, labels: Optional[np.ndarray]) -> CSVData:
        keep = list(range(len(value_cols)))
        for j, i in enumerate(value_cols):
            named = has_header and _index_like_name(columns[i])
            if i in index_candidates and len(keep) > 1 and _is_index(values[:, j], named):
                keep.remove(j)
                ignored[i] = ("index: integers rising by 1" if not named else
                              "index: named so, rising integers" if columns[i].strip() else
                              "index: unnamed, rising integers")
        if len(keep) < len(value_cols):
            values = values[:, keep]
        used = [value_cols[j] for j in keep]
        if used:
            values = check_series(values, name, nan_policy=nan_policy)
            if labels is not None and labels.shape[0] != values.shape[0]:
                raise ValueError(f"{name}: expected as many labels as rows ({values.shape[0]}), got {labels.shape[0]}")
        return CSVData(values=values.astype(np.float32), labels=labels, columns=[columns[i] for i in used],
                       dropped=dropped, ignored=_ignored_names(ignored, columns), name=name)

    # the whole file. Fastest: every column is a number, read by numpy's C reader without usecols, which
    # refuses any row of another width itself. Else every row's width, then the numbers, else the exact reader.
    full = _read_all_numeric(path, delimiter, first_data_line, width, value_cols, lab_idx) if value_cols else None
    if full is not None:
        values, label_tokens = full
        if lab_idx is not None:
            try:
                labels = _parse_labels(label_tokens, f"{where}, column {columns[lab_idx]!r}", label_map)
            except ValueError:  # the slower path below names the line of the first bad label
                full = None
    if full is not None:
        return finish(values, labels if lab_idx is not None else None)
    lines = _data_lines(path, delimiter, first_data_line, width, where, ref)
    values, label_tokens = _read_fast(path, delimiter, first_data_line, value_cols, lab_idx, lines.shape[0])
    if (value_cols and values is None) or (lab_idx is not None and label_tokens is None):
        rows, row_lines = _csv_rows(path, delimiter, first_data_line)
        for row, line in zip(rows, row_lines):
            if len(row) != width:
                _ragged(where, line, width, len(row), ref)
        lines = np.asarray(row_lines, dtype=np.int64)
        values = np.empty((len(rows), len(value_cols)), dtype=np.float64)
        for j, c in enumerate(value_cols):
            values[:, j] = _parse_numbers([r[c] for r in rows], where, columns[c], row_lines)
        if lab_idx is not None:
            label_tokens = np.asarray([r[lab_idx] for r in rows], dtype=str)
    if values is None:
        values = np.zeros((0, 0), dtype=np.float64)
    labels = None
    if lab_idx is not None:
        what = f"{where}, column {columns[lab_idx]!r}"
        try:
            labels = _parse_labels(label_tokens, what, label_map, lines)
        except ValueError:  # say it with the file's own text (the fast reader gave numbers as '2.0')
            text = _loadtxt(path, delimiter, int(lines[0]) - 1, [lab_idx], str) if lines.size else None
            if text is not None and text.shape[0] == lines.shape[0]:
                _parse_labels(text[:, 0], what, label_map, lines)
            raise
    return finish(values, labels)


def _ignored_names(ignored: Dict[int, str], columns: List[str]) -> Dict[str, str]:
    return {(columns[i] or f"column {i + 1}"): why for i, why in sorted(ignored.items())}


def load_omi(root: PathLike, name: str = "omi-1", nan_policy: str = "interpolate") -> SeriesSplit:
    """Load an ASD/omi-style pair ``root/NAME_train.csv``, ``root/NAME_test.csv``.

    Both files: a header row, value columns, optionally a ``label`` column (0/1 per row; the
    training part of omi-1 is all 0) and index or time columns, which are recognised by name and
    content (see :func:`load_csv`), not by position. The training labels, when there are any, are
    kept in ``train_labels``; which columns are used and which ignored is ``info["columns"]``.
    """
    root = os.fspath(root)
    kw = dict(label_column="label", label_optional=True, nan_policy=nan_policy)
    tr = load_csv(_require_file(os.path.join(root, f"{name}_train.csv"), f"{name} train"), name=f"{name}_train.csv", **kw)
    te = load_csv(_require_file(os.path.join(root, f"{name}_test.csv"), f"{name} test"), name=f"{name}_test.csv", **kw)
    if tr.columns != te.columns:
        raise ValueError(f"{name}: expected the same value columns in {name}_train.csv and {name}_test.csv, "
                         f"got {tr.columns} and {te.columns} ({tr.describe()} / {te.describe()})")
    return _make_split(name, tr.values, te.values, te.labels, nan_policy, channel_names=tr.columns,
                       train_labels=tr.labels, info={"root": root, "layout": "omi_csv", "columns": tr.describe()})


def load_series_csv(path: PathLike, nan_policy: str = "interpolate") -> SeriesSplit:
    """One CSV of one series (e.g. a record of normal operation) as a data set: the series is both
    ``train`` and ``test`` (fit on it, or score it with a saved detector); a ``label`` column, when
    there is one, gives ``test_labels`` and ``train_labels``. Columns as :func:`load_csv` decides
    (index and time columns by name and content, text ignored); ``info["columns"]`` says which.
    """
    path = os.fspath(path)
    base = os.path.basename(path)
    d = load_csv(path, label_column="label", label_optional=True, nan_policy=nan_policy, name=base)
    stem = base[:-len(".csv")] if base.lower().endswith(".csv") else base
    return _make_split(stem, d.values, d.values, d.labels, nan_policy, channel_names=d.columns, train_labels=d.labels,
                       info={"path": path, "layout": "csv_file", "columns": d.describe()})


def _parse_kwargs(text: str) -> Dict[str, Any]:
    """'length=2000,seed=3,kinds=point+trend' -> dict with ints/floats/tuples parsed."""
    out: Dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in item:
            raise ValueError(f"spec: expected key=value items after ':', got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if "+" in v:
            out[k] = tuple(v.split("+"))
            continue
        for conv in (int, float):
            try:
                out[k] = conv(v)
                break
            except ValueError:
                continue
        else:
            out[k] = v
    return out


def load_dataset(spec: PathLike, data_root: Optional[PathLike] = None, entity: Optional[str] = None,
                 **kwargs: Any) -> SeriesSplit:
    """Load a data set, or one entity of it, from a short spec (what the CLI passes).

    * ``"synthetic"`` or ``"synthetic:length=20000,channels=8,seed=0,kinds=point+trend"``:
      :func:`make_synthetic` (extra ``kwargs`` go to it too); ``entities=K`` in the spec makes K
      entities ``synthetic-0`` … (seeds seed … seed + K − 1), each its own series.
    * a directory holding ``NAME_train.npy`` (Anomaly-Transformer layout), ``NAME_train.csv`` +
      ``NAME_test.csv`` (omi style), ``train.csv`` + ``test.csv`` + ``test_label.csv`` (PSM),
      ``train/`` + ``test/`` + ``test_label/`` (SMD; pass ``machine=``), or a SWaT CSV pair;
    * a file ``…/NAME_train.npy`` or ``…/NAME_train.csv`` (the directory and NAME are taken from it);
    * a bare name such as ``"SMAP"``, looked up as a directory under ``data_root`` and then under each
      entry of the ``AMAD_DATA`` environment variable (``os.pathsep``-separated).

    ``entity`` picks one entity of a multi-entity data set (see :func:`list_entities`): its own
    train, test and labels. Without it a multi-entity set in the Anomaly-Transformer layout loads
    concatenated, as published papers evaluate it. ``kwargs`` are passed to the chosen loader.
    """
    source = _locate(spec, data_root)
    if entity is None:
        return source.load_all(**kwargs)
    return source.load_entity(str(entity), **kwargs)


def list_entities(spec: PathLike, data_root: Optional[PathLike] = None) -> List[str]:
    """Names of the entities of a data set, in their natural order.

    Entities are the independent series a multi-entity data set is made of, each to be trained,
    scored and evaluated on its own: the rows of ``NAME_entities.csv`` beside an
    Anomaly-Transformer ``NAME_train.npy`` (columns ``entity,train_start,train_end,test_start,
    test_end``, half-open row ranges; SMAP ships one), SMD's ``machine-*.txt`` files, the
    ``NAME_train.csv``/``NAME_test.csv`` pairs of a folder of per-entity CSVs, or the K series of
    ``synthetic:entities=K``. A data set without such structure is one entity: its own name.
    """
    return _locate(spec, data_root).entity_names()


def iter_entities(spec: PathLike, data_root: Optional[PathLike] = None,
                  entities: Optional[Sequence[str]] = None, **kwargs: Any) -> Iterator[SeriesSplit]:
    """Yield each entity of a data set as its own :class:`SeriesSplit` (``entities`` restricts
    and orders them; unknown names are refused before anything loads). Shared arrays (the
    concatenated ``.npy`` files) are read once, not once per entity."""
    source = _locate(spec, data_root)
    names = source.entity_names()
    if entities is not None:
        wanted = [str(e) for e in entities]
        for e in wanted:
            source.check_entity(e, names)
        names = wanted
    return source.iter_entities(names, **kwargs)


ENTITY_TABLE_SUFFIX = "_entities.csv"
_ENTITY_COLUMNS = ("entity", "train_start", "train_end", "test_start", "test_end")


class _EntityRows(NamedTuple):
    name: str
    train: Tuple[int, int]
    test: Tuple[int, int]


def read_entity_table(path: PathLike, n_train: int, n_test: int) -> List[_EntityRows]:
    """Parse and check an entity table (``NAME_entities.csv``) against the arrays it indexes.

    Every row needs an entity name (unique) and half-open ranges ``0 <= start < end <= n`` of the
    training (``n_train`` rows) and test (``n_test`` rows) arrays; other columns are ignored.
    Errors name the file, the line and the column.
    """
    path = os.fspath(path)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: expected an entity table with header {','.join(_ENTITY_COLUMNS)}, got an empty file")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in _ENTITY_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path}: expected the columns {list(_ENTITY_COLUMNS)} in its header (line 1), "
                         f"missing {missing}; got {rows[0]}")
    col = {c: header.index(c) for c in _ENTITY_COLUMNS}
    out: List[_EntityRows] = []
    seen: Dict[str, int] = {}
    for line, r in enumerate(rows[1:], start=2):
        if not any(t.strip() for t in r):
            continue
        if len(r) < len(header):
            raise ValueError(f"{path}, line {line}: expected {len(header)} fields, got {len(r)}")
        name = r[col["entity"]].strip()
        if not name:
            raise ValueError(f"{path}, line {line}, column 'entity': expected a name, got an empty field")
        if name in seen:
            raise ValueError(f"{path}, line {line}, column 'entity': {name!r} already named on line {seen[name]}")
        seen[name] = line
        bounds = {}
        for c in _ENTITY_COLUMNS[1:]:
            tok = r[col[c]].strip()
            try:
                bounds[c] = int(tok)
            except ValueError:
                raise ValueError(f"{path}, line {line}, column {c!r}: expected an integer row index, got {tok!r}") from None
        for part, n in (("train", n_train), ("test", n_test)):
            a, b = bounds[f"{part}_start"], bounds[f"{part}_end"]
            if not 0 <= a < b <= n:
                raise ValueError(f"{path}, line {line}: expected 0 <= {part}_start < {part}_end <= {n} "
                                 f"(the rows of the {part} array), got {part}_start={a}, {part}_end={b}")
        out.append(_EntityRows(name, (bounds["train_start"], bounds["train_end"]),
                               (bounds["test_start"], bounds["test_end"])))
    if not out:
        raise ValueError(f"{path}: expected at least one entity row after the header, got none")
    return out


class _Source:
    """A located data set: what its entities are and how to load all of it or one of them."""

    def __init__(self, kind: str, where: str, name: Optional[str] = None, params: Optional[Dict[str, Any]] = None):
        self.kind, self.where, self.name, self.params = kind, where, name, dict(params or {})

    # -- entity names ------------------------------------------------------------------------
    def entity_names(self) -> List[str]:
        if self.kind == "synthetic":
            k = self.params.get("entities")
            base = self.params.get("name", "synthetic")
            return [base] if k is None else [f"{base}-{i}" for i in range(_positive_int(k, "entities"))]
        if self.kind == "npy":
            if self.name is None:
                raise ValueError(f"spec: {self.where!r} holds several NAME_train.npy files; give the file "
                                 f"NAME_train.npy itself to say which")
            if self._table_path() is None:
                return [self.name]
            return [r.name for r in self._entity_table()]
        if self.kind == "smd":
            names = sorted((os.path.basename(p)[:-4] for p in glob.glob(os.path.join(self.where, "train", "*.txt"))),
                           key=_natural_key)
            if not names:
                raise FileNotFoundError(f"spec: expected SMD text files in {os.path.join(self.where, 'train')!r}, found none")
            return names
        if self.kind == "csv_pairs":
            return self._csv_names()
        return [self.load_all().name]

    def check_entity(self, entity: str, names: Optional[List[str]] = None) -> None:
        names = self.entity_names() if names is None else names
        if entity not in names:
            shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
            raise ValueError(f"entity: expected one of the entities of {self.where!r} ({shown}), got {entity!r}")

    # -- loading -----------------------------------------------------------------------------
    def load_all(self, **kwargs: Any) -> SeriesSplit:
        if self.kind == "synthetic":
            params = {k: v for k, v in self.params.items() if k != "entities"}
            params.update(kwargs)
            if self.params.get("entities") is not None:
                raise ValueError("entity: a synthetic spec with entities=K has no single series; pass entity= "
                                 "or iterate over the entities")
            return make_synthetic(**params)
        if self.kind == "npy":
            return load_anomaly_transformer(self.where, name=kwargs.pop("name", self.name), **kwargs)
        if self.kind == "smd":
            return load_smd(self.where, **kwargs)
        if self.kind == "psm":
            return load_psm(self.where, **kwargs)
        if self.kind == "swat":
            return load_swat(self.where, **kwargs)
        if self.kind == "csv_file":
            return load_series_csv(self.where, **kwargs)
        if self.kind == "csv_pairs":
            names = self._csv_names()
            base = os.path.basename(os.path.normpath(self.where))
            name = kwargs.pop("name", self.name or (base if base in names else (names[0] if len(names) == 1 else None)))
            if name is None:
                raise ValueError(f"spec: {self.where!r} holds several NAME_train.csv files {names}; pass entity= "
                                 f"(or name=), or iterate over its entities")
            return load_omi(self.where, name=name, **kwargs)
        raise AssertionError(self.kind)  # pragma: no cover

    def load_entity(self, entity: str, **kwargs: Any) -> SeriesSplit:
        return next(self.iter_entities([entity], **kwargs))

    def iter_entities(self, names: Sequence[str], **kwargs: Any) -> Iterator[SeriesSplit]:
        """The entities ``names`` in that order, each with ``info["entity"]`` set to its name."""
        all_names = self.entity_names()
        for e in names:
            self.check_entity(e, all_names)
        for e, split in zip(names, self._load_entities(names, all_names, **kwargs)):
            split.info["entity"] = e
            yield split

    def _load_entities(self, names: Sequence[str], all_names: List[str], **kwargs: Any) -> Iterator[SeriesSplit]:
        if self.kind == "synthetic":
            if self.params.get("entities") is None:
                yield self.load_all(**kwargs)
                return
            params = {k: v for k, v in self.params.items() if k != "entities"}
            params.update(kwargs)
            seed = int(params.pop("seed", 0))
            for e in names:
                i = all_names.index(e)
                yield make_synthetic(**{**params, "seed": seed + i, "name": e})
            return
        if self.kind == "npy" and self._table_path() is not None:
            table = {r.name: r for r in self._entity_table()}
            whole = self.load_all(**kwargs)
            for e in names:
                r = table[e]
                (a, b), (c, d) = r.train, r.test
                yield SeriesSplit(train=whole.train[a:b], test=whole.test[c:d],
                                  test_labels=None if whole.test_labels is None else whole.test_labels[c:d],
                                  name=f"{whole.name}/{e}", channel_names=whole.channel_names,
                                  info={**whole.info, "entity": e, "train_rows": [a, b], "test_rows": [c, d]})
            return
        if self.kind == "smd":
            if "machine" in kwargs:
                raise ValueError("machine: pass entity= (an SMD machine) or machine=, not both")
            for e in names:
                yield load_smd(self.where, machine=e, **kwargs)
            return
        if self.kind == "csv_pairs":
            for e in names:
                yield load_omi(self.where, name=e, **kwargs)
            return
        for _ in names:  # a single-entity data set
            yield self.load_all(**kwargs)

    # -- helpers -----------------------------------------------------------------------------
    def _table_path(self) -> Optional[str]:
        p = os.path.join(self.where, f"{self.name}{ENTITY_TABLE_SUFFIX}")
        return p if os.path.isfile(p) else None

    def _entity_table(self) -> List[_EntityRows]:
        """The checked entity table; the arrays' row counts come from their headers (memory-mapped)."""
        n = [load_npy(_require_file(os.path.join(self.where, f"{self.name}_{part}.npy"), part), part, mmap_mode="r").shape[0]
             for part in ("train", "test")]
        return read_entity_table(self._table_path(), n[0], n[1])

    def _csv_names(self) -> List[str]:
        csvs = sorted(glob.glob(os.path.join(self.where, "*_train.csv")), key=_natural_key)
        return [os.path.basename(p)[: -len("_train.csv")] for p in csvs]


def _locate(spec: PathLike, data_root: Optional[PathLike]) -> _Source:
    """Find what a spec names (see :func:`load_dataset`) without loading its arrays."""
    s = os.fspath(spec)
    if s == "synthetic" or s.startswith("synthetic:"):
        return _Source("synthetic", s, params=_parse_kwargs(s.split(":", 1)[1]) if ":" in s else {})
    if os.path.isfile(s):
        d, base = os.path.split(os.path.abspath(s))
        for suffix, kind in (("_train.npy", "npy"), ("_train.csv", "csv_pairs")):
            if base.endswith(suffix):
                if kind == "csv_pairs" and not os.path.isfile(os.path.join(d, base[: -len(suffix)] + "_test.csv")):
                    break  # no NAME_test.csv beside it: one series file
                return _Source(kind, d, name=base[: -len(suffix)])
        else:
            if not base.lower().endswith(".csv"):
                raise ValueError(f"spec: expected a .csv series file, a NAME_train.npy or a NAME_train.csv file, "
                                 f"got {s!r}")
        return _Source("csv_file", os.path.abspath(s), name=base)
    if os.path.isdir(s):
        return _locate_dir(s)
    roots = [os.fspath(data_root)] if data_root is not None else []
    roots += [r for r in os.environ.get("AMAD_DATA", "").split(os.pathsep) if r]
    for r in roots:
        cand = os.path.join(r, s)
        if os.path.isdir(cand):
            return _locate_dir(cand)
    raise FileNotFoundError(f"spec: expected 'synthetic[:k=v,...]', a data directory or file, or a name under "
                            f"data_root / $AMAD_DATA; got {s!r} (searched {roots or 'no roots'})")


def _locate_dir(d: str) -> _Source:
    base = os.path.basename(os.path.normpath(d))
    npy = sorted(glob.glob(os.path.join(d, "*_train.npy")))
    if npy:
        names = [os.path.basename(p)[: -len("_train.npy")] for p in npy]
        # several NAME_train.npy and none named like the folder: load_all asks for name=
        return _Source("npy", d, name=base if base in names else (names[0] if len(names) == 1 else None))
    if all(os.path.isdir(os.path.join(d, sub)) for sub in ("train", "test", "test_label")):
        return _Source("smd", d)
    if all(os.path.isfile(os.path.join(d, f)) for f in ("train.csv", "test.csv", "test_label.csv")):
        return _Source("psm", d)
    if any(os.path.isfile(os.path.join(d, a)) for a, _, _, _ in _SWAT_LAYOUTS):
        return _Source("swat", d)
    if glob.glob(os.path.join(d, "*_train.csv")):
        return _Source("csv_pairs", d)
    raise ValueError(f"spec: expected a known layout in {d!r} (NAME_train.npy, NAME_train.csv, PSM, SMD or "
                     f"SWaT files), found none")


# ----------------------------------------------------------------------------------------------
# Synthetic benchmark
# ----------------------------------------------------------------------------------------------
ANOMALY_KINDS = ("point", "contextual", "collective", "seasonal", "trend")


class _Latent:
    """Smooth multi-periodic factors mixed into correlated channels: x_c(t) = o_c + Σ_k W_ck f_k(t)."""

    def __init__(self, rng: np.random.Generator, channels: int, n_factors: int, n_harmonics: int = 2):
        self.period = rng.uniform(40.0, 250.0, size=(n_factors, 1))
        self.period = self.period / np.arange(1, n_harmonics + 1)[None, :]       # harmonics of a base period
        self.amp = rng.uniform(0.4, 1.0, size=(n_factors, n_harmonics)) / np.arange(1, n_harmonics + 1)
        self.phase = rng.uniform(0, 2 * np.pi, size=(n_factors, n_harmonics))
        W = rng.normal(size=(channels, n_factors))
        self.W = W / np.linalg.norm(W, axis=1, keepdims=True)
        self.offset = rng.uniform(-1.0, 1.0, size=channels)

    def factors(self, t: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * t[:, None, None] / self.period[None] + self.phase[None]
        return (self.amp[None] * np.sin(arg)).sum(-1)                              # (len(t), K)

    def __call__(self, t: np.ndarray, channels: Optional[Sequence[int]] = None) -> np.ndarray:
        W = self.W if channels is None else self.W[list(channels)]
        o = self.offset if channels is None else self.offset[list(channels)]
        return o[None] + self.factors(np.asarray(t, dtype=np.float64)) @ W.T


def make_synthetic(length: int = 20000, channels: int = 8, anomaly_ratio: float = 0.05,
                   kinds: Sequence[str] = ANOMALY_KINDS, seed: int = 0, train_length: Optional[int] = None,
                   noise: float = 0.1, segment_length: Tuple[int, int] = (20, 100),
                   name: str = "synthetic") -> SeriesSplit:
    """Seeded multivariate benchmark: a clean training series and a test series with labelled anomalies.

    The signal: ``min(3, channels)`` latent factors, each a base period (40–250 steps) plus one
    harmonic, mixed by a random unit-norm matrix into correlated channels with offsets, plus
    Gaussian noise (``noise`` × the channel's clean std). Train and test are consecutive pieces of
    one series; anomalies are injected only into the test part, on a random subset of channels,
    following the taxonomy of Lai et al., "Revisiting Time Series Outlier Detection" (NeurIPS 2021
    Datasets & Benchmarks, the TODS benchmark); the recipes below are this module's own:

    * ``point``      — global point outlier: one step at 1.5–2.5× the channel's largest training
      deviation from its mean, so outside its whole training range.
    * ``contextual`` — contextual point outlier: one step mirrored about the channel mean (clipped into
      the channel's clean training range) at a moment where that moves it by ≥ 1.5 std: normal
      globally, wrong for its neighbours.
    * ``collective`` — shapelet (pattern) outlier: a segment whose waveform is replaced by a square or
      sawtooth wave of similar level and spread.
    * ``seasonal``   — seasonal outlier: a segment whose seasonality runs 2.5–4× faster or slower.
    * ``trend``      — trend outlier: a segment with an added ramp up to 3–5 std that ends abruptly.

    Every kind gets the same number of events (at least one), chosen so that the expected labelled
    fraction of test steps is ``anomaly_ratio`` (a fraction, not percent; segment lengths are drawn
    from ``segment_length``, so the realised fraction varies around it). Events never touch (a gap
    of at least 10 steps around segments, 3 around points), so each is its own labelled segment.
    Deterministic for a given ``seed``.
    """
    length = _positive_int(length, "length")
    channels = _positive_int(channels, "channels")
    train_length = length if train_length is None else _positive_int(train_length, "train_length")
    if not 0.0 < float(anomaly_ratio) <= 0.3:
        raise ValueError(f"anomaly_ratio: expected a fraction in (0, 0.3], got {anomaly_ratio!r}")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in ANOMALY_KINDS]
    if not kinds or unknown:
        raise ValueError(f"kinds: expected a non-empty subset of {ANOMALY_KINDS}, got {kinds!r}")
    lo, hi = (int(v) for v in segment_length)
    if not 2 <= lo <= hi:
        raise ValueError(f"segment_length: expected (min, max) with 2 <= min <= max, got {segment_length!r}")
    gap, point_gap = 10, 3
    if length < 2 * gap + hi + 1:
        raise ValueError(f"length: expected at least {2 * gap + hi + 1} steps to place anomalies, got {length}")

    rng = np.random.default_rng(seed)
    lat = _Latent(rng, channels, min(3, channels))
    t_all = np.arange(train_length + length, dtype=np.float64)
    clean = lat(t_all)
    mean_c, std_c = clean[:train_length].mean(0), clean[:train_length].std(0) + 1e-12
    eps = rng.normal(size=clean.shape) * (noise * std_c)[None]
    series = clean + eps
    train = series[:train_length].astype(np.float32)
    test = series[train_length:].copy()
    clean_te, eps_te = clean[train_length:], eps[train_length:]
    dev_max = np.abs(train - mean_c[None]).max(0)
    clean_lo, clean_hi = clean[:train_length].min(0), clean[:train_length].max(0)

    labels = np.zeros(length, dtype=np.int8)
    busy = np.zeros(length, dtype=bool)   # event steps plus their gap
    segments: List[Segment] = []
    # the same number of events for every kind, sized so that the expected labelled fraction is the target
    expected = sum(1.0 if k in ("point", "contextual") else (lo + hi) / 2.0 for k in kinds)
    n_events = max(1, int(round(anomaly_ratio * length / expected)))

    def place(n: int, g: int, candidates: Optional[np.ndarray] = None) -> Optional[int]:
        for _ in range(200):
            if candidates is None:
                s = int(rng.integers(gap, length - n - gap + 1))
            else:
                s = int(candidates[rng.integers(candidates.size)])
            if not busy[max(0, s - g): s + n + g].any():
                busy[max(0, s - g): s + n + g] = True
                return s
        return None

    # contextual outliers: the value mirrored about the channel mean, clipped into the clean training
    # range, at moments where that moves it by >= 1.5 std (so it is in range but out of context)
    ctx_value = np.clip(2 * mean_c[None] - clean_te, clean_lo[None], clean_hi[None])
    ctx_ok = np.abs(ctx_value - clean_te) >= 1.5 * std_c[None]
    ctx_ok[:gap] = ctx_ok[length - gap:] = False
    ctx_rows = np.flatnonzero(ctx_ok.any(axis=1))

    def pick_channels(pool: np.ndarray, most: int) -> Tuple[int, ...]:
        k = int(rng.integers(1, max(1, min(most, pool.size)) + 1))
        return tuple(sorted(int(c) for c in rng.choice(pool, size=k, replace=False)))

    all_ch = np.arange(channels)
    # pattern kinds first: long events are the hard ones to fit
    order = [k for k in kinds if k not in ("point", "contextual")] + [k for k in kinds if k in ("point", "contextual")]
    for kind in order:
        placed, tries = 0, 0
        while placed < n_events:
            tries += 1
            is_point = kind in ("point", "contextual")
            n = 1 if is_point else int(rng.integers(lo, hi + 1))
            g = point_gap if is_point else gap
            cand = ctx_rows if kind == "contextual" else None
            s = place(n, g, cand) if tries <= 50 * n_events and (cand is None or cand.size) else None
            if s is None:
                raise ValueError(f"anomaly_ratio: could not place {n_events} {kind!r} anomalies in {length} "
                                 f"steps (events keep a gap of {g}); lower anomaly_ratio or segment_length, "
                                 f"or raise length")
            seg = slice(s, s + n)
            tt = np.arange(s, s + n) + train_length
            if kind == "point":
                ch = pick_channels(all_ch, max(1, channels // 4))
                sign = rng.choice([-1.0, 1.0], size=len(ch))
                test[s, ch] = mean_c[list(ch)] + sign * dev_max[list(ch)] * rng.uniform(1.5, 2.5, len(ch))
            elif kind == "contextual":
                ch = pick_channels(np.flatnonzero(ctx_ok[s]), max(1, channels // 4))
                c = list(ch)
                test[s, c] = ctx_value[s, c] + eps_te[s, c]
            elif kind == "collective":
                ch = pick_channels(all_ch, max(1, channels // 2))
                c = list(ch)
                cycles = rng.uniform(1.5, 3.0)
                phase = (np.arange(n) / n * cycles) % 1.0
                wave = np.sign(np.sin(2 * np.pi * phase)) if rng.random() < 0.5 else 2 * phase - 1
                level = clean_te[seg][:, c].mean(0)
                test[seg, c] = level[None] + 1.2 * std_c[c][None] * wave[:, None] + eps_te[seg][:, c]
            elif kind == "seasonal":
                ch = pick_channels(all_ch, max(1, channels // 2))
                f = rng.uniform(2.5, 4.0) if rng.random() < 0.5 else 1.0 / rng.uniform(2.5, 4.0)
                warped = tt[0] + (tt - tt[0]) * f
                test[seg, list(ch)] = lat(warped, ch) + eps_te[seg][:, list(ch)]
            else:  # trend
                ch = pick_channels(all_ch, max(1, channels // 2))
                c = list(ch)
                height = rng.uniform(3.0, 5.0, len(c)) * rng.choice([-1.0, 1.0], len(c)) * std_c[c]
                test[seg, c] += np.linspace(0.0, 1.0, n)[:, None] * height[None]
            labels[seg] = 1
            segments.append(Segment(kind, s, s + n, ch))
            placed += 1
    segments.sort(key=lambda g: g.start)
    return SeriesSplit(train=train, test=test.astype(np.float32), test_labels=labels, name=name,
                       channel_names=[f"x{c}" for c in range(channels)], segments=segments,
                       info={"generator": "make_synthetic", "seed": seed, "length": length,
                             "train_length": train_length, "channels": channels,
                             "anomaly_ratio": float(anomaly_ratio), "kinds": list(kinds), "noise": noise,
                             "segment_length": [lo, hi]})
