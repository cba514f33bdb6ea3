"""Fused Triton kernels of AutoMask attention (spec §1), forward and backward, as a torch custom op.

What: one forward kernel computes, for a block of query rows, the multi-frequency modulation
(c, s) in registers (for the q rows and for every k block: no (L, P) table is written), the
half-split rotation, both score maps A (modulated) and G (plain), both softmaxes online in fp32,
the two branch outputs O^M = P^M v and O^G = P^G v, out = λ O^M + (1 − λ) O^G, and, on request,
the per-row divergences kl_local / kl_global (in the same pass when L fits in one key block,
else a second pass over k with the final log-sum-exps; O(L) memory either way). It saves only
per-row stats (lse of both maps, float64: see _log_probs_and_integrands) for the backward.

The backward is FlashAttention-2-style recomputation: a small pass over query blocks for the row
terms δ (see RECOMPUTE_DELTA), one kernel over key blocks (dk, dv and the dc/ds contributions at
key positions) and one over query blocks (dq and dc/ds at query positions); no atomics, so it is
deterministic. The tiny parameter gradients (dfreqs, dweights from dc/ds, dλ from the saved
branch outputs) are finished in torch.

Why a custom op: ``torch.compile`` traces a model calling it without a graph break
(``torch.library.custom_op`` + ``register_fake`` + ``register_autograd``).

Numerics: scores and lse in natural units (as in log_softmax, A − lse is formed before scaling
by log2(e) for exp2, so dominant entries keep full precision), fp32 accumulation. log M_ij =
logaddexp(log P^M, log P^G) − log 2 is never formed: with d = log P^M − log P^G the KL integrands
are g^M = log 2 − softplus(−d) and g^G = log 2 − softplus(d), finite whenever the scores are.
fp32 inputs use IEEE fp32 dots (``input_precision="ieee"``) for parity with the reference.

Precision (fp32, measured against float64 under the interpreter): outputs, divergences and all
six gradients stay within 2x the fp32 reference's own error at ordinary magnitudes. In strongly
peaked maps (|A| ~ 1e2..1e3, e.g. S = 16 with Σ_s w_s ≈ 11) dq, dk reach ~2.5x the reference's
max error (1.6x rms; it comes through the output branches, not the divergence, and not from δ),
and dfreqs, dweights ~2e-4 relative (~1e-3 with δ taken from the forward, see RECOMPUTE_DELTA).

Status: correctness is tested on the CPU under ``TRITON_INTERPRET=1`` (fp32/fp16). GPU
performance (the autotune configs below, written for H100/H200) is untested in this session.
The module decides at import whether Triton runs interpreted (``TRITON_INTERPRET=1`` must be set
before the first ``import triton``); interpreted, or with ``AMAD_TRITON_AUTOTUNE=0``, it skips
autotuning and uses FIXED_CONFIG.
"""
import os
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = [
    "automask_attention_triton",
    "SUPPORTED_HEAD_DIMS",
    "MAX_SCALES",
    "INTERPRETED",
]

#: head dims the kernels are compiled for (tile widths must be powers of two)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
#: largest number of AutoMask scales S (S is unrolled at compile time)
MAX_SCALES = 16
#: True when Triton was imported with TRITON_INTERPRET=1 (kernels run on the CPU interpreter)
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

_LOG2E = 1.4426950408889634
LN2 = tl.constexpr(0.6931471805599453)
LOG2E = tl.constexpr(_LOG2E)


# ----------------------------------------------------------------------------------------------
# Shared device helpers
# ----------------------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, DT: tl.constexpr):
    """a @ b with operands in the input dtype DT and fp32 accumulation (IEEE for fp32)."""
    return tl.dot(a.to(DT), b.to(DT), input_precision="ieee")


@triton.jit
def _softplus(x):
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def _modulation(pos, offs_p, p_mask, fr_ptr, w_ptr, P: tl.constexpr, S: tl.constexpr):
    """c, s = Σ_s w_s cos(θ_{s,p}·pos), Σ_s w_s sin(θ_{s,p}·pos): [len(pos), PB] fp32, in registers."""
    posf = pos.to(tl.float32)
    theta = tl.load(fr_ptr + offs_p, mask=p_mask, other=0.0)
    w = tl.load(w_ptr)
    ang = posf[:, None] * theta[None, :]
    c = w * tl.cos(ang)
    s = w * tl.sin(ang)
    for si in tl.static_range(1, S):
        theta = tl.load(fr_ptr + si * P + offs_p, mask=p_mask, other=0.0)
        w = tl.load(w_ptr + si)
        ang = posf[:, None] * theta[None, :]
        c += w * tl.cos(ang)
        s += w * tl.sin(ang)
    return c, s


