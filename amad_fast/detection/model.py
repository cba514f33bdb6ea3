"""The AMAD reconstruction model (spec §2) and its parameter routes for the Max-Min game (spec §3).

``AMAD`` maps a window X (B, L, C) to its reconstruction X̂ and returns, per block, the divergence
terms ``kl_local``/``kl_global`` (B, H, L) and the branch outputs ``out_local``/``out_global``
(B, H, L, D) that the training losses and the anomaly score need.
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from amad_fast.attention.module import AutoMaskAttention

__all__ = ["AMAD", "AMADOutput", "ParamRoutes", "positional_encoding"]


def positional_encoding(length: int, d_model: int) -> Tensor:
    """Fixed sinusoidal position encoding (Vaswani et al.), (length, d_model), float32."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return pe.float()


class AMADOutput(NamedTuple):
    """What :meth:`AMAD.forward` returns.

    recon: (B, L, C) reconstruction X̂.
    kl_local, kl_global: (N, B, H, L) per-block, per-head, per-row KL terms (spec §1.5).
    out_local, out_global: per-block lists of (B, H, L, D) branch outputs, or None when
    ``need_branches=False`` (scoring needs only the divergences).
    """

    recon: Tensor
    kl_local: Tensor
    kl_global: Tensor
    out_local: Optional[List[Tensor]]
    out_global: Optional[List[Tensor]]

    @property
    def js(self) -> Tensor:
        """Jensen–Shannon divergence per block, head and row, (N, B, H, L)."""
        return 0.5 * (self.kl_local + self.kl_global)


class ParamRoutes(NamedTuple):
    """The three gradient routes of the exact Max-Min strategy (spec §3).

    automask: freqs and weights of every AutoMaskAttention (min step, −k·D^M).
    self_attention: (parameter, row mask) pairs; the mask selects the W_Q/W_K rows (or bias
    entries) of ``in_proj_weight``/``in_proj_bias`` (max step, +k·D^G). W_V shares that
    Parameter, so the mask keeps its rows on the plain route.
    other: every remaining parameter (L_rec + μ·L_con only).
    """

    automask: List[nn.Parameter]
    self_attention: List[Tuple[nn.Parameter, Tensor]]
    other: List[nn.Parameter]


class _Block(nn.Module):
    """x ← LN(x + Dropout(W_O·AutoMaskAttention(x))); x ← LN(x + Dropout(FFN(x)))."""

    def __init__(self, d_model, n_heads, num_scales, d_ff, dropout, backend):
        super().__init__()
        # attention-probability dropout stays 0 so fused kernels can run; dropout acts on residuals
        self.attention = AutoMaskAttention(d_model, n_heads, num_scales=num_scales, dropout=0.0, backend=backend)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, need_branches: bool, key_padding_mask: Optional[Tensor] = None):
        # forward_with_terms already applies out_proj (= W_O)
        y, terms = self.attention.forward_with_terms(x, need_branches=need_branches, key_padding_mask=key_padding_mask)
        x = self.norm1(x + self.dropout(y))
        x = self.norm2(x + self.dropout(self.ffn(x)))
        return x, terms


def _projection_head(d_model: int, proj_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_model, d_model), nn.GELU(), nn.Linear(d_model, proj_dim))


