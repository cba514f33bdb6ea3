"""Backend adapter for the plain-PyTorch reference: runs anywhere, in any float dtype."""
from __future__ import annotations

from typing import Optional

from amad_fast.attention.backends.base import Backend
from amad_fast.attention.reference import automask_attention_reference


class ReferenceBackend(Backend):
    name = "reference"
    auto_device_types = frozenset({"cpu", "cuda", "mps", "xpu", "meta"})

    def availability(self) -> Optional[str]:
        return None

    def unsupported_reason(self, q, freqs, dims) -> Optional[str]:
        return None

    def forward(self, q, k, v, freqs, weights, mix, scale, need_divergence, need_branches):
        return automask_attention_reference(
            q, k, v, freqs, weights, mix, scale, need_divergence=need_divergence, need_branches=need_branches
        )