@triton.jit
def _load_halves(base, stride_l, stride_d, pos, row_mask, offs_p, p_mask, P: tl.constexpr):
    """The two halves x[:, :P], x[:, P:] of rows ``pos`` as fp32 [len(pos), PB] tiles (zero-padded)."""
    ptr = base + pos[:, None] * stride_l + offs_p[None, :] * stride_d
    m = row_mask[:, None] & p_mask[None, :]
    x1 = tl.load(ptr, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(ptr + P * stride_d, mask=m, other=0.0).to(tl.float32)
    return x1, x2


@triton.jit
def _load_rows(base, stride_l, stride_d, pos, row_mask, offs_d):
    ptr = base + pos[:, None] * stride_l + offs_d[None, :] * stride_d
    return tl.load(ptr, mask=row_mask[:, None], other=0.0)


@triton.jit
def _store_halves(base, stride_l, pos, row_mask, offs_p, p_mask, x1, x2, P: tl.constexpr):
    ptr = base + pos[:, None] * stride_l + offs_p[None, :]
    m = row_mask[:, None] & p_mask[None, :]
    tl.store(ptr, x1.to(base.dtype.element_ty), mask=m)
    tl.store(ptr + P, x2.to(base.dtype.element_ty), mask=m)


@triton.jit
def _rotated(base, stride_l, stride_d, pos, row_mask, offs_p, p_mask, fr_ptr, w_ptr,
             P: tl.constexpr, S: tl.constexpr):
    """Load rows ``pos`` of q or k and their AutoMask embedding (half-split rotation, spec §1.2).

    The rotation is done in fp32; the four tiles come back in the input dtype (they only feed
    tl.dot, which takes that dtype, and half-width tiles halve the registers held across loops).
    """
    x1, x2 = _load_halves(base, stride_l, stride_d, pos, row_mask, offs_p, p_mask, P)
    c, s = _modulation(pos, offs_p, p_mask, fr_ptr, w_ptr, P, S)
    DT = base.dtype.element_ty
    return x1.to(DT), x2.to(DT), (x1 * c - x2 * s).to(DT), (x1 * s + x2 * c).to(DT), c, s


@triton.jit
def _scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, DT: tl.constexpr):
    """Both score maps A (modulated) and G (plain), [M, N], in natural units like the reference."""
    a = _dot(qm1, tl.trans(km1), DT) + _dot(qm2, tl.trans(km2), DT)
    g = _dot(q1, tl.trans(k1), DT) + _dot(q2, tl.trans(k2), DT)
    return a * scale, g * scale


@triton.jit
def _log_probs_and_integrands(a, g, hi_m, lo_m, hi_g, lo_g):
    """P^M, P^G and the KL integrands g^M = log P^M − log M, g^G = log P^G − log M.

    Each row's lse comes as hi + lo (hi ≈ the row max, lo the small rest): a − hi is near-exact
    for the dominant entries (as in log_softmax), so P keeps fp32 relative precision even when
    |A| is large; a single fp32 lse would put ulp(lse) (6e-5 at |A| ~ 1e3) on every P of the row,
    which the backward's δ does not see, and dfreqs/dweights (Σ dA·A) would amplify it.
    """
    la = (a - hi_m[:, None]) - lo_m[:, None]
    lg = (g - hi_g[:, None]) - lo_g[:, None]
    d = la - lg
    return tl.exp2(la * LOG2E), tl.exp2(lg * LOG2E), LN2 - _softplus(-d), LN2 - _softplus(d)


@triton.jit
def _online_update(x, m, l, acc, v, DT: tl.constexpr):
    """One online-softmax step of a map with scores x against values v (running max m, sum l)."""
    m_new = tl.maximum(m, tl.max(x, 1))
    alpha = tl.exp2((m - m_new) * LOG2E)
    p = tl.exp2((x - m_new[:, None]) * LOG2E)
    l = l * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + _dot(p, v, DT)
    return m_new, l, acc


@triton.jit
def _kv_block(k_base, v_base, stride_kl, stride_kd, stride_vl, stride_vd, start_n, offs_n0, L,
              offs_p, p_mask, offs_d, fr_ptr, w_ptr, P: tl.constexpr, S: tl.constexpr):
    offs_n = start_n + offs_n0
    n_mask = offs_n < L
    k1, k2, km1, km2, _c, _s = _rotated(k_base, stride_kl, stride_kd, offs_n, n_mask, offs_p, p_mask,
                                        fr_ptr, w_ptr, P, S)
    v = _load_rows(v_base, stride_vl, stride_vd, offs_n, n_mask, offs_d)
    return k1, k2, km1, km2, v, n_mask


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------


