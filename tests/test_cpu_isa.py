"""Every CPU path of the cpp backend this machine can run, against the float64 reference
with the parity rule of amad_fast.attention.testing (error ≤ 2× the reference's own error in the same dtype,
plus 4 eps): the library block products (AMAD_FAST_CPU_ISA=brgemm, the default on AVX-512 CPUs),
the micro-kernels (avx512, avx2, default), bfloat16 on the CPU's 16-bit units (AMX through ATen's
oneDNN brgemm), and bfloat16 with oneDNN capped below AMX (float32 compute), forward and all six
gradients."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import amad_fast
from amad_fast.attention.testing import (
    FIELDS, GRADS, assert_parity, assert_sample_parity, check_parity, eps_floor, kernel_floor, make_inputs, run,
)

_STATUS = amad_fast.available_backends()["cpp"]
if not _STATUS.available:
    pytest.skip(f"cpp backend not available: {_STATUS.reason}", allow_module_level=True)

OPS = torch.ops.amad_fast
HERE = os.path.dirname(os.path.abspath(__file__))


HAS_BF16_UNITS = hasattr(OPS, "automask_cpu_bf16_units") and OPS.automask_cpu_bf16_units()
needs_bf16_units = pytest.mark.skipif(
    not HAS_BF16_UNITS, reason="CPU without AMX-BF16 (or ATen's oneDNN lacks the bfloat16 ukernel)")

# small and odd shapes (L not a multiple of 16, D down to 6), and one long enough for several blocks
SHAPES = [(2, 2, 37, 16, 4), (1, 2, 100, 32, 4), (1, 1, 300, 64, 2), (1, 2, 9, 6, 2), (1, 1, 1, 8, 1),
          (1, 1, 1100, 24, 2)]


def _draw(shape, dtype, seed=0, **run_kw):
    inputs = make_inputs(*shape, seed=seed)
    got = run("cpp", inputs, dtype, torch.float32, **run_kw)
    for name in got:
        assert torch.isfinite(got[name]).all(), name
    return got, run("reference", inputs, dtype, torch.float32, **run_kw), run("reference", inputs, **run_kw)


def assert_within_rule(shape, dtype, **run_kw):
    """The rule on one draw; on tiny tensors (L < 16: a few hundred entries, where one draw's largest
    error swings several-fold with the summation order alone, see amad_fast.attention.testing) on the
    geometric mean over 8 draws. One draw takes the cpp floor of tests/test_parity.py (kernel_floor).
    run_kw: which outputs are computed and get gradients (amad_fast.attention.testing.run)."""
    if shape[2] >= 16:
        assert_parity(*_draw(shape, dtype, **run_kw), kernel_floor(dtype), "cpp")
    else:
        assert_sample_parity([_draw(shape, dtype, seed, **run_kw) for seed in range(8)], eps_floor(dtype), "cpp")


#: losses whose branch outputs get no gradient, so both maps' dO are multiples of dO and the backward
#: shares dP's product dO·vᵀ and forms dv from the mixed map: ``out`` (and the kl terms) only, as a
#: drop-in attention layer trains; the kl terms only (no dO at all: no dP products)
SHARED_DOUT = {
    "out_and_kl": dict(need_branches=False),
    "out_only": dict(need_branches=False, need_divergence=False),
    "kl_only": dict(need_branches=False, grad_fields=("kl_local", "kl_global")),
}


@pytest.mark.parametrize("mode", list(SHARED_DOUT))
@pytest.mark.parametrize("isa", ["brgemm", "avx512", "avx2", "default", "bf16-units"])
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2], SHAPES[3]], ids=lambda s: "B{}H{}L{}D{}S{}".format(*s))
def test_shared_dout_backward_within_rule(shape, isa, mode, monkeypatch):
    """The backward's shared-dO products on every path, float32 (and bfloat16 on the 16-bit units)."""
    if isa == "bf16-units":
        if not HAS_BF16_UNITS:
            pytest.skip("CPU without AMX-BF16 (or ATen's oneDNN lacks the bfloat16 ukernel)")
        monkeypatch.delenv("AMAD_FAST_CPU_ISA", raising=False)
        assert_within_rule(shape, torch.bfloat16, **SHARED_DOUT[mode])
        return
    monkeypatch.setenv("AMAD_FAST_CPU_ISA", isa)
    if OPS.automask_cpu_isa() != isa:
        pytest.skip(f"this CPU cannot run {isa} (runs {OPS.automask_cpu_isa()})")
    assert_within_rule(shape, torch.float32, **SHARED_DOUT[mode])


