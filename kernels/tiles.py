"""Device helpers shared by the forward and backward kernels of AutoMask attention (spec §1).

Each works on one tile of rows: the multi-frequency modulation (c, s) computed in registers, the
half-split rotation of q or k, both score maps, their log-probabilities and KL integrands, and one
online-softmax step. See :mod:`amad_fast.kernels.automask` for the numerics they implement.
"""
import triton
import triton.language as tl

LN2 = tl.constexpr(0.6931471805599453)
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def dot(a, b, DT: tl.constexpr):
    """a @ b with operands in the input dtype DT and fp32 accumulation (IEEE for fp32)."""
    return tl.dot(a.to(DT), b.to(DT), input_precision="ieee")


@triton.jit
def softplus(x):
    return tl.maximum(x, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def modulation(pos, offs_p, p_mask, fr_ptr, w_ptr, P: tl.constexpr, S: tl.constexpr):
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
def load_halves(base, stride_l, stride_d, pos, row_mask, offs_p, p_mask, P: tl.constexpr):
    """The two halves x[:, :P], x[:, P:] of rows ``pos`` as fp32 [len(pos), PB] tiles (zero-padded)."""
    ptr = base + pos[:, None] * stride_l + offs_p[None, :] * stride_d
    m = row_mask[:, None] & p_mask[None, :]
    x1 = tl.load(ptr, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(ptr + P * stride_d, mask=m, other=0.0).to(tl.float32)
    return x1, x2


@triton.jit
def load_rows(base, stride_l, stride_d, pos, row_mask, offs_d):
    ptr = base + pos[:, None] * stride_l + offs_d[None, :] * stride_d
    return tl.load(ptr, mask=row_mask[:, None], other=0.0)


@triton.jit
def store_halves(base, stride_l, pos, row_mask, offs_p, p_mask, x1, x2, P: tl.constexpr):
    ptr = base + pos[:, None] * stride_l + offs_p[None, :]
    m = row_mask[:, None] & p_mask[None, :]
    tl.store(ptr, x1.to(base.dtype.element_ty), mask=m)
    tl.store(ptr + P, x2.to(base.dtype.element_ty), mask=m)


@triton.jit
def rotated(base, stride_l, stride_d, pos, row_mask, offs_p, p_mask, fr_ptr, w_ptr,
             P: tl.constexpr, S: tl.constexpr):
    """Load rows ``pos`` of q or k and their AutoMask embedding (half-split rotation, spec §1.2).

    The rotation is done in fp32; the four tiles come back in the input dtype (they only feed
    tl.dot, which takes that dtype, and half-width tiles halve the registers held across loops).
    """
    x1, x2 = load_halves(base, stride_l, stride_d, pos, row_mask, offs_p, p_mask, P)
    c, s = modulation(pos, offs_p, p_mask, fr_ptr, w_ptr, P, S)
    DT = base.dtype.element_ty
    return x1.to(DT), x2.to(DT), (x1 * c - x2 * s).to(DT), (x1 * s + x2 * c).to(DT), c, s


@triton.jit
def scores(q1, q2, qm1, qm2, k1, k2, km1, km2, scale, bias, DT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Both score maps A (modulated) and G (plain), [M, N], in natural units like the reference:
    the scaled products plus, under HAS_BIAS, the attn_mask's additive ``bias`` tile (from
    :func:`keys_allowed`, finite). Every pass forms its scores here, so the backward's recomputed
    scores are the forward's."""
    a = dot(qm1, tl.trans(km1), DT) + dot(qm2, tl.trans(km2), DT)
    g = dot(q1, tl.trans(k1), DT) + dot(q2, tl.trans(k2), DT)
    if HAS_BIAS:
        return a * scale + bias, g * scale + bias
    else:
        return a * scale, g * scale


@triton.jit
def log_probs_and_integrands(a, g, hi_m, lo_m, hi_g, lo_g):
    """P^M, P^G and the KL integrands g^M = log P^M − log M, g^G = log P^G − log M.

    Each row's lse comes as hi + lo (hi ≈ the row max, lo the small rest): a − hi is near-exact
    for the dominant entries (as in log_softmax), so P keeps fp32 relative precision even when
    |A| is large; a single fp32 lse would put ulp(lse) (6e-5 at |A| ~ 1e3) on every P of the row,
    which the backward's δ does not see, and dfreqs/dweights (Σ dA·A) would amplify it.
    """
    la = (a - hi_m[:, None]) - lo_m[:, None]
    lg = (g - hi_g[:, None]) - lo_g[:, None]
    d = la - lg
    return tl.exp2(la * LOG2E), tl.exp2(lg * LOG2E), LN2 - softplus(-d), LN2 - softplus(d)


@triton.jit
def online_update(x, m, l, acc, v, DT: tl.constexpr):
    """One online-softmax step of a map with scores x against values v (running max m, sum l).

    A row whose keys so far are all masked (x and m all −inf) keeps m = −inf and l = 0: its
    exponents are taken against 0 instead of −inf, which would give NaN.
    """
    m_new = tl.maximum(m, tl.max(x, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2((m - m_ref) * LOG2E)
    p = tl.exp2((x - m_ref[:, None]) * LOG2E)
    l = l * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + dot(p, v, DT)
    return m_new, l, acc


@triton.jit
def keys_allowed(KPM, BIAS, b, bias_base, L, offs_m, offs_n, n_mask,
                 HAS_KPM: tl.constexpr, IS_CAUSAL: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Which keys take part, and the attn_mask's bias, on an [M, N] tile of query rows ``offs_m``
    and keys ``offs_n``.

    ``allowed`` [M, N] bool: j < L, not padding (KPM, the (B, L) key padding mask, nonzero =
    ignore), under IS_CAUSAL j ≤ i, and under HAS_BIAS a bias entry other than −inf. ``bias``: the
    tile of BIAS + ``bias_base`` (a contiguous (L, L) fp32 additive mask) with its −inf entries
    (and entries beyond L) read as 0, so the scores it is added to stay finite and blocked keys
    are dropped through ``allowed`` alone (−inf − (−inf) would give NaN); 0.0 without HAS_BIAS.
    """
    allowed = (offs_m[:, None] >= 0) & n_mask[None, :]
    if HAS_KPM:
        padded = tl.load(KPM + b * L + offs_n, mask=n_mask, other=1)
        allowed = allowed & (padded == 0)[None, :]
    if IS_CAUSAL:
        allowed = allowed & (offs_n[None, :] <= offs_m[:, None])
    if HAS_BIAS:
        in_tile = (offs_m < L)[:, None] & n_mask[None, :]
        bias = tl.load(BIAS + bias_base + offs_m[:, None] * L + offs_n[None, :], mask=in_tile, other=0.0)
        allowed = allowed & (bias != float("-inf"))
        bias = tl.where(bias == float("-inf"), 0.0, bias)
    else:
        bias = 0.0
    return allowed, bias


@triton.jit
def causal_key_end(start_m, L, BLOCK_M: tl.constexpr, IS_CAUSAL: tl.constexpr):
    """One past the last key a block of query rows from ``start_m`` may attend: L, or under
    IS_CAUSAL the block's last row + 1 (the key tiles after it are fully masked and skipped)."""
    if IS_CAUSAL:
        return tl.minimum(L, start_m + BLOCK_M)
    else:
        return L


@triton.jit
def kv_block(k_base, v_base, stride_kl, stride_kd, stride_vl, stride_vd, start_n, offs_n0, L,
              offs_p, p_mask, offs_d, fr_ptr, w_ptr, P: tl.constexpr, S: tl.constexpr):
    offs_n = start_n + offs_n0
    n_mask = offs_n < L
    k1, k2, km1, km2, _c, _s = rotated(k_base, stride_kl, stride_kd, offs_n, n_mask, offs_p, p_mask,
                                        fr_ptr, w_ptr, P, S)
    v = load_rows(v_base, stride_vl, stride_vd, offs_n, n_mask, offs_d)
    return k1, k2, km1, km2, v, n_mask


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------