@triton.jit
def _fwd_kernel(
    Q, K, V, FREQS, WEIGHTS, LAM,
    OUT, OUT_L, OUT_G, KL_L, KL_G, LSE_L, LSE_G,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, L_KEY, scale,
    HEAD_DIM: tl.constexpr, P: tl.constexpr, PB: tl.constexpr, S: tl.constexpr,
    NEED_KL: tl.constexpr, STORE_BRANCHES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_BLOCK: tl.constexpr,
):
    DT = Q.dtype.element_ty
    pid_m = tl.program_id(1)
    bh = tl.program_id(0).to(tl.int64)  # B·H on axis 0: axis 1 is limited to 65535
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, PB)
    offs_d = tl.arange(0, HEAD_DIM)
    p_mask = offs_p < P
    m_mask = offs_m < L
    fr = FREQS + h * (S * P)
    wt = WEIGHTS + h * S
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh

    q1, q2, qm1, qm2, _c, _s = _rotated(Q + b * sqb + h * sqh, sql, sqd, offs_m, m_mask, offs_p, p_mask,
                                        fr, wt, P, S)

    m_l = tl.full([BLOCK_M], float("-inf"), tl.float32)
    m_g = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_l = tl.zeros([BLOCK_M], tl.float32)
    l_g = tl.zeros([BLOCK_M], tl.float32)
    acc_l = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    acc_g = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    kl_l = tl.zeros([BLOCK_M], tl.float32)
    kl_g = tl.zeros([BLOCK_M], tl.float32)

    if SINGLE_BLOCK:
        # The whole row fits one key block: scores stay in registers for the divergence.
        k1, k2, km1, km2, v, n_mask = _kv_block(k_base, v_base, skl, skd, svl, svd, 0, offs_n0, L,
                                                offs_p, p_mask, offs_d, fr, wt, P, S)
        a, g = _scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, DT)
        m_l, l_l, acc_l = _online_update(tl.where(n_mask[None, :], a, float("-inf")), m_l, l_l, acc_l, v, DT)
        m_g, l_g, acc_g = _online_update(tl.where(n_mask[None, :], g, float("-inf")), m_g, l_g, acc_g, v, DT)
        r_l = tl.log(l_l)
        r_g = tl.log(l_g)
        if NEED_KL:
            # a, g are unmasked here (finite): padded keys are dropped by the where below.
            pm, pg, gm, gg = _log_probs_and_integrands(a, g, m_l, r_l, m_g, r_g)
            kl_l = tl.sum(tl.where(n_mask[None, :], pm * gm, 0.0), 1)
            kl_g = tl.sum(tl.where(n_mask[None, :], pg * gg, 0.0), 1)
    else:
        for start_n in range(0, L, BLOCK_N):
            k1, k2, km1, km2, v, n_mask = _kv_block(k_base, v_base, skl, skd, svl, svd, start_n, offs_n0, L,
                                                    offs_p, p_mask, offs_d, fr, wt, P, S)
            a, g = _scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, DT)
            a = tl.where(n_mask[None, :], a, float("-inf"))
            g = tl.where(n_mask[None, :], g, float("-inf"))
            m_l, l_l, acc_l = _online_update(a, m_l, l_l, acc_l, v, DT)
            m_g, l_g, acc_g = _online_update(g, m_g, l_g, acc_g, v, DT)
        r_l = tl.log(l_l)
        r_g = tl.log(l_g)
        if NEED_KL:
            # Second pass over k with the final lse's (the divergence needs normalised maps).
            for start_n in range(0, L, BLOCK_N):
                offs_n = start_n + offs_n0
                n_mask = offs_n < L
                k1, k2, km1, km2, _c2, _s2 = _rotated(k_base, skl, skd, offs_n, n_mask, offs_p, p_mask,
                                                      fr, wt, P, S)
                a, g = _scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, DT)
                pm, pg, gm, gg = _log_probs_and_integrands(a, g, m_l, r_l, m_g, r_g)
                kl_l += tl.sum(tl.where(n_mask[None, :], pm * gm, 0.0), 1)
                kl_g += tl.sum(tl.where(n_mask[None, :], pg * gg, 0.0), 1)

    lam = tl.load(LAM + h)
    o_l = acc_l / l_l[:, None]
    o_g = acc_g / l_g[:, None]
    row = bh * L + offs_m
    o_off = row[:, None] * HEAD_DIM + offs_d[None, :]
    o_mask = m_mask[:, None]
    tl.store(OUT + o_off, (lam * o_l + (1.0 - lam) * o_g).to(OUT.dtype.element_ty), mask=o_mask)
    if STORE_BRANCHES:
        tl.store(OUT_L + o_off, o_l.to(OUT_L.dtype.element_ty), mask=o_mask)
        tl.store(OUT_G + o_off, o_g.to(OUT_G.dtype.element_ty), mask=o_mask)
    if NEED_KL:
        # a KL is >= 0; a sum of terms of both signs can round a few ulp below it where P^M ~ P^G
        tl.store(KL_L + row, tl.maximum(kl_l, 0.0), mask=m_mask)
        tl.store(KL_G + row, tl.maximum(kl_g, 0.0), mask=m_mask)
    # lse in float64: exact enough to split back into (hi, lo) fp32 in the backward
    tl.store(LSE_L + row, m_l.to(tl.float64) + r_l.to(tl.float64), mask=m_mask)
    tl.store(LSE_G + row, m_g.to(tl.float64) + r_g.to(tl.float64), mask=m_mask)


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------


@triton.jit
def _probs_and_dp(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                  hi_l, lo_l, hi_g, lo_g, dkl_l, dkl_g, scale, HAS_KL: tl.constexpr, DT: tl.constexpr):
    """Recompute P^M, P^G on an [M, N] tile and dL/dP (+ the KL integrand terms): dP^M_ij =
    dO^M_i·v_j + dkl_local_i·g^M_ij, likewise dP^G. Entries outside the valid tile are garbage."""
    a, g = _scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, DT)
    pm, pg, gm, gg = _log_probs_and_integrands(a, g, hi_l, lo_l, hi_g, lo_g)
    dpm = _dot(dom, tl.trans(v), DT)
    dpg = _dot(dog, tl.trans(v), DT)
    if HAS_KL:
        dpm += dkl_l[:, None] * gm
        dpg += dkl_g[:, None] * gg
    return pm, pg, dpm, dpg


@triton.jit
def _bwd_tile(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
              hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g, mask, scale,
              HAS_KL: tl.constexpr, DT: tl.constexpr):
    """P^M, P^G and the score gradients dA = P^M (dP^M − δ^M), dG likewise (anchor M constant);
    zero outside ``mask``."""
    pm, pg, dpm, dpg = _probs_and_dp(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                                     hi_l, lo_l, hi_g, lo_g, dkl_l, dkl_g, scale, HAS_KL, DT)
    da = tl.where(mask, pm * (dpm - delta_l[:, None]), 0.0)
    dg = tl.where(mask, pg * (dpg - delta_g[:, None]), 0.0)
    return tl.where(mask, pm, 0.0), tl.where(mask, pg, 0.0), da, dg


@triton.jit
def _split(x64):
    """float64 → (hi, lo) fp32 with hi + lo ≈ x64 to ~1e-14 relative."""
    hi = x64.to(tl.float32)
    return hi, (x64 - hi.to(tl.float64)).to(tl.float32)


@triton.jit
def _row_stats(LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G, row, m_mask, HAS_KL: tl.constexpr):
    hi_l, lo_l = _split(tl.load(LSE_L + row, mask=m_mask, other=0.0))
    hi_g, lo_g = _split(tl.load(LSE_G + row, mask=m_mask, other=0.0))
    delta_l = tl.load(DELTA_L + row, mask=m_mask, other=0.0)
    delta_g = tl.load(DELTA_G + row, mask=m_mask, other=0.0)
    if HAS_KL:
        dkl_l = tl.load(DKL_L + row, mask=m_mask, other=0.0)
        dkl_g = tl.load(DKL_G + row, mask=m_mask, other=0.0)
    else:
        dkl_l = delta_l
        dkl_g = delta_g
    return hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g


