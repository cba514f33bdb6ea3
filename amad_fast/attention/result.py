"""Result type shared by every AutoMask attention backend."""
from __future__ import annotations

from typing import NamedTuple, Optional

from torch import Tensor


class AutoMaskResult(NamedTuple):
    """What :func:`amad_fast.automask_attention` returns; fields not asked for are ``None``.

    out:        (B, H, L, D) mixed output ``λ·P^M v + (1−λ)·P^G v``.
    kl_local:   (B, H, L) ``KL(P^M_i ‖ M_i)`` per query row (``need_divergence=True``).
    kl_global:  (B, H, L) ``KL(P^G_i ‖ M_i)`` per query row (``need_divergence=True``).
    out_local:  (B, H, L, D) AutoMask branch ``P^M v`` (``need_branches=True``).
    out_global: (B, H, L, D) self-attention branch ``P^G v`` (``need_branches=True``).
    """

    out: Tensor
    kl_local: Optional[Tensor] = None
    kl_global: Optional[Tensor] = None
    out_local: Optional[Tensor] = None
    out_global: Optional[Tensor] = None

    @property
    def js(self) -> Optional[Tensor]:
        """Jensen–Shannon divergence per row, ``½(kl_local + kl_global)`` (None if not computed)."""
        if self.kl_local is None or self.kl_global is None:
            return None
        return 0.5 * (self.kl_local + self.kl_global)