@pytest.mark.parametrize("mode", list(SHARED_DOUT))
@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[2]], ids=lambda s: "B{}H{}L{}D{}S{}".format(*s))
def test_shared_dout_backward_float64(shape, mode):
    """float64 (the micro-kernels) against the float64 reference, the rule's float64 floor."""
    check_parity("cpp", make_inputs(*shape), torch.float64, **SHARED_DOUT[mode])


@pytest.mark.parametrize("isa", ["brgemm", "avx512", "avx2", "default"])
@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: "B{}H{}L{}D{}S{}".format(*s))
def test_float32_every_isa_within_rule(isa, shape, monkeypatch):
    monkeypatch.setenv("AMAD_FAST_CPU_ISA", isa)
    if OPS.automask_cpu_isa() != isa:
        pytest.skip(f"this CPU cannot run {isa} (runs {OPS.automask_cpu_isa()})")
    assert_within_rule(shape, torch.float32)


@needs_bf16_units
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}H{}L{}D{}S{}".format(*s))
def test_bfloat16_on_16bit_units_within_rule(shape, monkeypatch):
    monkeypatch.delenv("AMAD_FAST_CPU_ISA", raising=False)
    assert OPS.automask_cpu_bf16_units()
    assert_within_rule(shape, torch.bfloat16)


@needs_bf16_units
def test_bfloat16_units_are_off_below_brgemm(monkeypatch):
    monkeypatch.setenv("AMAD_FAST_CPU_ISA", "avx512")
    assert not OPS.automask_cpu_bf16_units()
    assert_within_rule((1, 2, 100, 32, 4), torch.bfloat16)


@needs_bf16_units
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_library_path_is_thread_count_independent(dtype):
    inputs = make_inputs(2, 2, 150, 32, 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run("cpp", inputs, dtype, torch.float32)
        torch.set_num_threads(2)
        two = run("cpp", inputs, dtype, torch.float32)
    finally:
        torch.set_num_threads(before)
    for name in FIELDS + GRADS:
        assert torch.equal(one[name], two[name]), name


_CHILD = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_cpu_isa import assert_within_rule, OPS
assert not OPS.automask_cpu_bf16_units()
for shape in [(2, 2, 37, 16, 4), (1, 1, 300, 64, 2), (1, 2, 9, 6, 2)]:
    assert_within_rule(shape, torch.bfloat16)
print("ok")
"""


@pytest.mark.skipif(not HAS_BF16_UNITS, reason="CPU without AMX-BF16 (or ATen's oneDNN lacks the bfloat16 ukernel)")
def test_bfloat16_without_amx_keeps_float32_compute():
    """With oneDNN capped below AMX (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16, read once per process: a
    child process), ATen's brgemm has no bfloat16 ukernel (could_pack is false; its fallback ran at
    18-100 GFLOP/s here against 160-185 for float32): the kernels keep float32 compute, still
    within the rule. This is the path of CPUs with AVX-512-BF16 but no AMX."""
    # the child imports the same amad_fast as this process (the installed one under PYTHONSAFEPATH=1)
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX512_CORE_BF16")
    out = subprocess.run([sys.executable, "-c", _CHILD.format(tests=HERE)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