@triton.jit
def _unrotate(x1, x2, dm1, dm2, d1, d2, c, s, scale):
    """Chain rule through the rotation at the rows' own positions.

    Returns the input gradient halves and the (dc, ds) contributions of these rows.
    """
    x1 = x1.to(tl.float32)
    x2 = x2.to(tl.float32)
    dm1 = dm1 * scale
    dm2 = dm2 * scale
    g1 = d1 * scale + dm1 * c + dm2 * s
    g2 = d2 * scale - dm1 * s + dm2 * c
    dc = dm1 * x1 + dm2 * x2
    ds = dm2 * x1 - dm1 * x2
    return g1, g2, dc, ds


@triton.jit
def _bwd_delta_kernel(
    Q, K, V, FREQS, WEIGHTS, DOM, DOG, LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, L_KEY, scale,
    HEAD_DIM: tl.constexpr, P: tl.constexpr, PB: tl.constexpr, S: tl.constexpr, HAS_KL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """δ_i = Σ_j P_ij dP_ij per query row, from the same recomputed P as the two gradient kernels.

    Mathematically δ^M = dO^M·O^M + dkl_local·kl_local; summing the recomputed tiles instead makes
    every row of dA sum to zero in the kernels' own arithmetic, so round-off in P is not multiplied
    by the (possibly large) scores in dfreqs, dweights, dq and dk.
    """
    DT = Q.dtype.element_ty
    pid_m = tl.program_id(1)
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, PB)
    offs_d = tl.arange(0, HEAD_DIM)
    p_mask = offs_p < P
    m_mask = offs_m < L
    fr = FREQS + h * (S * P)
    wt = WEIGHTS + h * S
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    row = bh * L + offs_m

    q1, q2, qm1, qm2, _c, _s = _rotated(Q + b * sqb + h * sqh, sql, sqd, offs_m, m_mask, offs_p, p_mask,
                                        fr, wt, P, S)
    o_off = row[:, None] * HEAD_DIM + offs_d[None, :]
    dom = tl.load(DOM + o_off, mask=m_mask[:, None], other=0.0)
    dog = tl.load(DOG + o_off, mask=m_mask[:, None], other=0.0)
    hi_l, lo_l, hi_g, lo_g, _dl, _dg, dkl_l, dkl_g = _row_stats(
        LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G, row, m_mask, HAS_KL)
    delta_l = tl.zeros([BLOCK_M], tl.float32)
    delta_g = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, L, BLOCK_N):
        k1, k2, km1, km2, v, n_mask = _kv_block(k_base, v_base, skl, skd, svl, svd, start_n, offs_n0, L,
                                                offs_p, p_mask, offs_d, fr, wt, P, S)
        pm, pg, dpm, dpg = _probs_and_dp(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                                         hi_l, lo_l, hi_g, lo_g, dkl_l, dkl_g, scale, HAS_KL, DT)
        mask = m_mask[:, None] & n_mask[None, :]
        delta_l += tl.sum(tl.where(mask, pm * dpm, 0.0), 1)
        delta_g += tl.sum(tl.where(mask, pg * dpg, 0.0), 1)
    tl.store(DELTA_L + row, delta_l, mask=m_mask)
    tl.store(DELTA_G + row, delta_g, mask=m_mask)


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, FREQS, WEIGHTS, DOM, DOG, LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G,
    DK, DV, DC, DS,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, L_KEY, scale,
    HEAD_DIM: tl.constexpr, P: tl.constexpr, PB: tl.constexpr, S: tl.constexpr, HAS_KL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per key block: dk, dv and dc/ds at the key positions, looping over query blocks."""
    DT = Q.dtype.element_ty
    pid_n = tl.program_id(1)
    bh = tl.program_id(0).to(tl.int64)  # B·H on axis 0: axis 1 is limited to 65535
    b = bh // H
    h = bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_p = tl.arange(0, PB)
    offs_d = tl.arange(0, HEAD_DIM)
    p_mask = offs_p < P
    n_mask = offs_n < L
    fr = FREQS + h * (S * P)
    wt = WEIGHTS + h * S
    q_base = Q + b * sqb + h * sqh

    k1, k2, km1, km2, _ck, _sk = _rotated(K + b * skb + h * skh, skl, skd, offs_n, n_mask, offs_p, p_mask,
                                        fr, wt, P, S)
    v = _load_rows(V + b * svb + h * svh, svl, svd, offs_n, n_mask, offs_d)

    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dkm1 = tl.zeros([BLOCK_N, PB], tl.float32)
    dkm2 = tl.zeros([BLOCK_N, PB], tl.float32)
    dk1 = tl.zeros([BLOCK_N, PB], tl.float32)
    dk2 = tl.zeros([BLOCK_N, PB], tl.float32)
    for start_m in range(0, L, BLOCK_M):
        offs_m = start_m + offs_m0
        m_mask = offs_m < L
        row = bh * L + offs_m
        q1, q2, qm1, qm2, _c, _s = _rotated(q_base, sql, sqd, offs_m, m_mask, offs_p, p_mask, fr, wt, P, S)
        o_off = row[:, None] * HEAD_DIM + offs_d[None, :]
        dom = tl.load(DOM + o_off, mask=m_mask[:, None], other=0.0)
        dog = tl.load(DOG + o_off, mask=m_mask[:, None], other=0.0)
        hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g = _row_stats(
            LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G, row, m_mask, HAS_KL)
        pm, pg, da, dg = _bwd_tile(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                                   hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g,
                                   m_mask[:, None] & n_mask[None, :], scale, HAS_KL, DT)
        dv += _dot(tl.trans(pm), dom, DT) + _dot(tl.trans(pg), dog, DT)
        da_t = tl.trans(da)
        dg_t = tl.trans(dg)
        dkm1 += _dot(da_t, qm1, DT)
        dkm2 += _dot(da_t, qm2, DT)
        dk1 += _dot(dg_t, q1, DT)
        dk2 += _dot(dg_t, q2, DT)

    ck, sk = _modulation(offs_n, offs_p, p_mask, fr, wt, P, S)  # recomputed: not held through the loop
    g1, g2, dc, ds = _unrotate(k1, k2, dkm1, dkm2, dk1, dk2, ck, sk, scale)
    krow = bh * L + offs_n
    _store_halves(DK + bh * L * HEAD_DIM, HEAD_DIM, offs_n, n_mask, offs_p, p_mask, g1, g2, P)
    tl.store(DV + krow[:, None] * HEAD_DIM + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=n_mask[:, None])
    cs_off = krow[:, None] * P + offs_p[None, :]
    cs_mask = n_mask[:, None] & p_mask[None, :]
    tl.store(DC + cs_off, dc, mask=cs_mask)
    tl.store(DS + cs_off, ds, mask=cs_mask)


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, FREQS, WEIGHTS, DOM, DOG, LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G,
    DQ, DC, DS,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    H, L, L_KEY, scale,
    HEAD_DIM: tl.constexpr, P: tl.constexpr, PB: tl.constexpr, S: tl.constexpr, HAS_KL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per query block: dq and dc/ds at the query positions, looping over key blocks."""
    DT = Q.dtype.element_ty
    pid_m = tl.program_id(1)
    bh = tl.program_id(0).to(tl.int64)  # B·H on axis 0: axis 1 is limited to 65535
    b = bh // H
    h = bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n0 = tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, PB)
    offs_d = tl.arange(0, HEAD_DIM)
    p_mask = offs_p < P
    m_mask = offs_m < L
    fr = FREQS + h * (S * P)
    wt = WEIGHTS + h * S
    k_base = K + b * skb + h * skh
    v_base = V + b * svb + h * svh
    row = bh * L + offs_m

    q1, q2, qm1, qm2, _c, _s = _rotated(Q + b * sqb + h * sqh, sql, sqd, offs_m, m_mask, offs_p, p_mask,
                                        fr, wt, P, S)
    o_off = row[:, None] * HEAD_DIM + offs_d[None, :]
    dom = tl.load(DOM + o_off, mask=m_mask[:, None], other=0.0)
    dog = tl.load(DOG + o_off, mask=m_mask[:, None], other=0.0)
    hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g = _row_stats(
        LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G, row, m_mask, HAS_KL)

    dqm1 = tl.zeros([BLOCK_M, PB], tl.float32)
    dqm2 = tl.zeros([BLOCK_M, PB], tl.float32)
    dq1 = tl.zeros([BLOCK_M, PB], tl.float32)
    dq2 = tl.zeros([BLOCK_M, PB], tl.float32)
    for start_n in range(0, L, BLOCK_N):
        k1, k2, km1, km2, v, n_mask = _kv_block(k_base, v_base, skl, skd, svl, svd, start_n, offs_n0, L,
                                                offs_p, p_mask, offs_d, fr, wt, P, S)
        pm, pg, da, dg = _bwd_tile(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                                   hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g,
                                   m_mask[:, None] & n_mask[None, :], scale, HAS_KL, DT)
        dqm1 += _dot(da, km1, DT)
        dqm2 += _dot(da, km2, DT)
        dq1 += _dot(dg, k1, DT)
        dq2 += _dot(dg, k2, DT)

    cq, sq = _modulation(offs_m, offs_p, p_mask, fr, wt, P, S)  # recomputed: not held through the loop
    g1, g2, dc, ds = _unrotate(q1, q2, dqm1, dqm2, dq1, dq2, cq, sq, scale)
    _store_halves(DQ + bh * L * HEAD_DIM, HEAD_DIM, offs_m, m_mask, offs_p, p_mask, g1, g2, P)
    cs_off = row[:, None] * P + offs_p[None, :]
    cs_mask = m_mask[:, None] & p_mask[None, :]
    tl.store(DC + cs_off, dc, mask=cs_mask)
    tl.store(DS + cs_off, ds, mask=cs_mask)


