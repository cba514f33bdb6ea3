"""Fused Triton kernels of AutoMask attention (spec §1), forward and backward, as a torch custom op.

What: one forward kernel computes, for a block of query rows, the multi-frequency modulation
(c, s) in registers (for the q rows and for every k block: no (L, P) table is written), the
half-split rotation, both score maps A (modulated) and G (plain), both softmaxes online in fp32,
the two branch outputs O^M = P^M v and O^G = P^G v, out = λ O^M + (1 − λ) O^G, and, on request,
the per-row divergences kl_local / kl_global (in the same pass when L fits in one key block,
else a second pass over k with the final log-sum-exps; O(L) memory either way). It saves only
per-row stats (lse of both maps, float64: see tiles.log_probs_and_integrands) for the backward.

The backward is FlashAttention-2-style recomputation: a small pass over query blocks for the row
terms δ (see RECOMPUTE_DELTA), one kernel over key blocks (dk, dv and the dc/ds contributions at
key positions) and one over query blocks (dq and dc/ds at query positions); no atomics, so it is
deterministic. The tiny parameter gradients (dfreqs, dweights from dc/ds, dmix from the saved
branch outputs) are finished in torch.

Layout: :mod:`.tiles` (device helpers both directions share), :mod:`.forward` and
:mod:`.backward` (the kernels), :mod:`.launch` (autotuning, launch geometry, ahead-of-time
compile), :mod:`.limits` (what the kernels take, importable without Triton) and this module,
the op: launches, custom ops, autograd and :func:`automask_attention_triton`.

Contract: the op takes the raw mixup logit ``mix`` (H,), like the C++ op, and forms
λ = sigmoid(mix) itself; its backward returns dmix. Masks: an optional (B, L) bool
``key_padding_mask`` (True = ignore that key) and ``is_causal``, both applied inside the kernels
as predicates on the key index (no L×L tensor), and an optional ``attn_bias``, the attn_mask as
a float32 additive (1, L, L) or (B·H, L, L) tensor that the kernels read tile by tile and add to
both maps' scaled scores, in the forward and in every recomputation of the backward (−inf
entries are blocked keys; no gradient flows to it). A row with no allowed key gives zeros.

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
performance (the autotune configs in :mod:`.launch`, written for H100/H200) is untested in this session.
The module decides at import whether Triton runs interpreted (``TRITON_INTERPRET=1`` must be set
before the first ``import triton``); interpreted, or with ``AMAD_TRITON_AUTOTUNE=0``, it skips
autotuning and uses FIXED_CONFIG.
"""
import os
from typing import Optional, Tuple

import torch
import triton
from torch import Tensor

from .backward import delta_kernel, dkdv_kernel, dq_kernel
from .forward import forward_kernel
from .launch import INTERPRETED, geometry, launch_kwargs, length_bucket, strides, tuned, with_single_block

__all__ = [
    "automask_attention_triton",
    "INTERPRETED",
]

_fwd = tuned(with_single_block(forward_kernel), backward=False)
_bwd_dkdv = tuned(dkdv_kernel, backward=True)
_bwd_dq = tuned(dq_kernel, backward=True)
_bwd_delta = tuned(delta_kernel, backward=True)

#: δ_i = Σ_j P_ij dP_ij from the kernels' own recomputed tiles (one more pass over k, ~+20% backward
#: work) rather than dO·O + dkl·kl from the forward's outputs (FlashAttention-2's choice). Every row
#: of dA then sums to zero in the kernels' arithmetic; in peaked maps this makes dfreqs/dweights
#: ~4x more accurate. Set AMAD_TRITON_DELTA=forward (or this attribute) for the cheaper variant.
RECOMPUTE_DELTA = os.environ.get("AMAD_TRITON_DELTA", "recompute") != "forward"


def _empty(ref: Tensor) -> Tensor:
    return ref.new_empty((0,))


def _padding_vector(key_padding_mask: Optional[Tensor], ref: Tensor) -> Tensor:
    """The (B, L) key padding mask as contiguous bytes (nonzero = ignore) for the kernels' KPM
    pointer, or ``ref`` as a pointer never read (HAS_KPM=False)."""
    if key_padding_mask is None:
        return ref
    return key_padding_mask.contiguous().view(torch.uint8)


