"""amad_fast: kernel-accelerated AutoMask attention and the AMAD anomaly detector.

Spec: AMAD (Huang & Li, 2025) as read in docs/method.md. The entry points:

- :func:`automask_attention` — functional AutoMask attention, one dispatch point for every backend;
- :func:`available_backends` — which backends work here, and why the others do not;
- :class:`AutoMaskAttention` — drop-in for ``nn.MultiheadAttention`` (self-attention);
- :class:`AMADDetector`, :func:`make_detector`, :func:`load_detector` — the detector and the simple
  baselines by name (imported on first use, so ``import amad_fast`` for the attention alone stays light).
"""
from amad_fast.attention import (
    AutoMaskAttention,
    AutoMaskResult,
    BackendStatus,
    automask_attention,
    available_backends,
    set_finite_checks,
)

__version__ = "0.1.0"

# the detector side, imported when first asked for (PEP 562)
_LAZY = {"AMADDetector": "detection.detector", "make_detector": "detection.registry", "load_detector": "detection.registry"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AMADDetector",
    "make_detector",
    "load_detector",
    "AutoMaskAttention",
    "AutoMaskResult",
    "BackendStatus",
    "automask_attention",
    "available_backends",
    "set_finite_checks",
    "__version__",
]
