"""The single dispatch point: ``automask_attention`` validates once, then runs the first backend
(in priority order) that supports the inputs, or the one named; ``available_backends`` says
which backends work on this machine and why the others do not. What each backend supports is its
declaration (:class:`amad_fast.attention.backends.base.Support`); nothing here knows a limit."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

from torch import Tensor

from amad_fast.attention.backends.base import Backend
from amad_fast.attention.backends.cpp import CppBackend
from amad_fast.attention.backends.reference import ReferenceBackend
from amad_fast.attention.backends.triton import TritonBackend
from amad_fast.attention.result import AutoMaskResult
from amad_fast.attention.validation import NO_MASKS, AttentionMasks, check_inputs, check_masks

#: priority order for ``backend="auto"``: fused Triton, then the C++/CUDA extension, then the reference
BACKENDS: Dict[str, Backend] = {b.name: b for b in (TritonBackend(), CppBackend(), ReferenceBackend())}


@dataclass(frozen=True)
class BackendStatus:
    name: str
    available: bool
    reason: str  # why it is not available; "" when it is

    def __str__(self) -> str:
        return f"{self.name}: " + ("available" if self.available else f"unavailable ({self.reason})")


def available_backends() -> Dict[str, BackendStatus]:
    """Every backend, in priority order, with whether it works on this machine and why not."""
    out = {}
    for name, backend in BACKENDS.items():
        reason = backend.availability()
        out[name] = BackendStatus(name, reason is None, reason or "")
    return out


def select_backend(
    q: Tensor, freqs: Tensor, dims, backend: str = "auto", dropout_p: float = 0.0,
    masks: AttentionMasks = NO_MASKS,
) -> Backend:
    """Resolve ``backend`` for validated inputs; raise with every reason when none fits."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {['auto', *BACKENDS]}, got {backend!r}")
        chosen = BACKENDS[backend]
        reason = chosen.availability() or chosen.unsupported_reason(q, freqs, dims, dropout_p, masks)
        if reason:
            raise RuntimeError(f"backend {backend!r} cannot run these inputs: {reason}")
        return chosen
    reasons = []
    for name, candidate in BACKENDS.items():
        if q.device.type not in candidate.support().auto_device_types:
            reasons.append(f"{name}: not picked automatically on {q.device.type}")
            continue
        reason = candidate.availability() or candidate.unsupported_reason(q, freqs, dims, dropout_p, masks)
        if reason is None:
            return candidate
        reasons.append(f"{name}: {reason}")
    raise RuntimeError("no backend supports these inputs: " + "; ".join(reasons))


def automask_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    freqs: Tensor,
    weights: Tensor,
    mix: Tensor,
    *,
    scale: Optional[float] = None,
    need_divergence: bool = False,
    need_branches: bool = False,
    dropout_p: float = 0.0,
    key_padding_mask: Optional[Tensor] = None,
    attn_mask: Optional[Tensor] = None,
    is_causal: bool = False,
    backend: str = "auto",
) -> AutoMaskResult:
    """AutoMask attention (spec §1) through the chosen backend.

    q, k, v: (B, H, L, D), any strides, one float dtype; freqs (H, S, D/2), weights (H, S),
    mix (H,): one float dtype (they may differ from q's, e.g. float32 parameters with bf16
    activations). ``scale`` defaults to 1/√D. ``need_divergence`` adds ``kl_local`` and
    ``kl_global`` (B, H, L); ``need_branches`` adds ``out_local`` and ``out_global``.
    ``dropout_p`` in [0, 1) drops attention probabilities of both maps before they meet v (the
    divergence terms use the undropped maps); only backends that declare dropout take it, the
    others are passed over ("dropout not supported").

    Masks, as ``nn.MultiheadAttention`` takes them (True = not allowed): ``key_padding_mask``
    (B, L) bool ignores keys of a batch element; ``attn_mask`` (L, L) or (B·H, L, L), bool or an
    additive float mask (added to both maps' scaled scores, −inf = not allowed); ``is_causal``
    lets row i attend keys j ≤ i only (alone, or with an attn_mask that blocks every future key).
    A masked key takes part in neither map nor in the divergence; a row with no allowed key gives
    zeros (see :func:`amad_fast.attention.reference.automask_attention_reference`). A backend that
    does not declare a mask is passed over ("attention masks not supported yet").
    ``backend`` is "auto", "reference", "triton" or "cpp".
    """
    dims = check_inputs(q, k, v, freqs, weights, mix, scale, dropout_p)
    masks = check_masks(key_padding_mask, attn_mask, is_causal, dims, q.device)
    resolved_scale = 1.0 / math.sqrt(dims.head_dim) if scale is None else float(scale)
    dropout_p = float(dropout_p)
    chosen = select_backend(q, freqs, dims, backend, dropout_p, masks)
    return chosen.forward(
        q, k, v, freqs, weights, mix, resolved_scale, bool(need_divergence), bool(need_branches), dropout_p, masks
    )
