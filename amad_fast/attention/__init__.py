"""The attention library: AutoMask attention (spec §1) and nothing of the detector built on it.

- :func:`automask_attention` (:mod:`.dispatch`): the functional op and the one dispatch point, which
  validates the inputs once (:mod:`.validation`) and runs the first backend that supports them;
- :func:`available_backends`: which backends work here, and why the others do not;
- :mod:`.backends`: the fused Triton kernels, the C++/CUDA extension and the PyTorch reference,
  each behind one contract (:class:`.backends.base.Backend`) and each declaring what it supports
  (:class:`.backends.base.Support`), which dispatch checks;
- :mod:`.reference`: the plain-PyTorch source of truth every backend is tested against;
- :class:`AutoMaskAttention` (:mod:`.module`): the drop-in for ``nn.MultiheadAttention``;
- :class:`AutoMaskResult` (:mod:`.result`): what the op returns.

Nothing under ``amad_fast.attention`` imports from the detector side of the package.
"""
from amad_fast.attention.dispatch import BackendStatus, automask_attention, available_backends
from amad_fast.attention.module import AutoMaskAttention
from amad_fast.attention.result import AutoMaskResult
from amad_fast.attention.validation import set_finite_checks

__all__ = [
    "AutoMaskAttention",
    "AutoMaskResult",
    "BackendStatus",
    "automask_attention",
    "available_backends",
    "set_finite_checks",
]
