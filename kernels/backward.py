"""The backward kernels of AutoMask attention (spec §1): FlashAttention-2-style recomputation.

``delta_kernel`` (one program per query block) sums δ_i = Σ_j P_ij dP_ij from recomputed tiles;
``dkdv_kernel`` (one per key block) writes dk, dv and the (dc, ds) terms at key positions;
``dq_kernel`` (one per query block) writes dq and (dc, ds) at query positions. No atomics: every
output element has one writer, so the backward is deterministic. The anchor M is a constant.

Masks are the forward's predicates and bias (:func:`.tiles.keys_allowed`); under IS_CAUSAL the query-block
kernels stop at the block's last row and ``dkdv_kernel`` starts at the first query block that can
see its keys, so fully masked tiles are skipped. Masked entries get zero probability and zero
score gradient, so a row with no allowed key has zero gradients.
"""
import triton
import triton.language as tl

from .tiles import (causal_key_end, dot, keys_allowed, kv_block, load_rows, log_probs_and_integrands, modulation,
                    rotated, scores, store_halves)


@triton.jit
def _probs_and_dp(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                  hi_l, lo_l, hi_g, lo_g, dkl_l, dkl_g, scale, bias,
                  HAS_KL: tl.constexpr, DT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Recompute P^M, P^G on an [M, N] tile (the forward's scores, ``bias`` included) and dL/dP
    (+ the KL integrand terms): dP^M_ij = dO^M_i·v_j + dkl_local_i·g^M_ij, likewise dP^G. Entries
    outside the valid tile are garbage."""
    a, g = scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, bias, DT, HAS_BIAS)
    pm, pg, gm, gg = log_probs_and_integrands(a, g, hi_l, lo_l, hi_g, lo_g)
    dpm = dot(dom, tl.trans(v), DT)
    dpg = dot(dog, tl.trans(v), DT)
    if HAS_KL:
        dpm += dkl_l[:, None] * gm
        dpg += dkl_g[:, None] * gg
    return pm, pg, dpm, dpg


@triton.jit
def _bwd_tile(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
              hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g, mask, scale, bias,
              HAS_KL: tl.constexpr, DT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """P^M, P^G and the score gradients dA = P^M (dP^M − δ^M), dG likewise (anchor M constant);
    zero outside ``mask``."""
    pm, pg, dpm, dpg = _probs_and_dp(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                                     hi_l, lo_l, hi_g, lo_g, dkl_l, dkl_g, scale, bias, HAS_KL, DT, HAS_BIAS)
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
def delta_kernel(
    Q, K, V, FREQS, WEIGHTS, KPM, BIAS, DOM, DOG, LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    sab, H, L, L_KEY, scale,
    HEAD_DIM: tl.constexpr, P: tl.constexpr, PB: tl.constexpr, S: tl.constexpr, HAS_KL: tl.constexpr,
    HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr,
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
    bias_base = bh * sab
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

    q1, q2, qm1, qm2, _c, _s = rotated(Q + b * sqb + h * sqh, sql, sqd, offs_m, m_mask, offs_p, p_mask,
                                       fr, wt, P, S)
    o_off = row[:, None] * HEAD_DIM + offs_d[None, :]
    dom = tl.load(DOM + o_off, mask=m_mask[:, None], other=0.0)
    dog = tl.load(DOG + o_off, mask=m_mask[:, None], other=0.0)
    hi_l, lo_l, hi_g, lo_g, _dl, _dg, dkl_l, dkl_g = _row_stats(
        LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G, row, m_mask, HAS_KL)
    delta_l = tl.zeros([BLOCK_M], tl.float32)
    delta_g = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, causal_key_end(pid_m * BLOCK_M, L, BLOCK_M, IS_CAUSAL), BLOCK_N):
        k1, k2, km1, km2, v, n_mask = kv_block(k_base, v_base, skl, skd, svl, svd, start_n, offs_n0, L,
                                               offs_p, p_mask, offs_d, fr, wt, P, S)
        allowed, bias = keys_allowed(KPM, BIAS, b, bias_base, L, offs_m, start_n + offs_n0, n_mask,
                                     HAS_KPM, IS_CAUSAL, HAS_BIAS)
        pm, pg, dpm, dpg = _probs_and_dp(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                                         hi_l, lo_l, hi_g, lo_g, dkl_l, dkl_g, scale, bias, HAS_KL, DT, HAS_BIAS)
        mask = m_mask[:, None] & allowed
        delta_l += tl.sum(tl.where(mask, pm * dpm, 0.0), 1)
        delta_g += tl.sum(tl.where(mask, pg * dpg, 0.0), 1)
    tl.store(DELTA_L + row, delta_l, mask=m_mask)
    tl.store(DELTA_G + row, delta_g, mask=m_mask)


@triton.jit
def dkdv_kernel(
    Q, K, V, FREQS, WEIGHTS, KPM, BIAS, DOM, DOG, LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G,
    DK, DV, DC, DS,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    sab, H, L, L_KEY, scale,
    HEAD_DIM: tl.constexpr, P: tl.constexpr, PB: tl.constexpr, S: tl.constexpr, HAS_KL: tl.constexpr,
    HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per key block: dk, dv and dc/ds at the key positions, looping over query blocks."""
    DT = Q.dtype.element_ty
    pid_n = tl.program_id(1)
    bh = tl.program_id(0).to(tl.int64)  # B·H on axis 0: axis 1 is limited to 65535
    b = bh // H
    h = bh % H
    bias_base = bh * sab
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_p = tl.arange(0, PB)
    offs_d = tl.arange(0, HEAD_DIM)
    p_mask = offs_p < P
    n_mask = offs_n < L
    fr = FREQS + h * (S * P)
    wt = WEIGHTS + h * S
    q_base = Q + b * sqb + h * sqh

    k1, k2, km1, km2, _ck, _sk = rotated(K + b * skb + h * skh, skl, skd, offs_n, n_mask, offs_p, p_mask,
                                        fr, wt, P, S)
    v = load_rows(V + b * svb + h * svh, svl, svd, offs_n, n_mask, offs_d)

    dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
    dkm1 = tl.zeros([BLOCK_N, PB], tl.float32)
    dkm2 = tl.zeros([BLOCK_N, PB], tl.float32)
    dk1 = tl.zeros([BLOCK_N, PB], tl.float32)
    dk2 = tl.zeros([BLOCK_N, PB], tl.float32)
    # under IS_CAUSAL, query rows before this key block's first key see none of it
    if IS_CAUSAL:
        first_m = (pid_n * BLOCK_N // BLOCK_M) * BLOCK_M
    else:
        first_m = 0
    for start_m in range(first_m, L, BLOCK_M):
        offs_m = start_m + offs_m0
        m_mask = offs_m < L
        row = bh * L + offs_m
        q1, q2, qm1, qm2, _c, _s = rotated(q_base, sql, sqd, offs_m, m_mask, offs_p, p_mask, fr, wt, P, S)
        o_off = row[:, None] * HEAD_DIM + offs_d[None, :]
        dom = tl.load(DOM + o_off, mask=m_mask[:, None], other=0.0)
        dog = tl.load(DOG + o_off, mask=m_mask[:, None], other=0.0)
        hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g = _row_stats(
            LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G, row, m_mask, HAS_KL)
        allowed, bias = keys_allowed(KPM, BIAS, b, bias_base, L, offs_m, offs_n, n_mask,
                                     HAS_KPM, IS_CAUSAL, HAS_BIAS)
        pm, pg, da, dg = _bwd_tile(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                                   hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g,
                                   m_mask[:, None] & allowed, scale, bias, HAS_KL, DT, HAS_BIAS)
        dv += dot(tl.trans(pm), dom, DT) + dot(tl.trans(pg), dog, DT)
        da_t = tl.trans(da)
        dg_t = tl.trans(dg)
        dkm1 += dot(da_t, qm1, DT)
        dkm2 += dot(da_t, qm2, DT)
        dk1 += dot(dg_t, q1, DT)
        dk2 += dot(dg_t, q2, DT)

    ck, sk = modulation(offs_n, offs_p, p_mask, fr, wt, P, S)  # recomputed: not held through the loop
    g1, g2, dc, ds = _unrotate(k1, k2, dkm1, dkm2, dk1, dk2, ck, sk, scale)
    krow = bh * L + offs_n
    store_halves(DK + bh * L * HEAD_DIM, HEAD_DIM, offs_n, n_mask, offs_p, p_mask, g1, g2, P)
    tl.store(DV + krow[:, None] * HEAD_DIM + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=n_mask[:, None])
    cs_off = krow[:, None] * P + offs_p[None, :]
    cs_mask = n_mask[:, None] & p_mask[None, :]
    tl.store(DC + cs_off, dc, mask=cs_mask)
    tl.store(DS + cs_off, ds, mask=cs_mask)


@triton.jit
def dq_kernel(
    Q, K, V, FREQS, WEIGHTS, KPM, BIAS, DOM, DOG, LSE_L, LSE_G, DELTA_L, DELTA_G, DKL_L, DKL_G,
    DQ, DC, DS,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    sab, H, L, L_KEY, scale,
    HEAD_DIM: tl.constexpr, P: tl.constexpr, PB: tl.constexpr, S: tl.constexpr, HAS_KL: tl.constexpr,
    HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program per query block: dq and dc/ds at the query positions, looping over key blocks."""
    DT = Q.dtype.element_ty
    pid_m = tl.program_id(1)
    bh = tl.program_id(0).to(tl.int64)  # B·H on axis 0: axis 1 is limited to 65535
    b = bh // H
    h = bh % H
    bias_base = bh * sab
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

    q1, q2, qm1, qm2, _c, _s = rotated(Q + b * sqb + h * sqh, sql, sqd, offs_m, m_mask, offs_p, p_mask,
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
    for start_n in range(0, causal_key_end(pid_m * BLOCK_M, L, BLOCK_M, IS_CAUSAL), BLOCK_N):
        k1, k2, km1, km2, v, n_mask = kv_block(k_base, v_base, skl, skd, svl, svd, start_n, offs_n0, L,
                                               offs_p, p_mask, offs_d, fr, wt, P, S)
        allowed, bias = keys_allowed(KPM, BIAS, b, bias_base, L, offs_m, start_n + offs_n0, n_mask,
                                     HAS_KPM, IS_CAUSAL, HAS_BIAS)
        pm, pg, da, dg = _bwd_tile(q1, q2, qm1, qm2, k1, k2, km1, km2, v, dom, dog,
                                   hi_l, lo_l, hi_g, lo_g, delta_l, delta_g, dkl_l, dkl_g,
                                   m_mask[:, None] & allowed, scale, bias, HAS_KL, DT, HAS_BIAS)
        dqm1 += dot(da, km1, DT)
        dqm2 += dot(da, km2, DT)
        dq1 += dot(dg, k1, DT)
        dq2 += dot(dg, k2, DT)

    cq, sq = modulation(offs_m, offs_p, p_mask, fr, wt, P, S)  # recomputed: not held through the loop
    g1, g2, dc, ds = _unrotate(q1, q2, dqm1, dqm2, dq1, dq2, cq, sq, scale)
    store_halves(DQ + bh * L * HEAD_DIM, HEAD_DIM, offs_m, m_mask, offs_p, p_mask, g1, g2, P)
    cs_off = row[:, None] * P + offs_p[None, :]
    cs_mask = m_mask[:, None] & p_mask[None, :]
    tl.store(DC + cs_off, dc, mask=cs_mask)
    tl.store(DS + cs_off, ds, mask=cs_mask)
