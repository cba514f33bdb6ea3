"""Plain-PyTorch AutoMask attention (spec §1): the source of truth every backend is tested against.

It materialises both L×L score maps, so it is simple rather than fast. Works for any float dtype
on any device and differentiates to all six inputs; the divergence anchor ``M`` is detached, as
the spec requires.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from amad_fast.attention.result import AutoMaskResult

__all__ = [
    "automask_attention_reference",
    "modulation_tables",
    "rotate_pairs",
    "default_freqs",
    "mixed_attention_weights",
    "blocked_keys",
]


def default_freqs(num_heads: int, num_scales: int, num_pairs: int, base: float = 10000.0) -> Tensor:
    """Spec initialisation θ_{s,p} = 2^{-s} · base^{-p/P}, shape (H, S, P), float32."""
    p = torch.arange(num_pairs, dtype=torch.float64)
    s = torch.arange(num_scales, dtype=torch.float64)
    theta = (2.0 ** -s)[:, None] * base ** (-p / num_pairs)[None, :]
    return theta.expand(num_heads, num_scales, num_pairs).clone().to(torch.float32)


def modulation_tables(freqs: Tensor, weights: Tensor, length: int) -> Tuple[Tensor, Tensor]:
    """Spec §1.1: c_{i,p} = Σ_s w_s cos(θ_{s,p} i) and s_{i,p} = Σ_s w_s sin(θ_{s,p} i).

    freqs (H, S, P), weights (H, S) → two (H, L, P) tensors in the dtype of ``freqs``.
    """
    pos = torch.arange(length, device=freqs.device, dtype=freqs.dtype)
    angle = freqs[:, :, None, :] * pos[None, None, :, None]  # (H, S, L, P)
    w = weights[:, :, None, None]
    return (w * torch.cos(angle)).sum(1), (w * torch.sin(angle)).sum(1)


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Spec §1.2, half-split pairing: element p pairs with element p + P.

    x (B, H, L, D); cos, sin (H, L, P) broadcast over the batch.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


def _score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference forms scores, softmaxes and divergences in: at least float32.

    float16 tops out at 65504, so q·k of 16-bit q and k × 100 (|score| ~ 1e5) would overflow to
    inf and the softmax to NaN; the kernels accumulate scores in float32 and stay finite.
    """
    return torch.promote_types(dtype, torch.float32)


