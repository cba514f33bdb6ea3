"""The built-in seeded synthetic benchmark: latent periodic series mixed into channels, with point,
contextual, collective, seasonal and trend anomalies."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from amad_fast.data.series import Segment, SeriesSplit, _positive_int

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
