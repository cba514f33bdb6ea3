"""Backend adapter for the C++/CUDA extension ops (``torch.ops.amad_fast``)."""
from __future__ import annotations

from typing import Optional

from .._extension import extension_error
from .base import Backend


class CppBackend(Backend):
    name = "cpp"
    auto_device_types = frozenset({"cpu", "cuda"})

    def availability(self) -> Optional[str]:
        err = extension_error()
        if err:
            return err
        import torch

        if not hasattr(torch.ops.amad_fast, "automask_forward"):
            return "the extension has no AutoMask kernels registered yet"
        return None

    def unsupported_reason(self, q, freqs, dims) -> Optional[str]:
        return "not implemented yet"

    def forward(self, q, k, v, freqs, weights, mix, scale, need_divergence, need_branches):
        raise NotImplementedError
