"""Backend adapter for the fused Triton kernels in ``amad_fast.kernels.automask`` (sources in kernels/).

Triton runs on CUDA devices; with ``TRITON_INTERPRET=1`` set before Triton is first imported it
also runs (slowly) on the CPU interpreter, which is how the tests check it without a GPU.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Optional

import torch

from amad_fast.attention.backends.base import Backend

#: mirrored from kernels/automask.py so refusing inputs does not import Triton
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
MAX_SCALES = 16
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _interpreted() -> bool:
    """Whether the kernels run on Triton's CPU interpreter (Triton reads this variable when the
    kernels are decorated, i.e. when amad_fast.kernels.automask is first imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class TritonBackend(Backend):
    name = "triton"
    auto_device_types = frozenset({"cuda"})

    def availability(self) -> Optional[str]:
        if importlib.util.find_spec("triton") is None:
            return "Triton is not installed (pip install triton)"
        if not torch.cuda.is_available() and not _interpreted():
            return ("no CUDA device, and TRITON_INTERPRET=1 was not set before Triton was imported "
                    "(the CPU interpreter runs the kernels, slowly)")
        return None

    def unsupported_reason(self, q, freqs, dims) -> Optional[str]:
        interp = _interpreted()
        dev = q.device.type
        if dev != "cuda" and not (interp and dev == "cpu"):
            return (f"q: expected a CUDA tensor (or a CPU tensor with TRITON_INTERPRET=1), got device {q.device}")
        if q.dtype not in _DTYPES:
            return f"q: expected dtype float16, bfloat16 or float32, got {q.dtype}"
        if q.dtype == torch.bfloat16 and interp:
            return "q: bfloat16 is not supported by the Triton CPU interpreter (use float16 or float32)"
        if dims.head_dim not in SUPPORTED_HEAD_DIMS:
            return f"q: expected head dim D in {SUPPORTED_HEAD_DIMS}, got D = {dims.head_dim}"
        if dims.scales > MAX_SCALES:
            return f"freqs: expected at most {MAX_SCALES} scales S, got S = {dims.scales}"
        return None

    def forward(self, q, k, v, freqs, weights, mix, scale, need_divergence, need_branches):
        from amad_fast.kernels.automask import automask_attention_triton

        return automask_attention_triton(q, k, v, freqs, weights, mix, scale, need_divergence, need_branches)
