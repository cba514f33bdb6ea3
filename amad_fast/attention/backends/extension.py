"""Loads the compiled extension ``amad_fast._C`` (built from csrc/ by setup.py), which registers
its ops under ``torch.ops.amad_fast``. Importing never fails: the reason is kept instead."""
from __future__ import annotations

import importlib
import os
from typing import Optional

import torch

_LOAD_ERROR: Optional[str] = None
try:
    importlib.import_module("amad_fast._C")  # registers torch.ops.amad_fast (links against libtorch)
except ImportError as exc:  # built with AMAD_FAST_SKIP_EXTENSION=1, or run from an unbuilt tree
    _package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # amad_fast/
    _tree = os.path.dirname(_package)
    if os.path.exists(os.path.join(_tree, "setup.py")):
        _LOAD_ERROR = (
            f"the C++ extension amad_fast._C is not built in the source tree {_tree} "
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
    return torch.ops.amad_fast.build_info()


def automask_ops_error() -> Optional[str]:
    """None when the extension loaded with its AutoMask ops registered, else why not."""
    if _LOAD_ERROR is not None:
        return _LOAD_ERROR
    if not hasattr(torch.ops.amad_fast, "automask_forward"):
        return "the extension has no AutoMask kernels registered (rebuild it: python setup.py build_ext --inplace)"
    return None
