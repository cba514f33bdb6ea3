"""amad_fast: kernel-accelerated AutoMask attention and the AMAD anomaly detector.

Spec: AMAD (Huang & Li, 2025) as read in docs/method.md. The entry points:

- :func:`automask_attention` — functional AutoMask attention, one dispatch point for every backend;
- :func:`available_backends` — which backends work here, and why the others do not;
- :class:`AutoMaskAttention` — drop-in for ``nn.MultiheadAttention`` (self-attention).
"""
from ._validation import set_finite_checks
from .dispatch import BackendStatus, automask_attention, available_backends
from .modules import AutoMaskAttention
from .types import AutoMaskResult
from . import reference

__version__ = "0.1.0"

__all__ = [
    "AutoMaskAttention",
    "AutoMaskResult",
    "BackendStatus",
    "automask_attention",
    "available_backends",
    "reference",
    "set_finite_checks",
    "__version__",
]