class AMAD(nn.Module):
    """AMAD (spec §2): token + position embedding, ``n_layers`` AutoMask blocks, linear head.

    ``backend`` is passed to every :class:`AutoMaskAttention` ("auto", "reference", "triton",
    "cpp"). The contrastive projection heads g_M and g_G (spec §3; one pair shared by all blocks,
    input the heads-concatenated time mean of a branch output) live here so that optimiser,
    checkpoints and DDP see them like any other parameter.
    """

    def __init__(
        self,
        n_channels: int,
        window_size: int = 100,
        d_model: int = 128,
        n_heads: int = 8,
        n_layers: int = 3,
        num_scales: int = 4,
        d_ff: Optional[int] = None,
        dropout: float = 0.0,
        proj_dim: Optional[int] = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (
            ("n_channels", n_channels), ("window_size", window_size), ("d_model", d_model),
            ("n_heads", n_heads), ("n_layers", n_layers), ("num_scales", num_scales),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if window_size < 2:
            raise ValueError(f"window_size: expected at least 2 positions, got {window_size}")
        d_ff = 2 * d_model if d_ff is None else d_ff
        proj_dim = d_model if proj_dim is None else proj_dim
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.config = dict(
            n_channels=n_channels, window_size=window_size, d_model=d_model, n_heads=n_heads,
            n_layers=n_layers, num_scales=num_scales, d_ff=d_ff, dropout=float(dropout),
            proj_dim=proj_dim, backend=backend,
        )
        self.n_channels, self.window_size = n_channels, window_size
        self.token = nn.Conv1d(n_channels, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.token.weight, mode="fan_in", nonlinearity="leaky_relu")
        self.register_buffer("position", positional_encoding(window_size, d_model), persistent=False)
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _Block(d_model, n_heads, num_scales, d_ff, dropout, backend) for _ in range(n_layers)
        )
        self.head = nn.Linear(d_model, n_channels)
        self.proj_local = _projection_head(d_model, proj_dim)
        self.proj_global = _projection_head(d_model, proj_dim)

    def attention_modules(self) -> List[AutoMaskAttention]:
        return [b.attention for b in self.blocks]

    def forward(self, x: Tensor, need_branches: bool = True, key_padding_mask: Optional[Tensor] = None) -> AMADOutput:
        """x (B, L, C) standardised windows → :class:`AMADOutput`.

        ``key_padding_mask`` (B, L) bool marks missing steps: every block's attention ignores them
        as keys (both maps and the divergence run over the other steps; their rows are still
        computed). The token embedding mixes each step with its neighbours, so the caller gives
        missing steps fixed values (:func:`amad_fast.data.series.fill_missing_steps`)."""
        if x.dim() != 3 or x.shape[1] != self.window_size or x.shape[2] != self.n_channels:
            raise ValueError(
                f"x: expected (B, L, C) = (B, {self.window_size}, {self.n_channels}), got shape {tuple(x.shape)}"
            )
        h = self.token(x.transpose(1, 2)).transpose(1, 2) + self.position.to(x.dtype)
        h = self.embed_dropout(h)
        kl_l, kl_g, o_l, o_g = [], [], [], []
        for block in self.blocks:
            h, terms = block(h, need_branches, key_padding_mask)
            kl_l.append(terms.kl_local)
            kl_g.append(terms.kl_global)
            o_l.append(terms.out_local)
            o_g.append(terms.out_global)
        recon = self.head(h)
        return AMADOutput(
            recon, torch.stack(kl_l), torch.stack(kl_g),
            o_l if need_branches else None, o_g if need_branches else None,
        )

    def contrastive_views(self, out: AMADOutput, observed: Optional[Tensor] = None) -> Tuple[List[Tensor], List[Tensor]]:
        """Per block, the normalised projections u_b = g_M(mean_t out^M_b), v_b = g_G(mean_t out^G_b), (B, P).
        ``observed`` (B, L) bool: the time means run over these steps only (missing steps excluded)."""
        if out.out_local is None:
            raise ValueError("out: contrastive views need the branch outputs; call forward(x, need_branches=True)")

        def time_mean(o: Tensor) -> Tensor:  # (B, H, L, D) → (B, H, D)
            if observed is None:
                return o.mean(2)
            w = observed[:, None, :, None].to(o.dtype)
            return (o * w).sum(2) / w.sum(2)

        us, vs = [], []
        for ol, og in zip(out.out_local, out.out_global):
            # time mean (B, H, D) → heads concatenated (B, H·D)
            us.append(nn.functional.normalize(self.proj_local(time_mean(ol).flatten(1)), dim=-1))
            vs.append(nn.functional.normalize(self.proj_global(time_mean(og).flatten(1)), dim=-1))
        return us, vs

    def param_routes(self) -> ParamRoutes:
        """Split the parameters into the three Max-Min routes (see :class:`ParamRoutes`)."""
        automask, selfattn, seen = [], [], set()
        for att in self.attention_modules():
            for p in att.automask_parameters():
                automask.append(p)
                seen.add(id(p))
            E = att.embed_dim
            for p in att.self_attention_parameters():
                mask = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
                mask[: 2 * E] = True  # rows 0:E are W_Q, E:2E W_K; 2E:3E (W_V) stay on the plain route
                selfattn.append((p, mask))
                seen.add(id(p))
        other = [p for p in self.parameters() if id(p) not in seen]
        return ParamRoutes(automask, selfattn, other)
