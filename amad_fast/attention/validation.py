"""Input checks shared by every backend: one place that turns bad input into a clear error.

Every message names the argument, what was expected and what came, and is raised before any
kernel launches.
"""
from __future__ import annotations

import math
from typing import FrozenSet, NamedTuple, Optional

import torch
from torch import Tensor

_FINITE_CHECKS = True


def set_finite_checks(enabled: bool) -> None:
    """Turn the non-finite scan of the six inputs on (default) or off.

    The scan reads q, k and v once more and synchronises a GPU; a training loop that already
    guards its data may turn it off for speed. It is skipped inside ``torch.compile`` tracing.
    """
    global _FINITE_CHECKS
    _FINITE_CHECKS = bool(enabled)


def finite_checks_enabled() -> bool:
    return _FINITE_CHECKS


_CPU_FINITE_OP = None  # the extension's all_finite_cpu, once looked up (False: not built)


def _cpu_finite_op():
    global _CPU_FINITE_OP
    if _CPU_FINITE_OP is None:
        from amad_fast.attention.backends import extension  # loads the extension if it is built

        ok = extension.extension_error() is None and hasattr(torch.ops.amad_fast, "all_finite_cpu")
        _CPU_FINITE_OP = torch.ops.amad_fast.all_finite_cpu if ok else False
    return _CPU_FINITE_OP


def _all_finite(tensors) -> list:
    """Per tensor, whether all its elements are finite.

    CPU tensors go through the extension's ``all_finite_cpu`` when it is built: one read of the
    raw bits, on the calling thread up to 4M elements per tensor (see csrc/cpu/automask_cpu.cpp). Elsewhere min and max, which
    propagate NaN and show ±Inf: one read per tensor and no boolean copy, ~10x cheaper than
    isfinite(x).all().
    """
    op = _cpu_finite_op()
    # not while tracing: a traced (exported) model must not record an op of the extension
    if op and not torch.jit.is_tracing() and all(t.device.type == "cpu" for t in tensors):
        return list(op([t.detach() for t in tensors]))
    return torch.stack([torch.isfinite(torch.stack(torch.aminmax(t.detach()))).all() for t in tensors]).tolist()


class Dims(NamedTuple):
    batch: int
    heads: int
    length: int
    head_dim: int
    scales: int


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _require_tensor(name: str, x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def check_inputs(q, k, v, freqs, weights, mix, scale: Optional[float], dropout_p: float = 0.0) -> Dims:
    """Validate the functional API's inputs and return their dimensions."""
    named = {"q": q, "k": k, "v": v, "freqs": freqs, "weights": weights, "mix": mix}
    for name, x in named.items():
        _require_tensor(name, x)

    for name in ("q", "k", "v"):
        if named[name].dim() != 4:
            raise ValueError(f"{name}: expected 4 dimensions (B, H, L, D), got {_describe(named[name])}")
    B, H, L, D = q.shape
    for name in ("k", "v"):
        if tuple(named[name].shape) != (B, H, L, D):
            raise ValueError(
                f"{name}: expected shape (B, H, L, D) = {(B, H, L, D)} to match q, got {tuple(named[name].shape)}"
            )
    if L == 0 or B == 0 or H == 0:
        raise ValueError(f"q: expected non-empty B, H and L, got shape {tuple(q.shape)}")
    if D == 0 or D % 2:
        raise ValueError(f"q: expected an even head dim D ≥ 2 (pairs p, p + D/2 rotate together), got D = {D}")

    if freqs.dim() != 3:
        raise ValueError(f"freqs: expected 3 dimensions (H, S, D/2), got {_describe(freqs)}")
    S = freqs.shape[1]
    if S == 0:
        raise ValueError("freqs: expected at least one scale (S ≥ 1), got S = 0")
    if tuple(freqs.shape) != (H, S, D // 2):
        raise ValueError(f"freqs: expected shape (H, S, D/2) = {(H, S, D // 2)}, got {tuple(freqs.shape)}")
    if tuple(weights.shape) != (H, S):
        raise ValueError(f"weights: expected shape (H, S) = {(H, S)}, got {tuple(weights.shape)}")
    if tuple(mix.shape) != (H,):
        raise ValueError(f"mix: expected shape (H,) = {(H,)}, got {tuple(mix.shape)}")

    for name, x in named.items():
        if x.device != q.device:
            raise ValueError(f"{name}: expected device {q.device} (that of q), got {x.device}")
    for name in ("k", "v"):
        if named[name].dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} (that of q), got {named[name].dtype}")
    param_dtype = freqs.dtype
    for name in ("weights", "mix"):
        if named[name].dtype != param_dtype:
            raise TypeError(f"{name}: expected dtype {param_dtype} (that of freqs), got {named[name].dtype}")

    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise TypeError(f"scale: expected a Python float or None, got {type(scale).__name__}")
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale: expected a finite positive float, got {scale}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"dropout_p: expected a Python float, got {type(dropout_p).__name__}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), got {dropout_p}")

    if _FINITE_CHECKS and not torch.compiler.is_compiling():
        flags = _all_finite(list(named.values()))
        for (name, x), ok in zip(named.items(), flags):
            if not ok:
                bad = int((~torch.isfinite(x)).sum())
                raise ValueError(
                    f"{name}: expected finite values, got {bad} NaN/Inf of {x.numel()} "
                    "(they would poison every row they reach)"
                )
    return Dims(B, H, L, D, S)