# ----------------------------------------------------------------------------------------------
# Launch configuration: autotuned on a GPU, one small config under the interpreter
# ----------------------------------------------------------------------------------------------

_AUTOTUNE_KEY = ["L_KEY", "HEAD_DIM", "S"]


def _configs(backward: bool) -> List[triton.Config]:
    """Block shapes for short windows (L≈100 is the common case: one 128-key block, or 64-key
    blocks over more query programs) up to long sequences, for H100/H200 (untested here)."""
    if backward:  # holds ~4 [M, N] fp32 tiles plus 5 accumulators: stay small
        shapes = [(16, 16), (16, 32), (32, 16), (32, 32), (32, 64), (64, 32), (64, 64)]
    else:
        shapes = [(16, 16), (16, 32), (16, 128), (32, 32), (32, 64), (32, 128), (64, 32), (64, 64), (64, 128),
                  (128, 64), (128, 128)]
    # One pipeline depth: each config compiles on first use of an (L bucket, D, S) key, and deeper
    # pipelines only pay off for long L. 8 warps from 32x64 up: compiled for sm_90 (aot_compile,
    # bf16, D = 64, S = 4), 4 warps spill there (fwd 32x64: 208 B, dkdv 32x64: 376 B) while 8 warps
    # do not (fwd 64x64: 203 regs, dkdv 32x64: 232 regs). A starting point to refine on the GPU.
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4 if bm * bn <= 32 * 32 else 8, num_stages=2)
        for bm, bn in shapes
    ]


def _prune(configs, named_args, **kwargs):
    """Drop tiles much wider than the sequence and too-large tiles for wide heads."""
    L = named_args["L"]
    head_dim = kwargs.get("HEAD_DIM", named_args.get("HEAD_DIM", 64))
    cap = max(16, triton.next_power_of_2(L))
    kept = [
        c for c in configs
        if c.kwargs["BLOCK_M"] <= cap and c.kwargs["BLOCK_N"] <= cap
        and not (head_dim >= 128 and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] > 64 * 128)
    ]
    return kept or configs[:1]


