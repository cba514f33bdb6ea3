"""The one contract every AutoMask attention backend fulfils.

A backend says whether it can run on this machine at all (:meth:`Backend.availability`),
whether it can take given inputs (:meth:`Backend.unsupported_reason`), and computes spec §1
with autograd to all six inputs (:meth:`Backend.forward`). Inputs reach it already validated by
:func:`amad_fast.attention.validation.check_inputs`; ``scale`` is already resolved to a float.
"""
from __future__ import annotations

from typing import FrozenSet, Optional

from torch import Tensor

from amad_fast.attention.result import AutoMaskResult
from amad_fast.attention.validation import Dims


class Backend:
    #: name used by ``backend=...``
    name: str = ""
    #: device types on which ``backend="auto"`` may pick this backend (explicit use may go wider)
    auto_device_types: FrozenSet[str] = frozenset()

    def availability(self) -> Optional[str]:
        """None when usable on this machine, else a sentence saying why not."""
        raise NotImplementedError

    def unsupported_reason(self, q: Tensor, freqs: Tensor, dims: Dims) -> Optional[str]:
        """None when these (validated) inputs can run here, else why not."""
        raise NotImplementedError

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        freqs: Tensor,
        weights: Tensor,
        mix: Tensor,
        scale: float,
        need_divergence: bool,
        need_branches: bool,
    ) -> AutoMaskResult:
        raise NotImplementedError
