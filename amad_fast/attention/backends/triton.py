"""Backend adapter for the fused Triton kernels in ``amad_fast.kernels.automask`` (sources in kernels/).

Triton runs on CUDA devices; with ``TRITON_INTERPRET=1`` set before Triton is first imported it
also runs (slowly) on the CPU interpreter, which is how the tests check it without a GPU. The
kernels' limits come from :mod:`amad_fast.kernels.limits`, which does not import Triton, so
inputs are refused without importing it.
"""
from __future__ import annotations

import torch

from amad_fast.attention.backends.base import Backend, HeadDims, Support
from amad_fast.attention.validation import NO_MASKS
from amad_fast.kernels import limits

_HEAD_DIMS = HeadDims(
    minimum=limits.MIN_HEAD_DIM, maximum=limits.MAX_HEAD_DIM, power_of_two=limits.HEAD_DIM_POWER_OF_TWO
)

#: on a GPU
_SUPPORT = Support(
    device_types=frozenset({"cuda"}),
    auto_device_types=frozenset({"cuda"}),
    dtypes=limits.DTYPES,
    head_dims=_HEAD_DIMS,
    max_scales=limits.MAX_SCALES,
    masks=limits.MASKS,
    needs_triton=True,
    device_hint=(" (CPU tensors run on Triton's interpreter, slowly, when TRITON_INTERPRET=1 is set "
                 "before Triton is imported)"),
)

#: on Triton's CPU interpreter (TRITON_INTERPRET=1), which takes CPU tensors too but has no bfloat16
_INTERPRETER_SUPPORT = Support(
    device_types=frozenset({"cuda", "cpu"}),
    auto_device_types=frozenset({"cuda"}),
    dtypes=limits.INTERPRETER_DTYPES,
    head_dims=_HEAD_DIMS,
    max_scales=limits.MAX_SCALES,
    masks=limits.MASKS,
    needs_triton=True,
    setting=" on Triton's CPU interpreter (TRITON_INTERPRET=1)",
)


class TritonBackend(Backend):
    name = "triton"

    def support(self) -> Support:
        return _INTERPRETER_SUPPORT if limits.interpreted() else _SUPPORT

    def forward(self, q, k, v, freqs, weights, mix, scale, need_divergence, need_branches, dropout_p=0.0,
                masks=NO_MASKS):
        from amad_fast.kernels.automask import automask_attention_triton

        return automask_attention_triton(q, k, v, freqs, weights, mix, scale, need_divergence, need_branches,
                                         key_padding_mask=masks.key_padding, is_causal=masks.causal,
                                         attn_bias=masks.attn_bias(torch.float32))
