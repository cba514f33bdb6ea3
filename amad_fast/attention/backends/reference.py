"""Backend adapter for the plain-PyTorch reference: runs anywhere, in any float dtype, with dropout."""
from __future__ import annotations

from amad_fast.attention.backends.base import Backend, Support
from amad_fast.attention.reference import automask_attention_reference

_SUPPORT = Support(
    device_types=None,
    auto_device_types=frozenset({"cpu", "cuda", "mps", "xpu", "meta"}),
    dropout=True,
)


class ReferenceBackend(Backend):
    name = "reference"

    def support(self) -> Support:
        return _SUPPORT

    def forward(self, q, k, v, freqs, weights, mix, scale, need_divergence, need_branches, dropout_p=0.0):
        return automask_attention_reference(
            q, k, v, freqs, weights, mix, scale,
            need_divergence=need_divergence, need_branches=need_branches, dropout_p=dropout_p,
        )