#: the one config used when not autotuning: always under TRITON_INTERPRET=1 (the interpreter is
#: slow), and on a GPU with AMAD_TRITON_AUTOTUNE=0 (quick tests, debugging: no compile of every config)
FIXED_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 64}
AUTOTUNE = not INTERPRETED and os.environ.get("AMAD_TRITON_AUTOTUNE", "1") != "0"

_single_block = triton.heuristics({"SINGLE_BLOCK": lambda a: a["L"] <= a["BLOCK_N"]})


def _tuned(kernel, backward: bool):
    if not AUTOTUNE:
        return kernel
    return triton.autotune(configs=_configs(backward), key=_AUTOTUNE_KEY,
                           prune_configs_by={"early_config_prune": _prune})(kernel)


_fwd = _tuned(_single_block(_fwd_kernel), backward=False)
_bwd_dkdv = _tuned(_bwd_dkdv_kernel, backward=True)
_bwd_dq = _tuned(_bwd_dq_kernel, backward=True)
_bwd_delta = _tuned(_bwd_delta_kernel, backward=True)

#: δ_i = Σ_j P_ij dP_ij from the kernels' own recomputed tiles (one more pass over k, ~+20% backward
#: work) rather than dO·O + dkl·kl from the forward's outputs (FlashAttention-2's choice). Every row
#: of dA then sums to zero in the kernels' arithmetic; in peaked maps this makes dfreqs/dweights
#: ~4x more accurate. Set AMAD_TRITON_DELTA=forward (or this attribute) for the cheaper variant.
RECOMPUTE_DELTA = os.environ.get("AMAD_TRITON_DELTA", "recompute") != "forward"


def _launch_kwargs() -> dict:
    return {} if AUTOTUNE else dict(FIXED_CONFIG)


def _l_key(L: int) -> int:
    """Autotune bucket of the sequence length (powers of two)."""
    return triton.next_power_of_2(max(int(L), 1))


def _geometry(q: Tensor, freqs: Tensor):
    B, H, L, D = q.shape
    return B, H, L, D, freqs.shape[1], D // 2, max(16, D // 2)


def _strides(*tensors: Tensor):
    return [s for t in tensors for s in t.stride()]


def _empty(ref: Tensor) -> Tensor:
    return ref.new_empty((0,))


# ----------------------------------------------------------------------------------------------
# Custom ops (torch.library) with fake impls and autograd
# ----------------------------------------------------------------------------------------------

_FwdOut = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.library.custom_op("amad_fast::triton_automask_fwd", mutates_args=())
def automask_fwd_op(
    q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, weights: Tensor, lam: Tensor,
    scale: float, need_divergence: bool, store_branches: bool,
) -> _FwdOut:
    """Fused forward. freqs/weights/lam fp32. Returns (out, out_local, out_global, kl_local, kl_global,
    lse_local, lse_global); outputs not asked for are empty (0,) tensors."""
    B, H, L, D, S, P, PB = _geometry(q, freqs)
    freqs = freqs.contiguous()
    weights = weights.contiguous()
    lam = lam.contiguous()
    out = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    if store_branches:
        out_l, out_g = torch.empty_like(out), torch.empty_like(out)
    else:
        out_l = out_g = out  # never written (STORE_BRANCHES=False); replaced by empties below
    row = lambda: torch.empty((B, H, L), dtype=torch.float32, device=q.device)  # noqa: E731
    lse_l = torch.empty((B, H, L), dtype=torch.float64, device=q.device)
    lse_g = torch.empty_like(lse_l)
    kl_l, kl_g = (row(), row()) if need_divergence else (lse_l, lse_g)  # unused pointers if no KL
    grid = lambda meta: (B * H, triton.cdiv(L, meta["BLOCK_M"]))  # noqa: E731
    _fwd[grid](
        q, k, v, freqs, weights, lam, out, out_l, out_g, kl_l, kl_g, lse_l, lse_g,
        *_strides(q, k, v), H, L, _l_key(L), scale,
        HEAD_DIM=D, P=P, PB=PB, S=S, NEED_KL=need_divergence, STORE_BRANCHES=store_branches,
        **_launch_kwargs(),
    )
    if not store_branches:
        out_l, out_g = _empty(out), _empty(out)
    if not need_divergence:
        kl_l, kl_g = _empty(out).float(), _empty(out).float()
    return out, out_l, out_g, kl_l, kl_g, lse_l, lse_g


@automask_fwd_op.register_fake
def _(q, k, v, freqs, weights, lam, scale, need_divergence, store_branches):
    B, H, L, D = q.shape
    out = q.new_empty((B, H, L, D))
    row = q.new_empty((B, H, L), dtype=torch.float32)
    none_o, none_r = q.new_empty((0,)), q.new_empty((0,), dtype=torch.float32)
    br = (q.new_empty((B, H, L, D)), q.new_empty((B, H, L, D))) if store_branches else (none_o, q.new_empty((0,)))
    kl = (row.new_empty((B, H, L)), row.new_empty((B, H, L))) if need_divergence else (none_r, row.new_empty((0,)))
    lse = q.new_empty((B, H, L), dtype=torch.float64)
    return out, br[0], br[1], kl[0], kl[1], lse, lse.new_empty((B, H, L))


