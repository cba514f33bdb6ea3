"""Every available backend against the float64 reference (spec §1), forward and all six gradients,
under the one parity rule of amad_fast.attention.testing: error ≤ 2 × the reference's own error in
the same dtype + floor.

Backends: ``reference`` (the reference in low precision with its rotation pairs in another order:
the same sums rounded differently, i.e. a kernel exactly as accurate as the reference, which the
rule must admit), ``cpp`` (the C++ CPU kernels, what ``auto`` picks on a CPU), ``triton`` (on the
GPU, or on Triton's CPU interpreter: tests/conftest.py sets TRITON_INTERPRET=1 without a GPU) and
``cuda`` (the extension's CUDA kernels, with a GPU). Cases: one key (L = 1, exactly-zero score
gradients), L that is no multiple of any tile (37, 100, 300: one and several key blocks), D = 16,
32, 64, S = 1 to 4 and 16 (Triton's MAX_SCALES), B·H > 1, non-contiguous q, k, v; float32 on every
case, float16 and bfloat16 (float32 parameters) on one, and float64 (against the float64
reference itself) on every case plus the C++ kernels' narrower vector paths (D = 6, 12, 24), D = 8
and 128, L = 1000.

The interpreter's time grows with B·H·L²: the cases are a covering subset kept small for it.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import pytest
import torch

import amad_fast
from amad_fast.attention.backends.extension import build_info
from amad_fast.attention.testing import (
    assert_parity, check_parity, eps_floor, fused_floor, kernel_floor, make_inputs, permute_pairs, run,
    unpermute_pairs,
)

_STATUS = amad_fast.available_backends()
CUDA_KERNELS = torch.cuda.is_available() and _STATUS["cpp"].available and "cuda" in build_info()
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class Case(NamedTuple):
    """One problem: (B, H, L, D, S) and how its inputs are drawn."""

    shape: tuple
    strided: bool = False
    weight_scale: float = 1.0
    seed: int = 0

    def __str__(self):
        B, H, L, D, S = self.shape
        return f"B{B}H{H}L{L}D{D}S{S}" + ("-strided" if self.strided else "") + (
            f"-w{self.weight_scale:g}" if self.weight_scale != 1.0 else "")


# float32 on every backend. S = 16 with the weights × 0.25 (Σw ≈ 3, like S = 4): with Σw ≈ 11,
# |A| ~ 1e2 and Triton's dq, dk reach 2.5× the reference's max error (see kernels/automask.py).
CASES = [
    Case((2, 2, 1, 32, 4)),
    Case((2, 3, 37, 16, 1), strided=True),
    Case((1, 3, 100, 64, 4), strided=True),
    Case((1, 2, 300, 32, 3)),
    Case((1, 2, 50, 32, 16), weight_scale=0.25),
]
HALF_CASE = Case((2, 2, 100, 32, 4), seed=1)
# float64 only (cheap on the C++/CUDA kernels, which alone run float64): the C++ kernels' narrower
# vector paths (D = 24: 8 lanes, 12: 4 lanes, 6: 2 lanes), D = 8 and 128, L = 1000, S = 8
FLOAT64_EXTRA = [
    Case((2, 2, 1, 8, 1)),
    Case((2, 2, 100, 32, 8)),
    Case((1, 1, 1000, 128, 1)),
    Case((1, 2, 37, 24, 2)),
    Case((1, 1, 20, 12, 4)),
    Case((1, 1, 9, 6, 2)),
    Case((2, 2, 130, 6, 2)),
]

#: (case, activation dtype, parameter dtype)
RUNS = ([(c, torch.float32, torch.float32) for c in CASES]
        + [(HALF_CASE, torch.float16, torch.float32), (HALF_CASE, torch.bfloat16, torch.float32)]
        + [(c, torch.float64, torch.float64) for c in CASES + FLOAT64_EXTRA])


def _runs_on(backend: str, dtype: torch.dtype) -> bool:
    """Which (backend, dtype) pairs exist: the Triton kernels take no float64 (nor bfloat16 on the
    interpreter); the reference has no float64 parity (it is the float64 truth)."""
    if backend == "triton":
        return dtype != torch.float64 and not (dtype == torch.bfloat16 and TRITON_DEVICE == "cpu")
    if backend == "reference":
        return dtype != torch.float64
    return True


def _available(backend: str) -> Optional[str]:
    """Why ``backend`` cannot run here (None when it can)."""
    if backend == "cuda":
        return None if CUDA_KERNELS else "needs a GPU and an extension built with CUDA"
    return None if _STATUS[backend].available else _STATUS[backend].reason


def _params():
    out = []
    for backend in ("reference", "cpp", "triton", "cuda"):
        reason = _available(backend)
        marks = [pytest.mark.skip(reason=f"{backend}: {reason}")] if reason else []
        for case, dtype, param_dtype in RUNS:
            if _runs_on(backend, dtype):
                out.append(pytest.param(backend, case, dtype, param_dtype, marks=marks,
                                        id=f"{backend}-{str(dtype)[6:]}-{case}"))
    return out


def _reordered_reference(inputs, dtype, param_dtype):
    """The reference with its rotation pairs in another (fixed, random) order, mapped back."""
    perm = torch.randperm(inputs[0].shape[-1] // 2, generator=torch.Generator().manual_seed(1000))
    return unpermute_pairs(run("reference", permute_pairs(inputs, perm), dtype, param_dtype), perm)


@pytest.mark.parametrize("backend,case,dtype,param_dtype", _params())
def test_parity_forward_and_gradients(backend, case, dtype, param_dtype):
    inputs = make_inputs(*case.shape, seed=case.seed, weight_scale=case.weight_scale, strided=case.strided)
    if backend == "reference":
        exact, ref = run("reference", inputs), run("reference", inputs, dtype, param_dtype)
        assert_parity(_reordered_reference(inputs, dtype, param_dtype), ref, exact, eps_floor(dtype),
                      "reordered reference")
    elif backend == "triton":
        check_parity("triton", inputs, dtype, param_dtype, floor=fused_floor(dtype), device=TRITON_DEVICE)
    else:  # the extension's kernels: cpp on the CPU, cuda on the GPU
        floor = kernel_floor(dtype) if dtype != torch.float64 else None
        check_parity("cpp", inputs, dtype, param_dtype, floor=floor, device="cuda" if backend == "cuda" else "cpu",
                     label=backend)