def _bias_args(attn_bias: Optional[Tensor], ref: Tensor) -> Tuple[Tensor, int]:
    """The kernels' BIAS pointer and its b·h stride ``sab``: the contiguous fp32 (1, L, L) or
    (B·H, L, L) additive mask with stride 0 or L·L (one (L, L) mask serves every b·h without a
    copy), or ``ref`` as a pointer never read (HAS_BIAS=False)."""
    if attn_bias is None:
        return ref, 0
    bias = attn_bias.to(torch.float32).contiguous()
    return bias, (0 if bias.shape[0] == 1 else bias.stride(0))


# ----------------------------------------------------------------------------------------------
# Custom ops (torch.library) with fake impls and autograd
# ----------------------------------------------------------------------------------------------

_FwdOut = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.library.custom_op("amad_fast::triton_automask_fwd", mutates_args=())
def automask_fwd_op(
    q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, weights: Tensor, mix: Tensor,
    scale: float, need_divergence: bool, store_branches: bool,
    key_padding_mask: Optional[Tensor] = None, is_causal: bool = False, attn_bias: Optional[Tensor] = None,
) -> _FwdOut:
    """Fused forward. freqs, weights and the raw mixup logit mix in fp32 (λ = sigmoid(mix) is formed
    here). Returns (out, out_local, out_global, kl_local, kl_global, lse_local, lse_global); outputs
    not asked for are empty (0,) tensors."""
    B, H, L, D, S, P, PB = geometry(q, freqs)
    freqs = freqs.contiguous()
    weights = weights.contiguous()
    lam = torch.sigmoid(mix).contiguous()
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
    bias, sab = _bias_args(attn_bias, q)
    _fwd[grid](
        q, k, v, freqs, weights, lam, _padding_vector(key_padding_mask, q), bias, out, out_l, out_g, kl_l, kl_g,
        lse_l, lse_g, *strides(q, k, v), sab, H, L, length_bucket(L), scale,
        HEAD_DIM=D, P=P, PB=PB, S=S, NEED_KL=need_divergence, STORE_BRANCHES=store_branches,
        HAS_KPM=key_padding_mask is not None, IS_CAUSAL=is_causal, HAS_BIAS=attn_bias is not None,
        **launch_kwargs(),
    )
    if not store_branches:
        out_l, out_g = _empty(out), _empty(out)
    if not need_divergence:
        kl_l, kl_g = _empty(out).float(), _empty(out).float()
    return out, out_l, out_g, kl_l, kl_g, lse_l, lse_g


@automask_fwd_op.register_fake
def _(q, k, v, freqs, weights, mix, scale, need_divergence, store_branches, key_padding_mask=None,
      is_causal=False, attn_bias=None):
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
    q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, weights: Tensor, mix: Tensor,
    out_local: Tensor, out_global: Tensor, kl_local: Tensor, kl_global: Tensor,
    lse_local: Tensor, lse_global: Tensor, scale: float,
    key_padding_mask: Optional[Tensor] = None, is_causal: bool = False, attn_bias: Optional[Tensor] = None,
) -> _BwdOut:
    """Fused backward: (dq, dk, dv, dfreqs, dweights, dmix); the anchor M is a constant."""
    B, H, L, D, S, P, PB = geometry(q, freqs)
    f32 = torch.float32
    lam = torch.sigmoid(mix.to(f32))
    lam_b = lam[None, :, None, None]
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
    dmix = dlam * (1.0 - lam) * lam  # dλ/dmix = λ(1 − λ), in the order torch's sigmoid backward uses
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
    common = dict(HEAD_DIM=D, P=P, PB=PB, S=S, HAS_KL=has_kl, HAS_KPM=key_padding_mask is not None,
                  IS_CAUSAL=is_causal, HAS_BIAS=attn_bias is not None, **launch_kwargs())
    bias, sab = _bias_args(attn_bias, q)
    args_in = (q, k, v, freqs_c, weights_c, _padding_vector(key_padding_mask, q), bias, dom, dog,
               lse_local, lse_global, delta_l, delta_g, dkl_l, dkl_g)
    tail = (*strides(q, k, v), sab, H, L, length_bucket(L), scale)
    if RECOMPUTE_DELTA:
        _bwd_delta[lambda meta: (B * H, triton.cdiv(L, meta["BLOCK_M"]))](*args_in, *tail, **common)
    _bwd_dkdv[lambda meta: (B * H, triton.cdiv(L, meta["BLOCK_N"]))](
        *args_in, dk, dv, dcs[0], dcs[1], *tail, **common)
    _bwd_dq[lambda meta: (B * H, triton.cdiv(L, meta["BLOCK_M"]))](
        *args_in, dq, dcs[2], dcs[3], *tail, **common)
    dc = (dcs[0].double() + dcs[2]).sum(0)
    ds = (dcs[1].double() + dcs[3]).sum(0)
    dfreqs, dweights = modulation_backward(freqs.to(f32), weights.to(f32), dc, ds)
    return dq, dk, dv, dfreqs.to(freqs.dtype), dweights.to(weights.dtype), dmix.to(mix.dtype)