_BwdOut = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def modulation_backward(freqs: Tensor, weights: Tensor, dc: Tensor, ds: Tensor) -> Tuple[Tensor, Tensor]:
    """dfreqs (H, S, P), dweights (H, S) from dc, ds (H, L, P), all fp32.

    c_{i,p} = Σ_s w_s cos(θ_{s,p} i), s_{i,p} = Σ_s w_s sin(θ_{s,p} i) give
    dw_s = Σ_{i,p} dc cos(θ i) + ds sin(θ i) and dθ_{s,p} = w_s Σ_i i (ds cos(θ i) − dc sin(θ i)).
    Written out (not autograd) so that the op's backward traces under torch.compile; one scale at
    a time keeps the memory at (H, L, P).
    """
    H, S, P = freqs.shape
    L = dc.shape[1]
    pos = torch.arange(L, device=freqs.device, dtype=torch.float32)[None, :, None]
    # These are sums of B·L·P terms that largely cancel: accumulate them in float64 (tiny tensors).
    dc, ds, weights = dc.double(), ds.double(), weights.double()
    dfreqs, dweights = [], []
    for s in range(S):
        ang = (freqs[:, s, None, :] * pos).double()  # (H, L, P): the angle the kernels use, in fp32
        cos, sin = torch.cos(ang), torch.sin(ang)
        dweights.append((dc * cos + ds * sin).sum((1, 2)))
        dfreqs.append(weights[:, s, None] * (pos * (ds * cos - dc * sin)).sum(1))
    return torch.stack(dfreqs, 1).float(), torch.stack(dweights, 1).float()


@torch.library.custom_op("amad_fast::triton_automask_bwd", mutates_args=())
def automask_bwd_op(
    dout: Optional[Tensor], d_out_local: Optional[Tensor], d_out_global: Optional[Tensor],
    d_kl_local: Optional[Tensor], d_kl_global: Optional[Tensor],
    q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, weights: Tensor, lam: Tensor,
    out_local: Tensor, out_global: Tensor, kl_local: Tensor, kl_global: Tensor,
    lse_local: Tensor, lse_global: Tensor, scale: float,
) -> _BwdOut:
    """Fused backward: (dq, dk, dv, dfreqs, dweights, dlam); the anchor M is a constant."""
    B, H, L, D, S, P, PB = _geometry(q, freqs)
    f32 = torch.float32
    lam_b = lam.to(f32)[None, :, None, None]
    o_l, o_g = out_local.to(f32), out_global.to(f32)
    zero = q.new_zeros((), dtype=f32)
    g_out = dout.to(f32) if _present(dout) else zero
    dom = lam_b * g_out + (d_out_local.to(f32) if _present(d_out_local) else zero)
    dog = (1.0 - lam_b) * g_out + (d_out_global.to(f32) if _present(d_out_global) else zero)
    dom = dom.expand(B, H, L, D)
    dog = dog.expand(B, H, L, D)
    has_kl = kl_local.numel() > 0 and (_present(d_kl_local) or _present(d_kl_global))
    if RECOMPUTE_DELTA:
        delta_l = torch.empty((B, H, L), dtype=f32, device=q.device)  # written by _bwd_delta
        delta_g = torch.empty_like(delta_l)
    else:
        delta_l = (dom * o_l).sum(-1)
        delta_g = (dog * o_g).sum(-1)
    if has_kl:
        dkl_l = (d_kl_local.to(f32) if _present(d_kl_local) else zero).expand(B, H, L).contiguous()
        dkl_g = (d_kl_global.to(f32) if _present(d_kl_global) else zero).expand(B, H, L).contiguous()
        if not RECOMPUTE_DELTA:
            delta_l = delta_l + dkl_l * kl_local
            delta_g = delta_g + dkl_g * kl_global
    else:
        dkl_l = dkl_g = delta_l  # never read (HAS_KL=False)
    dlam = (g_out * (o_l - o_g)).sum((0, 2, 3)) if _present(dout) else lam.new_zeros(H, dtype=f32)
    # dO^M, dO^G travel in the input dtype (tensor-core operands); δ stays fp32.
    dom = dom.to(q.dtype).contiguous()
    dog = dog.to(q.dtype).contiguous()
    delta_l, delta_g = delta_l.contiguous(), delta_g.contiguous()
    lse_local, lse_global = lse_local.contiguous(), lse_global.contiguous()
    freqs_c, weights_c = freqs.contiguous(), weights.contiguous()

    dq = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    dk = torch.empty((B, H, L, D), dtype=k.dtype, device=q.device)
    dv = torch.empty((B, H, L, D), dtype=v.dtype, device=q.device)
    dcs = torch.empty((4, B, H, L, P), dtype=f32, device=q.device)
    common = dict(HEAD_DIM=D, P=P, PB=PB, S=S, HAS_KL=has_kl, **_launch_kwargs())
    args_in = (q, k, v, freqs_c, weights_c, dom, dog, lse_local, lse_global, delta_l, delta_g, dkl_l, dkl_g)
    tail = (*_strides(q, k, v), H, L, _l_key(L), scale)
    if RECOMPUTE_DELTA:
        _bwd_delta[lambda meta: (B * H, triton.cdiv(L, meta["BLOCK_M"]))](*args_in, *tail, **common)
    _bwd_dkdv[lambda meta: (B * H, triton.cdiv(L, meta["BLOCK_N"]))](
        *args_in, dk, dv, dcs[0], dcs[1], *tail, **common)
    _bwd_dq[lambda meta: (B * H, triton.cdiv(L, meta["BLOCK_M"]))](
        *args_in, dq, dcs[2], dcs[3], *tail, **common)
    dc = (dcs[0].double() + dcs[2]).sum(0)
    ds = (dcs[1].double() + dcs[3]).sum(0)
    dfreqs, dweights = modulation_backward(freqs.to(f32), weights.to(f32), dc, ds)
    return dq, dk, dv, dfreqs.to(freqs.dtype), dweights.to(weights.dtype), dlam.to(lam.dtype)


