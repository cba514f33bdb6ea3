"""Backend adapter for the fused Triton kernels in ``amad_fast.kernels`` (sources in kernels/)."""
from __future__ import annotations

from typing import Optional

from .base import Backend


class TritonBackend(Backend):
    name = "triton"
    auto_device_types = frozenset({"cuda"})

    def availability(self) -> Optional[str]:
        return "the Triton kernels are not written yet"

    def unsupported_reason(self, q, freqs, dims) -> Optional[str]:
        return "not implemented yet"

    def forward(self, q, k, v, freqs, weights, mix, scale, need_divergence, need_branches):
        raise NotImplementedError
