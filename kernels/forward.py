"""The forward kernel of AutoMask attention (spec §1): one program per (b·h, block of query rows).

It computes the modulation and rotation of its q rows and of every key block in registers, both
score maps, both softmaxes online in fp32, the branch outputs O^M = P^M v and O^G = P^G v,
out = λ O^M + (1 − λ) O^G and, with NEED_KL, the per-row divergences kl_local, kl_global: in the
same pass when L fits one key block (SINGLE_BLOCK), else in a second pass over k with the final
log-sum-exps. It stores both rows' lse in float64 for the backward.

Masks are predicates on the key index (:func:`.tiles.keys_allowed`): HAS_KPM reads the (B, L)
key padding vector, IS_CAUSAL compares positions and stops the key loops after the block's last
row (fully masked key tiles are never visited), HAS_BIAS reads the attn_mask's additive (L, L)
bias tile of this b·h (``sab`` its stride, 0 when one mask serves every b·h), added to both maps'
scores, its −inf entries blocked keys. A row with no allowed key stores zeros for its
outputs and kl terms, and lse 0 (every entry of it is masked again in the backward).
"""
import triton
import triton.language as tl

from .tiles import (causal_key_end, keys_allowed, kv_block, log_probs_and_integrands, online_update, rotated,
                    scores)


@triton.jit
def forward_kernel(
    Q, K, V, FREQS, WEIGHTS, LAM, KPM, BIAS,
    OUT, OUT_L, OUT_G, KL_L, KL_G, LSE_L, LSE_G,
    sqb, sqh, sql, sqd, skb, skh, skl, skd, svb, svh, svl, svd,
    sab, H, L, L_KEY, scale,
    HEAD_DIM: tl.constexpr, P: tl.constexpr, PB: tl.constexpr, S: tl.constexpr,
    NEED_KL: tl.constexpr, STORE_BRANCHES: tl.constexpr, HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
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
    bias_base = bh * sab

    q1, q2, qm1, qm2, _c, _s = rotated(Q + b * sqb + h * sqh, sql, sqd, offs_m, m_mask, offs_p, p_mask,
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
        k1, k2, km1, km2, v, n_mask = kv_block(k_base, v_base, skl, skd, svl, svd, 0, offs_n0, L,
                                               offs_p, p_mask, offs_d, fr, wt, P, S)
        allowed, bias = keys_allowed(KPM, BIAS, b, bias_base, L, offs_m, offs_n0, n_mask,
                                     HAS_KPM, IS_CAUSAL, HAS_BIAS)
        a, g = scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, bias, DT, HAS_BIAS)
        m_l, l_l, acc_l = online_update(tl.where(allowed, a, float("-inf")), m_l, l_l, acc_l, v, DT)
        m_g, l_g, acc_g = online_update(tl.where(allowed, g, float("-inf")), m_g, l_g, acc_g, v, DT)
        r_l = tl.log(l_l)
        r_g = tl.log(l_g)
        if NEED_KL:
            # a, g are unmasked here (finite): masked keys are dropped by the where below.
            pm, pg, gm, gg = log_probs_and_integrands(a, g, m_l, r_l, m_g, r_g)
            kl_l = tl.sum(tl.where(allowed, pm * gm, 0.0), 1)
            kl_g = tl.sum(tl.where(allowed, pg * gg, 0.0), 1)
    else:
        key_end = causal_key_end(pid_m * BLOCK_M, L, BLOCK_M, IS_CAUSAL)
        for start_n in range(0, key_end, BLOCK_N):
            k1, k2, km1, km2, v, n_mask = kv_block(k_base, v_base, skl, skd, svl, svd, start_n, offs_n0, L,
                                                   offs_p, p_mask, offs_d, fr, wt, P, S)
            allowed, bias = keys_allowed(KPM, BIAS, b, bias_base, L, offs_m, start_n + offs_n0, n_mask,
                                         HAS_KPM, IS_CAUSAL, HAS_BIAS)
            a, g = scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, bias, DT, HAS_BIAS)
            a = tl.where(allowed, a, float("-inf"))
            g = tl.where(allowed, g, float("-inf"))
            m_l, l_l, acc_l = online_update(a, m_l, l_l, acc_l, v, DT)
            m_g, l_g, acc_g = online_update(g, m_g, l_g, acc_g, v, DT)
        r_l = tl.log(l_l)
        r_g = tl.log(l_g)
        if NEED_KL:
            # Second pass over k with the final lse's (the divergence needs normalised maps).
            for start_n in range(0, key_end, BLOCK_N):
                offs_n = start_n + offs_n0
                n_mask = offs_n < L
                k1, k2, km1, km2, _c2, _s2 = rotated(k_base, skl, skd, offs_n, n_mask, offs_p, p_mask,
                                                     fr, wt, P, S)
                allowed, bias = keys_allowed(KPM, BIAS, b, bias_base, L, offs_m, offs_n, n_mask,
                                             HAS_KPM, IS_CAUSAL, HAS_BIAS)
                a, g = scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, bias, DT, HAS_BIAS)
                pm, pg, gm, gg = log_probs_and_integrands(a, g, m_l, r_l, m_g, r_g)
                kl_l += tl.sum(tl.where(allowed, pm * gm, 0.0), 1)
                kl_g += tl.sum(tl.where(allowed, pg * gg, 0.0), 1)

    lam = tl.load(LAM + h)
    # a row with no allowed key has l = 0 and acc = 0: its outputs are 0, not 0/0
    has_keys = l_l > 0.0
    o_l = acc_l / tl.where(has_keys, l_l, 1.0)[:, None]
    o_g = acc_g / tl.where(has_keys, l_g, 1.0)[:, None]
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
    tl.store(LSE_L + row, tl.where(has_keys, m_l.to(tl.float64) + r_l.to(tl.float64), 0.0), mask=m_mask)
    tl.store(LSE_G + row, tl.where(has_keys, m_g.to(tl.float64) + r_g.to(tl.float64), 0.0), mask=m_mask)