def blocked_keys(
    batch: int, heads: int, length: int, device: torch.device,
    key_padding_mask: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """Which (query row, key) pairs the masks forbid, and the additive bias of a float attn_mask.

    Returns (blocked, bias): blocked a bool tensor broadcastable to (B, H, L, L), True where key j
    takes no part in row i (padding, j > i under ``is_causal``, a True or −inf attn_mask entry);
    bias the float attn_mask viewed as (L, L) or (B, H, L, L) (None unless one is given).
    (None, None) when nothing is masked.
    """
    blocked: Optional[Tensor] = None
    bias: Optional[Tensor] = None

    def union(more: Tensor) -> Tensor:
        return more if blocked is None else blocked | more

    if key_padding_mask is not None:
        blocked = union(key_padding_mask[:, None, None, :])
    if is_causal:
        blocked = union(torch.ones(length, length, dtype=torch.bool, device=device).triu(1))
    if attn_mask is not None:
        mask = attn_mask if attn_mask.dim() == 2 else attn_mask.view(batch, heads, length, length)
        if mask.dtype == torch.bool:
            blocked = union(mask)
        else:
            bias = mask
            blocked = union(mask == float("-inf"))
    return blocked, bias


def _masked_log_softmax(scores: Tensor, blocked: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
    """log_softmax over the allowed keys of each row; 0 (not −inf) at blocked entries and on rows
    with no allowed key, so every later product stays finite and its gradient too."""
    if blocked is None:
        return torch.log_softmax(scores, dim=-1)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    scores = scores.masked_fill(blocked, float("-inf"))
    empty_row = blocked.all(-1, keepdim=True)
    scores = scores.masked_fill(empty_row, 0.0)  # any finite row: its probabilities are zeroed below
    return torch.log_softmax(scores, dim=-1).masked_fill(blocked, 0.0)


def _probabilities(log_p: Tensor, blocked: Optional[Tensor]) -> Tensor:
    """exp(log P), exactly 0 at blocked entries (so a row with no allowed key is all zeros)."""
    p = log_p.exp()
    return p if blocked is None else p.masked_fill(blocked, 0.0)


def _log_probs(q: Tensor, k: Tensor, freqs: Tensor, weights: Tensor, scale: float,
               blocked: Optional[Tensor] = None, bias: Optional[Tensor] = None):
    """log P^M, log P^G in _score_dtype(q.dtype); q̃, k̃ are formed (rounded) in q's dtype first.

    With ``blocked`` (see :func:`blocked_keys`), both softmaxes run over the allowed keys only and
    the log-probabilities are 0 at the blocked entries (see :func:`_masked_log_softmax`).
    """
    # angles θ·i need at least float32 (bf16 would be off by ~0.4 rad at i = 100), then q's dtype
    table_dtype = torch.promote_types(torch.promote_types(freqs.dtype, q.dtype), torch.float32)
    cos, sin = modulation_tables(freqs.to(table_dtype), weights.to(table_dtype), q.shape[-2])
    cos, sin = cos.to(q.dtype), sin.to(q.dtype)
    q_mod, k_mod = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
    sd = _score_dtype(q.dtype)  # a no-op for float32/float64
    q_mod, k_mod, q_s, k_s = (x.to(sd) for x in (q_mod, k_mod, q, k))
    log_p_local = _masked_log_softmax(scale * (q_mod @ k_mod.transpose(-1, -2)), blocked, bias)
    log_p_global = _masked_log_softmax(scale * (q_s @ k_s.transpose(-1, -2)), blocked, bias)
    return log_p_local, log_p_global


def mixed_attention_weights(
    q: Tensor, k: Tensor, freqs: Tensor, weights: Tensor, mix: Tensor, scale: Optional[float] = None,
    key_padding_mask: Optional[Tensor] = None, attn_mask: Optional[Tensor] = None, is_causal: bool = False,
) -> Tensor:
    """The effective attention map λ·P^M + (1−λ)·P^G, (B, H, L, L); ``out`` equals it times v.

    Masked keys get weight 0; a row with no allowed key is all zeros."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    B, H, L, _ = q.shape
    blocked, bias = blocked_keys(B, H, L, q.device, key_padding_mask, attn_mask, is_causal)
    log_pl, log_pg = _log_probs(q, k, freqs, weights, scale, blocked, bias)
    lam = torch.sigmoid(mix.to(q.dtype))[:, None, None]
    p_local, p_global = _probabilities(log_pl, blocked), _probabilities(log_pg, blocked)
    return lam * p_local.to(q.dtype) + (1 - lam) * p_global.to(q.dtype)


def _nonnegative(kl: Tensor) -> Tensor:
    """kl clamped at 0 in value, with the gradient of kl itself (the kernels clamp the same way)."""
    return kl + (kl.clamp_min(0) - kl).detach()


def automask_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    freqs: Tensor,
    weights: Tensor,
    mix: Tensor,
    scale: Optional[float] = None,
    need_divergence: bool = False,
    need_branches: bool = False,
    dropout_p: float = 0.0,
    key_padding_mask: Optional[Tensor] = None,
    attn_mask: Optional[Tensor] = None,
    is_causal: bool = False,
) -> AutoMaskResult:
    """Spec §1 for one call. Shapes: q, k, v (B, H, L, D); freqs (H, S, D/2); weights (H, S); mix (H,).

    Precision: the modulation tables are computed in at least float32 (and the parameters'
    dtype), then cast to q's dtype, in which q̃ and k̃ are formed. The scores, both softmaxes
    and the divergence terms are computed in at least float32 (float32 for float16 and
    bfloat16 inputs, else q's dtype), as the kernels accumulate them in float32: 16-bit scores
    would overflow (float16 above 65504) where the kernels stay finite. The probabilities are then
    rounded to q's dtype to meet v, so ``out``, the branch outputs and the kl terms come back in
    q's dtype. A kl term is a KL divergence, so it is ≥ 0: its value is clamped at 0 (rounding
    can take a sum of terms of both signs a few ulp below 0 where P^M ≈ P^G), its gradient is
    that of the unclamped sum, as in the kernels. ``dropout_p`` drops attention
    probabilities of both maps before they meet v (as ``nn.MultiheadAttention`` does); the
    divergence terms always use the undropped maps.

    Masks (``key_padding_mask`` (B, L) bool, ``attn_mask`` (L, L) or (B·H, L, L) bool or additive
    float, ``is_causal``; True = not allowed, as in ``nn.MultiheadAttention``): a masked key takes
    part in neither map nor in the divergence (both softmaxes and both KL sums run over the
    allowed keys only); a float attn_mask is added to both maps' scaled scores. A query row with
    no allowed key gives zeros for its output, its branches and its kl terms, with zero (finite)
    gradients. Inputs are not validated here: go through :func:`amad_fast.automask_attention`
    for checked inputs.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    B, H, L, _ = q.shape
    blocked, bias = blocked_keys(B, H, L, q.device, key_padding_mask, attn_mask, is_causal)
    log_pl, log_pg = _log_probs(q, k, freqs, weights, scale, blocked, bias)
    p_local = _probabilities(log_pl, blocked).to(q.dtype)
    p_global = _probabilities(log_pg, blocked).to(q.dtype)
    if dropout_p > 0.0:
        p_local = torch.nn.functional.dropout(p_local, dropout_p)
        p_global = torch.nn.functional.dropout(p_global, dropout_p)
    out_local, out_global = p_local @ v, p_global @ v
    lam = torch.sigmoid(mix.to(q.dtype))[:, None, None]
    out = lam * out_local + (1 - lam) * out_global

    kl_local = kl_global = None
    if need_divergence:
        # log M = logaddexp(log P^M, log P^G) − log 2, held constant for gradients (spec §1.5).
        log_anchor = (torch.logaddexp(log_pl, log_pg) - math.log(2.0)).detach()
        # blocked entries: P = 0 and log P = 0 on both sides, so their terms are exactly 0
        kl_local = _nonnegative((_probabilities(log_pl, blocked) * (log_pl - log_anchor)).sum(-1)).to(q.dtype)
        kl_global = _nonnegative((_probabilities(log_pg, blocked) * (log_pg - log_anchor)).sum(-1)).to(q.dtype)
    if not need_branches:
        out_local = out_global = None
    return AutoMaskResult(out, kl_local, kl_global, out_local, out_global)
