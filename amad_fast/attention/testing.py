"""Parity testing of the AutoMask attention backends, for tests and scripts alike (as ``torch.testing``):
one input factory (:func:`make_inputs`), one way to run a backend with gradients (:func:`run`), and
one parity rule (:func:`assert_parity`).

The rule, flash-attention's practice: a kernel's error against the reference evaluated in float64
may be at most twice the error of the reference itself evaluated in the kernel's dtype, plus a
floor::

    error(kernel) ≤ 2 · error(reference in the same dtype) + floor

An absolute tolerance would either fail a correct kernel (the reference in float16 is itself off
by 1e-3) or pass a wrong one (1e-3 is a large error in float32); measuring against what the
reference achieves in the same dtype ties the tolerance to the rounding the inputs, the dtype and
the problem's conditioning allow. Errors are max |x − x_float64| per field (the five outputs and
the six gradients); a field's scale is max |x_float64|, or its natural scale when larger
(:data:`NATURAL_SCALE`). The floor (:class:`Floor`) covers fields the reference gets luckily exact.

The rule, rewritten, is a ratio: ``(error(kernel) + floor) / (error(reference) + floor) ≤ 2``.
At large scores one input draw is a lottery (a score near a tie moves a row's probabilities by
whatever its float32 rounding happens to be; the reference against itself with its sums in
another order breaks the one-draw rule in 1 to 7 of 16 draws, see tests/test_large_logits.py), so
there the same ratio is averaged over draws: the geometric mean over :data:`PARITY_SEEDS` draws
must be ≤ 2 (:func:`assert_sample_parity`; one draw is the special case of a sample of one).

Float64 kernels are measured either against the float64 reference itself (then the reference's
own error is 0 and the rule reads error ≤ floor, with :data:`FLOAT64_FLOOR`), or, at large scores,
against :func:`run_extended`, the same formulas in x87 extended precision (numpy longdouble),
with the float64 reference as the same-dtype reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from amad_fast.attention.dispatch import automask_attention
from amad_fast.attention.reference import default_freqs

__all__ = [
    "EXTENDED", "FIELDS", "FLOAT64_FLOOR", "GRADS", "NAMES", "NATURAL_SCALE", "PARAM_GRADS", "PARITY_SEEDS",
    "SCORE_SCALES", "Floor", "FieldParity", "assert_parity", "assert_sample_parity", "cast", "check_parity", "cotangents",
    "eps_floor", "fused_floor", "kernel_floor", "make_inputs", "parity_stats", "permute_pairs", "run", "run_extended",
    "unpermute_pairs",
]

FIELDS = ("out", "kl_local", "kl_global", "out_local", "out_global")
GRADS = ("dq", "dk", "dv", "dfreqs", "dweights", "dmix")
NAMES = FIELDS + GRADS
#: the parameter gradients: sums over the batch and positions of per-position terms
PARAM_GRADS = ("dfreqs", "dweights", "dmix")

#: Score scales of the large-logit tests: at score scale s, make_inputs scales q, k and the
#: AutoMask weights each by √s, so the plain scores G grow s-fold and the AutoMask scores A
#: (bilinear in q, k and quadratic in the weights) s²-fold: at s = 1000, |A| ~ 1e6.
SCORE_SCALES = (1.0, 10.0, 100.0, 1000.0)

#: draws per (shape, score scale) of assert_sample_parity: with 16, the reordered reference's
#: geometric-mean ratio against the reference stays ≤ 1.5 (it reached 1.8 with 8)
PARITY_SEEDS = 16

#: The kl terms are sums of O(1) terms p·(log P − log M) whose result may be small (≤ ln 2 always):
#: their rounding error is absolute, on the scale of ln 2, not of the (possibly tiny) kl itself.
NATURAL_SCALE = {"kl_local": math.log(2.0), "kl_global": math.log(2.0)}

#: numpy long double has a 64-bit mantissa on x86 (x87 extended); elsewhere it may be float64 only
EXTENDED = np.finfo(np.longdouble).eps < 1e-18

Inputs = List[Tensor]
Result = Dict[str, Tensor]


# ----------------------------------------------------------------------------------------------
# Inputs and runs
# ----------------------------------------------------------------------------------------------
def cast(x: Tensor, dtype: torch.dtype, device: Union[str, torch.device] = "cpu") -> Tensor:
    """x in another dtype / on another device with the same strides (a strided view stays strided,
    so a kernel sees the layout the test chose)."""
    y = torch.empty_strided(x.shape, x.stride(), dtype=dtype, device=device)
    y.copy_(x.detach())
    return y


def _strided(x: Tensor, which: int) -> Tensor:
    """The same values in a non-contiguous layout: q in the (B, L, H, D) storage of a fused
    projection, k with the head dim not innermost, v with innermost stride 2."""
    if which == 0:
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    if which == 1:
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    return wide[..., ::2].copy_(x)


def make_inputs(B: int, H: int, L: int, D: int, S: int, *, seed: int = 0, score_scale: float = 1.0,
                q_scale: float = 1.0, weight_scale: float = 1.0, dtype: torch.dtype = torch.float64,
                param_dtype: Optional[torch.dtype] = None, device: Union[str, torch.device] = "cpu",
                strided: bool = False, requires_grad: bool = False) -> Inputs:
    """[q, k, v, freqs, weights, mix] with non-trivial modulation parameters (not the symmetric
    initialisation, which would hide errors in the per-scale terms).

    The values are drawn in float64 from a CPU generator seeded ``seed`` and then cast, so a seed is
    one problem in every dtype (up to its rounding) and on every device. score_scale s: q, k and
    the weights × √s (G × s, A × s², see SCORE_SCALES); q_scale: q alone × q_scale (both maps'
    scores × q_scale); weight_scale: the weights alone (the modulation's size |c| ≲ Σ|w| sets how
    peaked P^M is). strided: q, k, v as non-contiguous views holding the same values.
    """
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    root = math.sqrt(score_scale)
    q, k, v = rnd(B, H, L, D) * (q_scale * root), rnd(B, H, L, D) * root, rnd(B, H, L, D)
    freqs = default_freqs(H, S, D // 2).double() * (1 + 0.3 * rnd(H, S, D // 2))
    weights = (1.0 / S + 0.5 * rnd(H, S)) * (root * weight_scale)
    mix = rnd(H)
    tensors = [q, k, v, freqs, weights, mix]
    if strided:
        tensors[:3] = [_strided(x, i) for i, x in enumerate(tensors[:3])]
    param_dtype = param_dtype or dtype
    tensors = [cast(x, dtype if i < 3 else param_dtype, device) for i, x in enumerate(tensors)]
    return [x.requires_grad_() for x in tensors] if requires_grad else tensors


def cotangents(shapes: Mapping[str, Sequence[int]], seed: int = 1, need_kl_grad: bool = True) -> Dict[str, Tensor]:
    """The fixed random cotangents (float64, CPU) of the outputs named in ``shapes``, drawn in FIELDS
    order; the kl terms get none when need_kl_grad is False. Every runner (run, run_extended and
    the CUDA kernels' CPU emulation) takes its cotangents from here, so their gradients compare."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in FIELDS:
        if name not in shapes or (name.startswith("kl") and not need_kl_grad):
            continue
        out[name] = torch.randn(tuple(shapes[name]), generator=g, dtype=torch.float64)
    return out


def run(backend: Union[str, Callable], inputs: Inputs, dtype: Optional[torch.dtype] = None,
        param_dtype: Optional[torch.dtype] = None, *, device: Union[str, torch.device] = "cpu",
        need_divergence: bool = True, need_branches: bool = True, need_kl_grad: bool = True,
        seed: int = 1, grad_fields: Optional[Sequence[str]] = None) -> Result:
    """The outputs asked for and the six gradients (on the CPU, in the dtypes the backend returned)
    of one call, under the cotangents of :func:`cotangents`; ``grad_fields`` (default: all) names
    the outputs that get one, e.g. ("kl_local", "kl_global") for a loss without ``out``.

    backend: a name for :func:`automask_attention`, or a callable with its signature. q, k, v are
    cast to ``dtype`` and the parameters to ``param_dtype`` (default: the inputs' dtypes), keeping
    their strides.
    """
    dtype = dtype or inputs[0].dtype
    param_dtype = param_dtype or dtype
    xs = [cast(x, dtype if i < 3 else param_dtype, device).requires_grad_() for i, x in enumerate(inputs)]
    if callable(backend):
        r = backend(*xs, need_divergence=need_divergence, need_branches=need_branches)
    else:
        r = automask_attention(*xs, need_divergence=need_divergence, need_branches=need_branches, backend=backend)
    res = {name: t for name, t in zip(FIELDS, r) if t is not None}
    cot = cotangents({n: t.shape for n, t in res.items()}, seed, need_kl_grad)
    if grad_fields is not None:
        cot = {n: c for n, c in cot.items() if n in grad_fields}
    loss = sum((res[n].double() * c.to(res[n].device)).sum() for n, c in cot.items())
    grads = torch.autograd.grad(loss, xs, allow_unused=True)  # v is unused by a loss of the kl terms only
    out = {name: t.detach().cpu() for name, t in res.items()}
    out.update({name: (gx if gx is not None else torch.zeros_like(x)).cpu() for name, gx, x in zip(GRADS, grads, xs)})
    return out


def permute_pairs(inputs: Inputs, perm: Tensor) -> Inputs:
    """The same problem with the rotation pairs taken in the order perm (a permutation of 0..P-1):
    every score is the same sum in another order. unpermute_pairs maps a result back."""
    q, k, v, freqs, weights, mix = inputs
    P = q.shape[-1] // 2
    dperm = torch.cat([perm, perm + P])
    return [q[..., dperm], k[..., dperm], v, freqs[..., perm], weights, mix]


def unpermute_pairs(result: Result, perm: Tensor) -> Result:
    """A result of permute_pairs(inputs, perm) in the original pair order."""
    P = perm.numel()
    inv, pinv = torch.argsort(torch.cat([perm, perm + P])), torch.argsort(perm)
    out = dict(result)
    out["dq"], out["dk"], out["dfreqs"] = result["dq"][..., inv], result["dk"][..., inv], result["dfreqs"][..., pinv]
    return out


# ----------------------------------------------------------------------------------------------
# The rule
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Floor:
    """The rule's floor for one field: (rtol + rtol_for[field]) × the field's scale + atol, plus the
    field dtype's smallest normal: a field below it (e.g. dfreqs ~ 1e-38 when every row is one-hot
    but one) has no relative precision in that dtype (subnormal, or flushed to zero), whatever
    the kernel."""

    rtol: float = 0.0
    atol: float = 0.0
    rtol_for: Mapping[str, float] = field(default_factory=dict)

    def of(self, name: str, scale: float, field_dtype: torch.dtype) -> float:
        tiny = torch.finfo(field_dtype).tiny if field_dtype.is_floating_point else 0.0
        return (self.rtol + self.rtol_for.get(name, 0.0)) * scale + self.atol + tiny


def eps_floor(dtype: torch.dtype) -> Floor:
    """4 eps of the run's dtype, relative (a few roundings of the result): the floor of the sample
    rule, and of the reference against itself reordered (its sums over positions keep their order)."""
    return Floor(rtol=4 * torch.finfo(dtype).eps)


#: float64 against the float64 reference itself (its own error 0): the rule reads error ≤ 1e-9
#: relative, what a different but correct summation order leaves after the conditioning of
#: softmax and its backward (measured errors are ~1e-14)
FLOAT64_FLOOR = Floor(rtol=1e-9)

_SUM_RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
_FUSED_ATOL = {torch.float32: 3e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def kernel_floor(dtype: torch.dtype) -> Floor:
    """eps_floor, plus for dfreqs, dweights, dmix a relative term of the dtype's resolution: they
    are sums of B·L·P per-position terms as accurate as the reference's, added by a kernel in
    another order than torch's (pairwise) sums, and with a few entries per tensor the reference
    can be luckily exact. One draw of the C++ kernels in float32 shows it: dmix and dweights at
    2.0 to 2.5 × the reference's error in 2 of 6 seeds of (1, 2, 300, 32, 3) and (2, 2, 100, 32, 4),
    at 1.7e-6 relative."""
    return Floor(rtol=4 * torch.finfo(dtype).eps, rtol_for={n: _SUM_RTOL[dtype] for n in PARAM_GRADS})


def fused_floor(dtype: torch.dtype) -> Floor:
    """The floor of the fused GPU-style kernels (Triton, and the CUDA kernels in
    benchmarks/gpu_check.py): kernel_floor's term for the summed gradients, and instead of 4 eps an
    absolute atol: with δ = dO·O taken from the forward (AMAD_TRITON_DELTA=forward), an
    exactly-zero gradient (L = 1: a softmax over one key) keeps a few 1e-6 of round-off in
    float32, where the reference is exactly 0."""
    return Floor(atol=_FUSED_ATOL[dtype], rtol_for={n: _SUM_RTOL[dtype] for n in PARAM_GRADS})


def _as_extended(t):
    return t.detach().cpu().double().numpy().astype(np.longdouble) if isinstance(t, Tensor) else t


def _max_abs(x) -> float:
    return float(np.abs(x).max()) if not isinstance(x, Tensor) else x.double().abs().max().item()


def _error(got: Tensor, exact) -> float:
    """max |got − exact| in float64 (exact a tensor) or long double (exact from run_extended)."""
    if isinstance(exact, Tensor):
        return (got.double() - exact.double()).abs().max().item()
    return float(np.abs(_as_extended(got) - exact).max())


@dataclass(frozen=True)
class FieldParity:
    """One field of one draw: the kernel's and the same-dtype reference's errors against the truth,
    the floor, and the field's scale (all absolute)."""

    error: float
    reference_error: float
    floor: float
    scale: float

    @property
    def ratio(self) -> float:
        """(error + floor) / (reference error + floor): the rule is ratio ≤ 2."""
        return (self.error + self.floor) / (self.reference_error + self.floor)

    @property
    def tolerance(self) -> float:
        """The largest error the rule allows on this draw: 2 × reference error + floor."""
        return 2 * self.reference_error + self.floor


def field_parity(got: Result, ref: Result, exact, name: str, floor: Floor) -> FieldParity:
    """The rule's numbers for one field of one draw."""
    scale = max(_max_abs(exact[name]), NATURAL_SCALE.get(name, 0.0))
    return FieldParity(_error(got[name], exact[name]), _error(ref[name], exact[name]),
                       floor.of(name, scale, got[name].dtype), scale)


def parity_stats(draws: Sequence[Tuple[Result, Result, Mapping]], floor: Floor,
                 names: Optional[Sequence[str]] = None) -> Dict[str, Tuple[float, FieldParity]]:
    """draws: [(kernel, reference in the same dtype, truth)] → {field: (geometric mean over the draws
    of FieldParity.ratio, the worst draw's FieldParity)}; fields default to those the kernel returned."""
    names = [n for n in NAMES if n in draws[0][0]] if names is None else names
    out = {}
    for name in names:
        per_draw = [field_parity(got, ref, exact, name, floor) for got, ref, exact in draws]
        geomean = math.exp(sum(math.log(p.ratio) for p in per_draw) / len(per_draw))  # NaN stays NaN
        out[name] = (geomean, max(per_draw, key=lambda p: math.inf if math.isnan(p.ratio) else p.ratio))
    return out


def assert_sample_parity(draws: Sequence[Tuple[Result, Result, Mapping]], floor: Optional[Floor] = None,
                         label: str = "kernel", names: Optional[Sequence[str]] = None):
    """The rule over a sample of draws: for every field, the kernel's values are finite with the
    same-dtype reference's dtype and shape, and the geometric mean of the per-draw ratios is ≤ 2.

    floor: default eps_floor of the reference's dtype. Returns parity_stats.
    """
    got0, ref0, _ = draws[0]
    floor = floor or eps_floor(ref0["out"].dtype)
    names = [n for n in NAMES if n in got0] if names is None else names
    for got, ref, _ in draws:
        for name in names:
            t = got[name]
            assert t.dtype == ref[name].dtype and t.shape == ref[name].shape, (
                f"{name}: {label} gave {t.dtype} {tuple(t.shape)}, the reference {ref[name].dtype} "
                f"{tuple(ref[name].shape)}")
            assert torch.isfinite(t).all(), f"{name}: {label} not finite"
    stats = parity_stats(draws, floor, names)
    bad = {n: s for n, s in stats.items() if not s[0] <= 2.0}
    what = "ratio" if len(draws) == 1 else f"geometric-mean ratio over {len(draws)} draws"
    report = "; ".join(
        f"{n}: {what} {s[0]:.2f} > 2 (worst draw: {label} {s[1].error / s[1].scale:.2e} vs reference "
        f"{s[1].reference_error / s[1].scale:.2e}, floor {s[1].floor / s[1].scale:.1e}, relative to {s[1].scale:.2e})"
        for n, s in bad.items())
    assert not bad, report
    return stats


def assert_parity(got: Result, ref: Result, exact, floor: Optional[Floor] = None, label: str = "kernel",
                  names: Optional[Sequence[str]] = None):
    """The rule on one draw: error(kernel) ≤ 2 · error(reference in the same dtype) + floor for
    every field (assert_sample_parity on a sample of one)."""
    return assert_sample_parity([(got, ref, exact)], floor, label, names)


def check_parity(backend: Union[str, Callable], inputs: Inputs, dtype: torch.dtype,
                 param_dtype: Optional[torch.dtype] = None, *, floor: Optional[Floor] = None,
                 device: Union[str, torch.device] = "cpu", label: Optional[str] = None, **run_kw):
    """Run ``backend`` and the reference in ``dtype`` (parameters in ``param_dtype``) on ``device``,
    and the reference in float64, on one draw of inputs, and assert the rule. In float64 the
    reference is the truth (its own error 0) and the floor defaults to FLOAT64_FLOOR, otherwise to
    eps_floor(dtype). run_kw: need_divergence, need_branches, need_kl_grad, seed for run().
    Returns parity_stats."""
    exact = run("reference", inputs, **run_kw)
    if dtype == torch.float64:
        ref, floor = exact, floor or FLOAT64_FLOOR
    else:
        ref = run("reference", inputs, dtype, param_dtype, device=device, **run_kw)
    got = run(backend, inputs, dtype, param_dtype, device=device, **run_kw)
    return assert_parity(got, ref, exact, floor or eps_floor(dtype), label or str(backend))


# ----------------------------------------------------------------------------------------------
# The truth in extended precision
# ----------------------------------------------------------------------------------------------
def _ld_rotate(x, c, s):
    P = x.shape[-1] // 2
    return np.concatenate((x[..., :P] * c - x[..., P:] * s, x[..., :P] * s + x[..., P:] * c), -1)


def _ld_unrotate(g, c, s):  # the transpose of _ld_rotate
    P = g.shape[-1] // 2
    return np.concatenate((g[..., :P] * c + g[..., P:] * s, -g[..., :P] * s + g[..., P:] * c), -1)


def _ld_log_softmax(x):
    m = x.max(-1, keepdims=True)
    return (x - m) - np.log(np.exp(x - m).sum(-1, keepdims=True))


def run_extended(inputs: Inputs, seed: int = 1, need_kl_grad: bool = True) -> Dict[str, np.ndarray]:
    """run("reference", inputs) in long double: spec §1 and its gradients written out (the
    divergence anchor constant), with the same cotangents as run(). {name: numpy long double}."""
    ld = np.longdouble
    q, k, v, f, w, m = (_as_extended(x) for x in inputs)
    B, H, L, D = q.shape
    P = D // 2
    scale = ld(1) / np.sqrt(ld(D))
    pos = np.arange(L, dtype=ld)[None, None, :, None]
    ang = f[:, :, None, :] * pos  # (H, S, L, P)
    cos_a, sin_a = np.cos(ang), np.sin(ang)
    c, s = (w[:, :, None, None] * cos_a).sum(1), (w[:, :, None, None] * sin_a).sum(1)  # (H, L, P)
    qt, kt = _ld_rotate(q, c, s), _ld_rotate(k, c, s)
    la = _ld_log_softmax(scale * (qt @ np.swapaxes(kt, -1, -2)))
    lg = _ld_log_softmax(scale * (q @ np.swapaxes(k, -1, -2)))
    pa, pg = np.exp(la), np.exp(lg)
    lam = (1 / (1 + np.exp(-m)))[None, :, None, None]
    ol, og = pa @ v, pg @ v
    log_m = np.logaddexp(la, lg) - np.log(ld(2))
    gap_m, gap_g = la - log_m, lg - log_m
    res = dict(out=lam * ol + (1 - lam) * og, kl_local=(pa * gap_m).sum(-1), kl_global=(pg * gap_g).sum(-1),
               out_local=ol, out_global=og)
    drawn = cotangents({n: x.shape for n, x in res.items()}, seed, need_kl_grad)
    cot = {n: _as_extended(drawn[n]) if n in drawn else np.zeros(res[n].shape, ld) for n in FIELDS}
    d_om = lam * cot["out"] + cot["out_local"]
    d_og = (1 - lam) * cot["out"] + cot["out_global"]
    xa = d_om @ np.swapaxes(v, -1, -2) + cot["kl_local"][..., None] * gap_m
    xg = d_og @ np.swapaxes(v, -1, -2) + cot["kl_global"][..., None] * gap_g
    da = pa * (xa - (pa * xa).sum(-1, keepdims=True))
    dg = pg * (xg - (pg * xg).sum(-1, keepdims=True))
    dqt, dkt = scale * da @ kt, scale * np.swapaxes(da, -1, -2) @ qt

    def dcs(x, gx):  # the rotation's gradient with respect to c and s, summed over the batch
        x1, x2, g1, g2 = x[..., :P], x[..., P:], gx[..., :P], gx[..., P:]
        return (g1 * x1 + g2 * x2).sum(0), (g2 * x1 - g1 * x2).sum(0)

    (dc1, ds1), (dc2, ds2) = dcs(q, dqt), dcs(k, dkt)
    dc, ds = (dc1 + dc2)[:, None], (ds1 + ds2)[:, None]
    res.update(
        dq=scale * dg @ k + _ld_unrotate(dqt, c, s),
        dk=scale * np.swapaxes(dg, -1, -2) @ q + _ld_unrotate(dkt, c, s),
        dv=np.swapaxes(pa, -1, -2) @ d_om + np.swapaxes(pg, -1, -2) @ d_og,
        dfreqs=w[:, :, None] * (pos * (cos_a * ds - sin_a * dc)).sum(2),
        dweights=(cos_a * dc + sin_a * ds).sum((2, 3)),
        dmix=(cot["out"] * (ol - og)).sum((0, 2, 3)) * (lam * (1 - lam))[0, :, 0, 0],
    )
    return res