class AttentionMasks(NamedTuple):
    """The masks of one call, checked: which keys each query row may not attend.

    key_padding: (B, L) bool, True = that key is ignored by every query row (padding);
    attn: (L, L) or (B·H, L, L), bool (True = not allowed) or an additive float bias whose −inf
    entries are not allowed; causal: key j > i is not allowed for query row i. An ``attn`` that
    is exactly the causal mask given with ``causal`` is dropped (``causal`` says the same), so the
    backends that take ``is_causal`` but not ``attn_mask`` can run it.
    """

    key_padding: Optional[Tensor] = None
    attn: Optional[Tensor] = None
    causal: bool = False

    def attn_bias(self, dtype: torch.dtype) -> Optional[Tensor]:
        """``attn`` as the additive bias the fused kernels add to both maps' scaled scores: a
        contiguous (1, L, L) or (B·H, L, L) tensor of ``dtype`` (the dtype they form scores in),
        0 where allowed and −inf where not for a bool mask, the float mask itself otherwise.
        None without an ``attn``. One L×L (or B·H·L×L) tensor, the size of the mask given."""
        if self.attn is None:
            return None
        attn = self.attn if self.attn.dim() == 3 else self.attn.unsqueeze(0)
        if attn.dtype == torch.bool:
            return torch.zeros(attn.shape, dtype=dtype, device=attn.device).masked_fill_(attn, float("-inf"))
        return attn.detach().to(dtype).contiguous()

    @property
    def kinds(self) -> FrozenSet[str]:
        """The arguments that mask anything: a subset of MASK_KINDS, as backends declare them."""
        present = (("key_padding_mask", self.key_padding is not None), ("attn_mask", self.attn is not None),
                   ("is_causal", self.causal))
        return frozenset(name for name, given in present if given)


#: the masking arguments a backend may declare (``Support.masks``)
MASK_KINDS = frozenset({"key_padding_mask", "attn_mask", "is_causal"})
NO_MASKS = AttentionMasks()


def _require_mask_tensor(name: str, x, device: torch.device) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None, got {type(x).__name__}")
    if x.device != device:
        raise ValueError(f"{name}: expected device {device} (that of q), got {x.device}")
    return x


def _future_keys(length: int, device: torch.device) -> Tensor:
    """(L, L) bool, True where key j lies after query row i (j > i): what ``is_causal`` blocks."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


def check_masks(key_padding_mask, attn_mask, is_causal, dims: Dims, device: torch.device) -> AttentionMasks:
    """Validate the masking arguments of the functional API against the inputs' dimensions.

    key_padding_mask (B, L) bool; attn_mask bool or floating point, (L, L) or (B·H, L, L), its float
    entries finite or −inf; is_causal a bool, and with an attn_mask the mask must block every
    future key (it is then the causal mask, possibly with more blocked).
    """
    B, H, L = dims.batch, dims.heads, dims.length
    if not isinstance(is_causal, bool):
        raise TypeError(f"is_causal: expected a bool, got {type(is_causal).__name__}")
    if key_padding_mask is not None:
        _require_mask_tensor("key_padding_mask", key_padding_mask, device)
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"key_padding_mask: expected dtype torch.bool (True = ignore that key), got {key_padding_mask.dtype}"
            )
        if tuple(key_padding_mask.shape) != (B, L):
            raise ValueError(
                f"key_padding_mask: expected shape (B, L) = {(B, L)}, got {tuple(key_padding_mask.shape)}"
            )
    if attn_mask is None:
        return AttentionMasks(key_padding_mask, None, is_causal)

    _require_mask_tensor("attn_mask", attn_mask, device)
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(
            "attn_mask: expected dtype torch.bool (True = not allowed) or a floating-point additive mask, "
            f"got {attn_mask.dtype}"
        )
    if tuple(attn_mask.shape) not in ((L, L), (B * H, L, L)):
        raise ValueError(
            f"attn_mask: expected shape (L, L) = {(L, L)} or (B·H, L, L) = {(B * H, L, L)}, "
            f"got {tuple(attn_mask.shape)}"
        )
    if attn_mask.is_floating_point():
        if not torch.compiler.is_compiling():
            nan, pos_inf = int(attn_mask.isnan().sum()), int((attn_mask == float("inf")).sum())
            if nan or pos_inf:
                raise ValueError(
                    f"attn_mask: expected finite values or -inf (not allowed), got {nan} NaN and {pos_inf} +inf "
                    f"of {attn_mask.numel()}"
                )
        blocked = attn_mask == float("-inf")
    else:
        blocked = attn_mask
    if not is_causal:
        return AttentionMasks(key_padding_mask, attn_mask, False)
    future = _future_keys(L, device)
    allowed_future = int((future & ~blocked).sum())
    if allowed_future:
        raise ValueError(
            "attn_mask: is_causal=True needs an attn_mask that blocks every future key (j > i), "
            f"got one that allows {allowed_future} of them"
        )
    only_causal = bool((blocked == future).all())
    if only_causal and attn_mask.is_floating_point():
        only_causal = bool((attn_mask.masked_fill(future, 0.0) == 0).all())
    return AttentionMasks(key_padding_mask, None if only_causal else attn_mask, True)