@automask_bwd_op.register_fake
def _(dout, d_out_local, d_out_global, d_kl_local, d_kl_global, q, k, v, freqs, weights, mix,
      out_local, out_global, kl_local, kl_global, lse_local, lse_global, scale, key_padding_mask=None,
      is_causal=False, attn_bias=None):
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format),
            torch.empty_like(v, memory_format=torch.contiguous_format),
            torch.empty_like(freqs), torch.empty_like(weights), torch.empty_like(mix))


def _present(t: Optional[Tensor]) -> bool:
    return t is not None and t.numel() > 0


def _setup_context(ctx, inputs, output):
    (q, k, v, freqs, weights, mix, scale, need_divergence, store_branches, key_padding_mask, is_causal,
     attn_bias) = inputs
    out, out_l, out_g, kl_l, kl_g, lse_l, lse_g = output
    ctx.scale = scale
    ctx.store_branches = store_branches
    ctx.is_causal = bool(is_causal)
    ctx.has_padding = key_padding_mask is not None
    ctx.has_bias = attn_bias is not None
    padding = (key_padding_mask,) if ctx.has_padding else ()
    bias = (attn_bias,) if ctx.has_bias else ()
    ctx.save_for_backward(q, k, v, freqs, weights, mix, out_l, out_g, kl_l, kl_g, lse_l, lse_g, *padding, *bias)


def _backward(ctx, dout, d_out_l, d_out_g, d_kl_l, d_kl_g, _d_lse_l, _d_lse_g):
    if not ctx.store_branches:
        raise RuntimeError(
            "amad_fast triton backward: the forward ran without saving the branch outputs "
            "(store_branches=False); call it with store_branches=True when gradients are needed"
        )
    q, k, v, freqs, weights, mix, out_l, out_g, kl_l, kl_g, lse_l, lse_g, *masks = ctx.saved_tensors
    padding = masks.pop(0) if ctx.has_padding else None
    bias = masks.pop(0) if ctx.has_bias else None
    dq, dk, dv, dfreqs, dweights, dmix = automask_bwd_op(
        dout, d_out_l, d_out_g, d_kl_l, d_kl_g, q, k, v, freqs, weights, mix,
        out_l, out_g, kl_l, kl_g, lse_l, lse_g, ctx.scale, padding, ctx.is_causal, bias)
    # the bias gets no gradient: dispatch gives kernels no attn_mask that requires one
    return dq, dk, dv, dfreqs, dweights, dmix, None, None, None, None, None, None


automask_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def automask_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, weights: Tensor, mix: Tensor,
    scale: float, need_divergence: bool, need_branches: bool,
    key_padding_mask: Optional[Tensor] = None, is_causal: bool = False, attn_bias: Optional[Tensor] = None,
):
    """Spec §1 through the fused kernels; inputs already validated (see amad_fast.attention.validation).

    ``key_padding_mask`` (B, L) bool (True = ignore that key), ``is_causal`` and ``attn_bias``
    (the attn_mask as a float32 additive (1, L, L) or (B·H, L, L) bias, −inf = blocked:
    ``AttentionMasks.attn_bias``) mask keys inside the kernels; a row with no allowed key gives
    zeros.

    ``mix`` is the raw mixup logit (the op forms λ = sigmoid(mix)). Parameters are used in fp32
    (their gradients come back in their own dtype through autograd); the branch outputs are stored
    whenever a gradient may be needed, since the backward uses them.
    """
    from amad_fast.attention.result import AutoMaskResult

    f32 = torch.float32
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, freqs, weights, mix))
    out, out_l, out_g, kl_l, kl_g, _, _ = automask_fwd_op(
        q, k, v, freqs.to(f32), weights.to(f32), mix.to(f32),
        float(scale), bool(need_divergence), bool(need_branches or needs_grad), key_padding_mask, bool(is_causal),
        attn_bias)
    if need_divergence:
        kl_l, kl_g = kl_l.to(q.dtype), kl_g.to(q.dtype)
    else:
        kl_l = kl_g = None
    if not need_branches:
        out_l = out_g = None
    return AutoMaskResult(out, kl_l, kl_g, out_l, out_g)

