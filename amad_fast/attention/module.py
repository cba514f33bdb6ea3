"""``AutoMaskAttention``: a drop-in for ``nn.MultiheadAttention`` (self-attention) that computes
AutoMask attention (spec §1) through :func:`amad_fast.automask_attention`."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from amad_fast.attention.dispatch import BACKENDS, automask_attention
from amad_fast.attention.reference import default_freqs, mixed_attention_weights
from amad_fast.attention.result import AutoMaskResult


class AutoMaskAttention(nn.Module):
    """Multi-head AutoMask attention with the call signature of ``nn.MultiheadAttention``.

    ``out, weights = attn(x, x, x, need_weights=False)``; also usable as the ``self_attn`` of
    ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder``, with ``src_key_padding_mask``,
    ``mask`` and ``is_causal``. Query, key and value must share one shape (positions i and j
    index the same sequence), so ``kdim`` and ``vdim`` can only be ``embed_dim``.

    Masks as ``nn.MultiheadAttention`` takes them: ``key_padding_mask`` (B, L) (or (L,) for an
    unbatched input), bool (True = ignore that key) or float (added to the scores);
    ``attn_mask`` (L, L) or (B·H, L, L), bool or float; ``is_causal=True`` alone, or with an
    ``attn_mask`` that blocks every future key, lets row i attend keys j ≤ i only. Masked keys take
    part in neither map nor in the divergence; a row with no allowed key gives zeros (where
    ``nn.MultiheadAttention`` gives NaN). A float key padding mask of 0 and −inf only (what
    ``nn.TransformerEncoder`` passes for a bool ``src_key_padding_mask``) is read as the bool mask,
    so the fused kernels can take it; other float padding values join ``attn_mask``.

    The divergence terms reach training and scoring in two ways: :meth:`forward_with_terms`
    returns them directly, and with ``keep_terms = True`` every forward also stores them (with
    their autograd graph) in :attr:`last_terms`, which works when the module sits inside another
    model such as ``nn.TransformerEncoderLayer``.

    ``dropout`` drops attention probabilities as ``nn.MultiheadAttention`` does, while training:
    it goes to dispatch as ``dropout_p``, which passes over the backends that do not declare
    dropout (the fused kernels), so training with ``dropout > 0`` runs the reference. A named
    ``backend`` without dropout support is refused at construction when ``dropout > 0``.
    """

    # torch's TransformerEncoderLayer takes a fused fast path (plain attention on in_proj_weight)
    # in inference, and TransformerEncoder turns a padded batch into a nested tensor for it, only
    # when this is True; False keeps every call on our forward with the padding mask intact.
    _qkv_same_embed_dim = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_scales: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = True,
        backend: str = "auto",
        device=None,
        dtype=None,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
    ) -> None:
        super().__init__()
        for name, value in (("kdim", kdim), ("vdim", vdim)):
            if value is not None and value != embed_dim:
                raise ValueError(
                    f"{name}: AutoMask attention is self-attention (queries and keys are positions of one "
                    f"sequence), so {name} must be None or embed_dim={embed_dim}; got {value!r}"
                )
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads), ("num_scales", num_scales)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim: expected a multiple of num_heads={num_heads}, got {embed_dim}")
        head_dim = embed_dim // num_heads
        if head_dim % 2:
            raise ValueError(
                f"embed_dim: expected embed_dim/num_heads to be even (rotation pairs), got head dim {head_dim}"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {['auto', *BACKENDS]}, got {backend!r}")
        if dropout > 0 and backend != "auto" and not BACKENDS[backend].support().dropout:
            raise ValueError(
                f"dropout: the {backend!r} backend has no attention dropout; use dropout=0.0 or backend='auto'"
            )
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.kdim = self.vdim = embed_dim
        self.num_scales = num_scales
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.backend = backend
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.freqs = nn.Parameter(torch.empty(num_heads, num_scales, head_dim // 2, **factory))
        self.weights = nn.Parameter(torch.empty(num_heads, num_scales, **factory))
        self.mix = nn.Parameter(torch.empty(num_heads, **factory))
        self.keep_terms = False
        self.last_terms: Optional[AutoMaskResult] = None
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Projections as nn.MultiheadAttention; AutoMask parameters as spec §1 (θ ladder, w = 1/S, m = 0)."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)
        with torch.no_grad():
            self.freqs.copy_(default_freqs(self.num_heads, self.num_scales, self.head_dim // 2))
            self.weights.fill_(1.0 / self.num_scales)
            self.mix.zero_()

    def automask_parameters(self):
        """The AutoMask (min-step) parameters of spec §3: freqs and weights."""
        return [self.freqs, self.weights]

    def self_attention_parameters(self):
        """The self-attention (max-step) parameters of spec §3: W_Q, W_K and their biases."""
        return [self.in_proj_weight, self.in_proj_bias] if self.in_proj_bias is not None else [self.in_proj_weight]

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_scales={self.num_scales}, "
            f"dropout={self.dropout}, batch_first={self.batch_first}, backend={self.backend!r}"
        )

    # -- projections ---------------------------------------------------------------------
    def _heads(self, x: Tensor, part: int) -> Tensor:
        """Project (B, L, E) with slice ``part`` (0 q, 1 k, 2 v) of in_proj into (B, H, L, D)."""
        E = self.embed_dim
        w = self.in_proj_weight[part * E : (part + 1) * E]
        b = None if self.in_proj_bias is None else self.in_proj_bias[part * E : (part + 1) * E]
        y = nn.functional.linear(x, w, b)
        return y.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _batched(self, name: str, x: Tensor) -> Tuple[Tensor, bool]:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3) or x.shape[-1] != self.embed_dim:
            layout = "(B, L, E)" if self.batch_first else "(L, B, E)"
            raise ValueError(
                f"{name}: expected {layout} or (L, E) with E = {self.embed_dim}, got shape {tuple(x.shape)}"
            )
        if x.dim() == 2:
            return x.unsqueeze(0), True
        return (x if self.batch_first else x.transpose(0, 1)), False

    def forward_with_terms(
        self, x: Tensor, key: Optional[Tensor] = None, value: Optional[Tensor] = None, need_branches: bool = True,
        key_padding_mask: Optional[Tensor] = None,
    ) -> Tuple[Tensor, AutoMaskResult]:
        """Attention output after ``out_proj`` (shaped like ``x``) and the per-head terms.

        The returned :class:`AutoMaskResult` always carries ``kl_local``/``kl_global`` (B, H, L)
        and, with ``need_branches``, ``out_local``/``out_global`` (B, H, L, D). ``key_padding_mask``
        as in :meth:`forward`.
        """
        y, res, _, _ = self._attend(x, x if key is None else key, x if value is None else value, True, need_branches,
                                    key_padding_mask)
        return y, res

    def _masks(self, key_padding_mask, attn_mask, unbatched: bool):
        """nn.MultiheadAttention's masks in the form of the functional API: a (B, L) bool padding
        mask (a float one of 0/−inf read as bool, other float values added into attn_mask)."""
        if key_padding_mask is None:
            return None, attn_mask
        if not isinstance(key_padding_mask, Tensor):
            raise TypeError(f"key_padding_mask: expected a torch.Tensor or None, got {type(key_padding_mask).__name__}")
        if unbatched and key_padding_mask.dim() == 1:
            key_padding_mask = key_padding_mask.unsqueeze(0)
        if not key_padding_mask.is_floating_point():
            return key_padding_mask, attn_mask
        blocked = key_padding_mask == float("-inf")
        if bool(((key_padding_mask == 0) | blocked).all()):
            return blocked, attn_mask
        if key_padding_mask.dim() != 2:
            return key_padding_mask, attn_mask  # the functional API's check names the shape
        B, L = key_padding_mask.shape
        bias = key_padding_mask[:, None, None, :].expand(B, self.num_heads, L, L)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                attn_mask = torch.zeros(attn_mask.shape, dtype=key_padding_mask.dtype,
                                        device=attn_mask.device).masked_fill(attn_mask, float("-inf"))
            bias = bias + (attn_mask if attn_mask.dim() == 2 else attn_mask.view(B, self.num_heads, L, L))
        return None, bias.reshape(B * self.num_heads, L, L)

    def _attend(self, query, key, value, need_divergence, need_branches,
                key_padding_mask=None, attn_mask=None, is_causal=False):
        """Output after out_proj, the backend's AutoMaskResult, the projected (q, k) heads and the
        masks as the functional API took them."""
        q_in, unbatched = self._batched("query", query)
        k_in, _ = self._batched("key", key)
        v_in, _ = self._batched("value", value)
        if k_in.shape != q_in.shape or v_in.shape != q_in.shape:
            raise ValueError(
                "key, value: expected the shape of query (self-attention over one window), got "
                f"query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        q, k, v = self._heads(q_in, 0), self._heads(k_in, 1), self._heads(v_in, 2)
        masks = dict(zip(("key_padding_mask", "attn_mask"), self._masks(key_padding_mask, attn_mask, unbatched)))
        masks["is_causal"] = is_causal
        res = automask_attention(
            q, k, v, self.freqs, self.weights, self.mix,
            need_divergence=need_divergence, need_branches=need_branches,
            dropout_p=self.dropout if self.training else 0.0, backend=self.backend, **masks,
        )
        y = self.out_proj(res.out.transpose(1, 2).flatten(2))
        if unbatched:
            y = y.squeeze(0)
        elif not self.batch_first:
            y = y.transpose(0, 1)
        return y, res, (q, k), masks

    def _forward_nested(self, query: Tensor, key: Tensor, value: Tensor, attn_mask, is_causal: bool) -> Tensor:
        """Self-attention over a nested tensor of sequences (B, L_b, E), as ``nn.TransformerEncoder``
        builds from a padded batch in inference: run padded with their lengths as the key padding
        mask, and return the rows of each sequence as a nested tensor again."""
        if key is not query or value is not query:
            raise ValueError("query: a nested tensor is taken for self-attention only (key and value the same tensor)")
        if not self.batch_first:
            raise ValueError("query: a nested tensor needs batch_first=True")
        rows = query.unbind()
        lengths = torch.tensor([r.shape[0] for r in rows], device=query.device)
        padded = torch.nested.to_padded_tensor(query, 0.0)
        key_padding_mask = torch.arange(padded.shape[1], device=query.device)[None, :] >= lengths[:, None]
        y, _, _, _ = self._attend(padded, padded, padded, False, False, key_padding_mask, attn_mask, is_causal)
        return torch.nested.as_nested_tensor([y[i, : r.shape[0]] for i, r in enumerate(rows)], layout=query.layout)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """Same call and return as ``nn.MultiheadAttention.forward`` (masks: see the class docstring).

        With ``need_weights`` the returned weights are the mixed map λ·P^M + (1−λ)·P^G
        (the matrix that multiplies v; 0 at masked keys), averaged over heads unless
        ``average_attn_weights=False``; computing them materialises L×L per head, as
        nn.MultiheadAttention does.
        """
        if isinstance(query, Tensor) and query.is_nested:
            return self._forward_nested(query, key, value, attn_mask, is_causal), None
        keep = self.keep_terms
        y, res, (q, k), masks = self._attend(query, key, value, keep, keep, key_padding_mask, attn_mask, is_causal)
        self.last_terms = res if keep else None
        if not need_weights:
            return y, None
        weights = mixed_attention_weights(q, k, self.freqs, self.weights, self.mix, **masks)
        if average_attn_weights:
            weights = weights.mean(1)
        if query.dim() == 2:  # unbatched input
            weights = weights.squeeze(0)
        return y, weights
