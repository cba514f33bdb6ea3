"""The one contract every AutoMask attention backend fulfils, and the declaration it is checked by.

A backend states once, as data (:class:`Support`), what it can run: device types, dtypes, head
dims, scale count, dropout, masks, what it needs installed and where ``backend="auto"`` may pick it.
:meth:`Backend.availability` (can it run on this machine at all) and
:meth:`Backend.unsupported_reason` (can it take these inputs) are generic checks over that
declaration, plus a hook (:meth:`Backend.special_reason`) for what data cannot say. Inputs reach
a backend already validated by :func:`amad_fast.attention.validation.check_inputs`; ``scale`` is
already resolved to a float.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import FrozenSet, Optional, Tuple

import torch
from torch import Tensor

from amad_fast.attention.backends.extension import automask_ops_error
from amad_fast.attention.result import AutoMaskResult
from amad_fast.attention.validation import NO_MASKS, AttentionMasks, Dims


@dataclass(frozen=True)
class HeadDims:
    """The head dims D a backend takes (validation already requires D even)."""

    minimum: int = 2
    maximum: Optional[int] = None
    power_of_two: bool = False

    def admits(self, head_dim: int) -> bool:
        if head_dim < self.minimum or (self.maximum is not None and head_dim > self.maximum):
            return False
        return not self.power_of_two or head_dim & (head_dim - 1) == 0

    def describe(self) -> str:
        """e.g. "in (16, 32, 64, 128)" or "≤ 512"."""
        if self.power_of_two and self.maximum is not None:
            listed = [d for d in range(self.minimum, self.maximum + 1) if self.admits(d)]
            return f"in {tuple(listed)}"
        parts = [f"≥ {self.minimum}"] if self.minimum > 2 else []
        if self.maximum is not None:
            parts.append(f"≤ {self.maximum}")
        if self.power_of_two:
            parts.append("a power of two")
        return ", ".join(parts) or "even"


@dataclass(frozen=True)
class Support:
    """What a backend can run, stated once. ``None`` in a field means "no restriction"."""

    #: device types it runs on when named explicitly (``backend=...``)
    device_types: Optional[FrozenSet[str]]
    #: device types on which ``backend="auto"`` may pick it
    auto_device_types: FrozenSet[str]
    #: dtypes of q, k, v
    dtypes: Optional[Tuple[torch.dtype, ...]] = None
    #: dtypes of freqs, weights, mix
    param_dtypes: Optional[Tuple[torch.dtype, ...]] = None
    head_dims: HeadDims = HeadDims()
    #: largest number of AutoMask scales S
    max_scales: Optional[int] = None
    #: whether it implements attention dropout (``dropout_p > 0``)
    dropout: bool = False
    #: the masking arguments it implements, a subset of
    #: :data:`amad_fast.attention.validation.MASK_KINDS` ("key_padding_mask", "attn_mask", "is_causal")
    masks: FrozenSet[str] = frozenset()
    #: whether it differentiates a float ``attn_mask`` that requires grad (the fused kernels add
    #: the mask to the scores but return no gradient for it)
    attn_mask_grad: bool = False
    #: whether it needs Triton installed
    needs_triton: bool = False
    #: whether it needs the compiled extension ``amad_fast._C`` with its AutoMask ops
    needs_extension: bool = False
    #: the setting this declaration describes, named in its device and dtype refusals
    #: (e.g. " on Triton's CPU interpreter", where they differ from the GPU's)
    setting: str = ""
    #: appended to a refusal for the device, to say how to run on another one
    device_hint: str = ""


def _device_type_present(device_type: str) -> bool:
    if device_type in ("cpu", "meta"):
        return True
    if device_type == "cuda":
        return torch.cuda.is_available()
    for module in (getattr(torch.backends, device_type, None), getattr(torch, device_type, None)):
        if callable(getattr(module, "is_available", None)):
            return bool(module.is_available())
    return False


def _dtype_names(dtypes) -> str:
    names = [str(d).replace("torch.", "") for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


class Backend:
    #: name used by ``backend=...``
    name: str = ""

    def support(self) -> Support:
        """This backend's declaration (a method, so that it may depend on how Triton runs)."""
        raise NotImplementedError

    def availability(self) -> Optional[str]:
        """None when usable on this machine, else a sentence saying why not."""
        support = self.support()
        if support.needs_triton and importlib.util.find_spec("triton") is None:
            return "Triton is not installed (pip install triton)"
        if support.needs_extension and automask_ops_error() is not None:
            return automask_ops_error()
        devices = support.device_types
        if devices is not None and not any(_device_type_present(d) for d in devices):
            return f"no {' or '.join(sorted(devices))} device on this machine{support.device_hint}"
        return None

    def unsupported_reason(
        self, q: Tensor, freqs: Tensor, dims: Optional[Dims], dropout_p: float = 0.0,
        masks: AttentionMasks = NO_MASKS,
    ) -> Optional[str]:
        """None when these (validated) inputs can run here, else why not.

        D and S are read from q and freqs (validation made them agree with ``dims``); ``dims``
        goes on to :meth:`special_reason`.
        """
        support = self.support()
        device = q.device.type
        if support.device_types is not None and device not in support.device_types:
            return (f"q: expected a tensor on device type {' or '.join(sorted(support.device_types))}"
                    f"{support.setting}, got device {q.device}{support.device_hint}")
        if support.dtypes is not None and q.dtype not in support.dtypes:
            return f"q: expected dtype {_dtype_names(support.dtypes)}{support.setting}, got {q.dtype}"
        if support.param_dtypes is not None and freqs.dtype not in support.param_dtypes:
            return (f"freqs: expected parameter dtype {_dtype_names(support.param_dtypes)}{support.setting}, "
                    f"got {freqs.dtype}")
        head_dim, scales = q.shape[-1], freqs.shape[1]
        if not support.head_dims.admits(head_dim):
            return f"q: expected head dim D {support.head_dims.describe()}, got D = {head_dim}"
        if support.max_scales is not None and scales > support.max_scales:
            return f"freqs: expected at most {support.max_scales} scales S, got S = {scales}"
        if dropout_p > 0.0 and not support.dropout:
            return "dropout not supported"
        missing = masks.kinds - support.masks
        if missing:
            if not support.masks:
                return "attention masks not supported yet"
            return (f"{', '.join(sorted(missing))} not supported (it takes "
                    f"{', '.join(sorted(support.masks))})")
        if masks.attn is not None and masks.attn.requires_grad and not support.attn_mask_grad:
            return "attn_mask requires grad (this backend returns no gradient for an additive mask)"
        return self.special_reason(q, freqs, dims)

    def special_reason(self, q: Tensor, freqs: Tensor, dims: Optional[Dims]) -> Optional[str]:
        """Why these inputs cannot run for a reason :class:`Support` cannot state (None: they can)."""
        return None

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
        dropout_p: float = 0.0,
        masks: AttentionMasks = NO_MASKS,
    ) -> AutoMaskResult:
        """Spec §1 with autograd to all six inputs; ``mix`` is the raw mixup logit (λ = sigmoid(mix)).

        ``dropout_p > 0`` reaches only a backend that declares dropout support, and ``masks`` (checked
        by :func:`amad_fast.attention.validation.check_masks`) only one that declares each of its kinds.
        """
        raise NotImplementedError
