"""Backend adapter for the C++/CUDA extension ops (``torch.ops.amad_fast``, built from csrc/).

The ops: ``automask_forward(q, k, v, freqs, weights, mix, scale, need_divergence, key_padding_mask=None,
is_causal=False, attn_bias=None, need_branches=True)`` (``mix`` the raw mixup logit, λ = sigmoid(mix) formed inside, as the
Triton op does; ``key_padding_mask`` (B, L) bool, True = key ignored; ``attn_bias`` the attn_mask as
``AttentionMasks.attn_bias`` gives it, (1, L, L) or (B·H, L, L) in the dtype scores are formed in,
added to both maps' scaled scores, −inf = key not allowed) returns
``(out, out_local, out_global, kl_local, kl_global, lse_local, lse_global)`` (the log-sum-exps in
float64 for every input dtype, so the backward recomputes log P at full precision when the scores
are large); the kl terms are empty tensors unless ``need_divergence``, and on the CPU so are the
branch outputs unless ``need_branches`` (the kernels then mix both maps before their one product with
v, and the backward takes dmix from the recomputed maps; the CUDA kernels always form and return
the branches). ``automask_backward`` (the same masks trailing) is its gradient, wired in C++ as the
Autograd kernel. The CPU kernels take all three masks. The CUDA kernels and their binding take them
too, but have only been checked in the CPU emulation (scripts/cuda_logic_on_cpu.py), never on a
GPU, so masks on CUDA tensors are refused here until a GPU run (benchmarks/gpu_check.py) checks them.
This module registers the ops' fake (meta) kernels so they trace under torch.compile / opcheck.
"""
from __future__ import annotations

from typing import Optional

import torch

from amad_fast.attention.backends.base import Backend, Support
from amad_fast.attention.backends.extension import automask_ops_error, build_info
from amad_fast.attention.result import AutoMaskResult
from amad_fast.attention.validation import NO_MASKS, AttentionMasks

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fake_forward(q, k, v, freqs, weights, mix, scale, need_divergence, key_padding_mask=None, is_causal=False,
                  attn_bias=None, need_branches=True):
    B, H, L, D = q.shape
    kl_shape = (B, H, L) if need_divergence else (0,)
    lse = q.new_empty((B, H, L), dtype=torch.float64)  # float64 for every input dtype (csrc/cpu: log_prob)

    def branch():  # the CUDA kernels form the branches whatever need_branches says
        if need_branches or q.device.type == "cuda":
            return torch.empty_like(q, memory_format=torch.contiguous_format)
        return q.new_empty((0,))

    return (
        torch.empty_like(q, memory_format=torch.contiguous_format),
        branch(),
        branch(),
        q.new_empty(kl_shape),
        q.new_empty(kl_shape),
        lse,
        torch.empty_like(lse),
    )


def _fake_backward(g_out, g_out_local, g_out_global, g_kl_local, g_kl_global, q, k, v, freqs, weights, mix,
                   out_local, out_global, kl_local, kl_global, lse_local, lse_global, scale, key_padding_mask=None,
                   is_causal=False, attn_bias=None):
    def grad_like(x):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    return grad_like(q), grad_like(k), grad_like(v), grad_like(freqs), grad_like(weights), grad_like(mix)


def _register_fakes() -> None:
    """Fake kernels for both ops (torch>=2.4: register_fake; 2.3: impl_abstract)."""
    register = getattr(torch.library, "register_fake", None) or torch.library.impl_abstract
    for name, fn in (("automask_forward", _fake_forward), ("automask_backward", _fake_backward)):
        qualname = f"amad_fast::{name}"
        try:
            register(qualname, fn)
        except RuntimeError as exc:  # already registered (module reloaded)
            if "already" not in str(exc):
                raise


if automask_ops_error() is None:
    _register_fakes()


_SUPPORT = Support(
    device_types=frozenset({"cpu", "cuda"}),
    auto_device_types=frozenset({"cpu", "cuda"}),
    dtypes=_KERNEL_DTYPES,
    param_dtypes=_KERNEL_DTYPES,
    masks=frozenset({"key_padding_mask", "attn_mask", "is_causal"}),  # the CPU kernels'; CUDA: see unsupported_reason
    needs_extension=True,
)


class CppBackend(Backend):
    name = "cpp"

    def support(self) -> Support:
        return _SUPPORT

    def unsupported_reason(self, q, freqs, dims, dropout_p=0.0, masks: AttentionMasks = NO_MASKS) -> Optional[str]:
        """The declaration's checks, after one it cannot state: masks on CUDA tensors are refused
        (the CUDA kernels take them but have not run on a GPU yet; see the module docstring)."""
        if masks.kinds and q.device.type == "cuda":
            return (f"{', '.join(sorted(masks.kinds))} not supported on cuda tensors "
                    "(the cpp backend's CUDA kernels have not been checked with masks on a GPU yet; "
                    "its CPU kernels take them)")
        return super().unsupported_reason(q, freqs, dims, dropout_p, masks)

    def special_reason(self, q, freqs, dims) -> Optional[str]:
        """CUDA tensors need an extension compiled with its CUDA kernels (a property of the build)."""
        if q.device.type == "cuda" and "cuda" not in build_info():
            return "the extension was built without CUDA kernels (rebuild with AMAD_FAST_CUDA=1)"
        return None

    def forward(self, q, k, v, freqs, weights, mix, scale, need_divergence, need_branches, dropout_p=0.0,
                masks=NO_MASKS):
        score_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32  # as the kernels form scores
        out, out_local, out_global, kl_local, kl_global, _, _ = torch.ops.amad_fast.automask_forward(
            q, k, v, freqs, weights, mix, float(scale), bool(need_divergence), masks.key_padding, bool(masks.causal),
            masks.attn_bias(score_dtype), bool(need_branches),
        )
        if not need_divergence:
            kl_local = kl_global = None
        if not need_branches:
            out_local = out_global = None
        return AutoMaskResult(out, kl_local, kl_global, out_local, out_global)
