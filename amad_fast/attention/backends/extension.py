"""Loads the compiled extension ``amad_fast._C`` (built from csrc/ by setup.py), which registers
its ops under ``torch.ops.amad_fast``. Importing never fails: the reason is kept instead."""
from __future__ import annotations

from typing import Optional

_LOAD_ERROR: Optional[str] = None
try:
    import torch  # noqa: F401  (the extension links against libtorch)

    from amad_fast import _C  # noqa: F401
except ImportError as exc:  # built with AMAD_FAST_SKIP_EXTENSION=1, or run from an unbuilt tree
    import os

    _here = os.path.dirname(os.path.abspath(__file__))
    if os.path.exists(os.path.join(_here, os.pardir, "setup.py")):
        _LOAD_ERROR = (
            f"the C++ extension amad_fast._C is not built in the source tree {os.path.dirname(_here)} "
            "that Python imported amad_fast from (build it there with `python setup.py build_ext --inplace`, "
            "or run from another folder / with PYTHONSAFEPATH=1 to use the installed package)"
        )
    else:
        _LOAD_ERROR = f"the C++ extension amad_fast._C could not be loaded ({exc})"


def extension_error() -> Optional[str]:
    """None when the extension loaded, else why it did not."""
    return _LOAD_ERROR


def build_info() -> str:
    """What the extension was compiled with, e.g. "cpu" or "cpu+cuda"; "" when not built."""
    if _LOAD_ERROR is not None:
        return ""
    import torch

    return torch.ops.amad_fast.build_info()


def automask_ops_error() -> Optional[str]:
    """None when the extension loaded with its AutoMask ops registered, else why not."""
    if _LOAD_ERROR is not None:
        return _LOAD_ERROR
    import torch

    if not hasattr(torch.ops.amad_fast, "automask_forward"):
        return "the extension has no AutoMask kernels registered (rebuild it: python setup.py build_ext --inplace)"
    return None
