"""Backend adapter for the plain-PyTorch reference: runs anywhere, in any float dtype, with dropout
and every mask."""
from __future__ import annotations

from amad_fast.attention.backends.base import Backend, Support
from amad_fast.attention.reference import automask_attention_reference
from amad_fast.attention.validation import MASK_KINDS, NO_MASKS

_SUPPORT = Support(
    device_types=None,
    auto_device_types=frozenset({"cpu", "cuda", "mps", "xpu", "meta"}),
    dropout=True,
    masks=MASK_KINDS,
    attn_mask_grad=True,
)


class ReferenceBackend(Backend):
    name = "reference"

    def support(self) -> Support:
        return _SUPPORT

    def forward(self, q, k, v, freqs, weights, mix, scale, need_divergence, need_branches, dropout_p=0.0,
                masks=NO_MASKS):
        return automask_attention_reference(
            q, k, v, freqs, weights, mix, scale,
            need_divergence=need_divergence, need_branches=need_branches, dropout_p=dropout_p,
            key_padding_mask=masks.key_padding, attn_mask=masks.attn, is_causal=masks.causal,
        )