@automask_bwd_op.register_fake
def _(dout, d_out_local, d_out_global, d_kl_local, d_kl_global, q, k, v, freqs, weights, lam,
      out_local, out_global, kl_local, kl_global, lse_local, lse_global, scale):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format),
            torch.empty_like(freqs), torch.empty_like(weights), torch.empty_like(lam))


def _present(t: Optional[Tensor]) -> bool:
    return t is not None and t.numel() > 0


def _setup_context(ctx, inputs, output):
    q, k, v, freqs, weights, lam, scale, need_divergence, store_branches = inputs
    out, out_l, out_g, kl_l, kl_g, lse_l, lse_g = output
    ctx.scale = scale
    ctx.store_branches = store_branches
    ctx.save_for_backward(q, k, v, freqs, weights, lam, out_l, out_g, kl_l, kl_g, lse_l, lse_g)


def _backward(ctx, dout, d_out_l, d_out_g, d_kl_l, d_kl_g, _d_lse_l, _d_lse_g):
    if not ctx.store_branches:
        raise RuntimeError(
            "amad_fast triton backward: the forward ran without saving the branch outputs "
            "(store_branches=False); call it with store_branches=True when gradients are needed"
        )
    q, k, v, freqs, weights, lam, out_l, out_g, kl_l, kl_g, lse_l, lse_g = ctx.saved_tensors
    dq, dk, dv, dfreqs, dweights, dlam = automask_bwd_op(
        dout, d_out_l, d_out_g, d_kl_l, d_kl_g, q, k, v, freqs, weights, lam,
        out_l, out_g, kl_l, kl_g, lse_l, lse_g, ctx.scale)
    return dq, dk, dv, dfreqs, dweights, dlam, None, None, None


automask_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def automask_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, weights: Tensor, mix: Tensor,
    scale: float, need_divergence: bool, need_branches: bool,
):
    """Spec §1 through the fused kernels; inputs already validated (see amad_fast.attention.validation).

    Parameters are used in fp32 (their gradients come back in their own dtype through autograd);
    the branch outputs are stored whenever a gradient may be needed, since the backward uses them.
    """
    from amad_fast.attention.result import AutoMaskResult

    lam = torch.sigmoid(mix.to(torch.float32))
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, freqs, weights, mix))
    out, out_l, out_g, kl_l, kl_g, _, _ = automask_fwd_op(
        q, k, v, freqs.to(torch.float32), weights.to(torch.float32), lam,
        float(scale), bool(need_divergence), bool(need_branches or needs_grad))
    if need_divergence:
        kl_l, kl_g = kl_l.to(q.dtype), kl_g.to(q.dtype)
    else:
        kl_l = kl_g = None
    if not need_branches:
        out_l = out_g = None
    return AutoMaskResult(out, kl_l, kl_g, out_l, out_g)


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile check (no GPU needed)
# ----------------------------------------------------------------------------------------------


def aot_compile(arch: int = 90, dtype: str = "fp16", head_dim: int = 64, scales: int = 2,
                block_m: int = 32, block_n: int = 64, num_warps: int = 4, only: Optional[str] = None) -> dict:
    """Compile every kernel variant for an NVIDIA target (sm_``arch``) through ptxas, without a GPU.

    Catches what the interpreter cannot (tl.dot shape/dtype rules, constexpr and loop-carried
    types, register spills). Needs a process where Triton is *not* interpreted. Returns
    {variant: resource usage}, e.g. "REG:96 STACK:0 SHARED:0 LOCAL:0" from cuobjdump when Triton
    ships it (STACK > 32 or so means register spills), else the cubin size. ``only`` keeps the
    variants whose name starts with it ("fwd", "dq", "dkdv", "delta").
    """
    if INTERPRETED:
        raise RuntimeError("aot_compile: Triton was imported with TRITON_INTERPRET=1; run it in a fresh process")
    from triton.backends.compiler import GPUTarget

    target = GPUTarget("cuda", arch, 32)
    ptr = {n: f"*{dtype}" for n in ("Q", "K", "V", "OUT", "OUT_L", "OUT_G", "DOM", "DOG", "DQ", "DK", "DV")}
    ptr.update({n: "*fp32" for n in ("FREQS", "WEIGHTS", "LAM", "KL_L", "KL_G", "DELTA_L", "DELTA_G",
                                     "DKL_L", "DKL_G", "DC", "DS")})
    ptr.update({"LSE_L": "*fp64", "LSE_G": "*fp64"})
    shape = dict(HEAD_DIM=head_dim, P=head_dim // 2, PB=max(16, head_dim // 2), S=scales,
                 BLOCK_M=block_m, BLOCK_N=block_n)
    variants = {f"fwd single={sb} kl={kl}": (_fwd_kernel, dict(NEED_KL=kl, STORE_BRANCHES=True, SINGLE_BLOCK=sb))
                for sb in (True, False) for kl in (True, False)}
    for name, fn in (("delta", _bwd_delta_kernel), ("dkdv", _bwd_dkdv_kernel), ("dq", _bwd_dq_kernel)):
        for kl in (True, False):
            variants[f"{name} kl={kl}"] = (fn, dict(HAS_KL=kl))
    out = {}
    for name, (fn, extra) in variants.items():
        if only is not None and not name.startswith(only):
            continue
        consts = {**shape, **extra}
        sig = {a: "constexpr" if a in consts else ptr.get(a, "fp32" if a == "scale" else "i32") for a in fn.arg_names}
        kernel = triton.compile(triton.compiler.ASTSource(fn, sig, constexprs=consts), target=target,
                                options={"num_warps": num_warps, "num_stages": 2})
        out[name] = _resource_usage(kernel.asm["cubin"])
    return out


def _resource_usage(cubin: bytes) -> str:
    import re
    import subprocess
    import tempfile

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return f"cubin {len(cubin)} bytes"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:\d+ STACK:\d+ SHARED:\d+ LOCAL:\d+", text)
    return m.group(0) if m else f"cubin {len(cubin)} bytes"
