"""The fused Triton backend: what its parity with the reference (tests/test_parity.py) does not
cover: δ taken from the forward, optional outputs, a deterministic backward, underflowing
probabilities, inputs refused before any launch, opcheck, torch.compile, the byte model and the
compile for Hopper. Parity is the rule of amad_fast.attention.testing (fused_floor).

Without a GPU the kernels run on Triton's CPU interpreter (tests/conftest.py sets TRITON_INTERPRET=1
before Triton is imported); the shapes are small to keep the interpreter's time small.
"""
import os

if os.environ.get("TRITON_INTERPRET") is None:  # conftest normally does this; keep the module standalone
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import dataclasses
import math

import pytest
import torch

pytest.importorskip("triton")

import amad_fast  # noqa: E402
from amad_fast.attention.backends import triton as triton_backend  # noqa: E402
from amad_fast.kernels import automask as km  # noqa: E402
from amad_fast.attention.testing import (  # noqa: E402
    NAMES, check_parity, fused_floor, make_inputs, run,
)

DEVICE = "cuda" if torch.cuda.is_available() and not km.INTERPRETED else "cpu"


def _check(inputs, floor=None, **run_kw):
    """The Triton kernels in float32 under the parity rule, with fused_floor unless ``floor``."""
    check_parity("triton", inputs, torch.float32, floor=floor or fused_floor(torch.float32), device=DEVICE, **run_kw)


def test_fp32_parity_with_delta_from_the_forward(monkeypatch):
    """The cheaper δ = dO·O + dkl·kl (AMAD_TRITON_DELTA=forward) keeps the parity rule too."""
    monkeypatch.setattr(km, "RECOMPUTE_DELTA", False)
    _check(make_inputs(1, 3, 100, 64, 4, strided=True))


@pytest.mark.parametrize("need_divergence,need_branches", [(False, False), (True, False), (False, True)])
def test_optional_outputs(need_divergence, need_branches):
    inputs = make_inputs(2, 1, 70, 16, 2, seed=2)
    r = amad_fast.automask_attention(*[x.float().to(DEVICE) for x in inputs], need_divergence=need_divergence,
                                     need_branches=need_branches, backend="triton")
    assert (r.kl_local is None) == (not need_divergence) and (r.kl_global is None) == (not need_divergence)
    assert (r.out_local is None) == (not need_branches) and (r.out_global is None) == (not need_branches)
    _check(inputs, need_divergence=need_divergence, need_branches=need_branches)


def test_backward_is_deterministic():
    inputs = make_inputs(1, 2, 90, 16, 2, seed=3)
    a, b = (run("triton", inputs, torch.float32, device=DEVICE) for _ in range(2))
    for name in NAMES:
        assert torch.equal(a[name], b[name]), name


#: at |A| ~ 1e3, the extra relative floor of dfreqs and dweights (test below)
UNDERFLOW_RTOL = {"dfreqs": 2e-3, "dweights": 2e-3}


@pytest.mark.parametrize("recompute_delta", [
    True,
    pytest.param(False, marks=pytest.mark.xfail(strict=True, reason=(
        "δ = dO·O (AMAD_TRITON_DELTA=forward) at underflowing scores: on the draw of make_inputs(1, 2, 40, "
        "16, 1, seed=4) dweights is 3.2e-2 off (relative), the float32 reference 1.6e-3, beyond the 2e-3 "
        "floor; the 9e-4 measured before was one other draw"))),
])
def test_divergence_stays_finite_when_probabilities_underflow(monkeypatch, recompute_delta):
    """Scores of order 1e3 drive P^M, P^G to exact zeros; log-space KL keeps values and grads finite.

    Outputs and dq, dk, dv, dmix keep the parity rule. dfreqs and dweights are sums of B·L·P terms
    each as accurate as the reference's, but at |A| ~ 1e3 those terms are large and cancel, and
    the reference cancels its round-off better: their floor has 2e-3 relative here instead of the
    summed gradients' 1e-5 (measured: 2e-4 with δ recomputed from the kernels' own P·dP, 9e-4 with
    δ = dO·O; a single fp32 lse gave 8e-3).
    """
    monkeypatch.setattr(km, "RECOMPUTE_DELTA", recompute_delta)
    inputs = make_inputs(1, 2, 40, 16, 1, seed=4)
    inputs[0], inputs[1] = inputs[0] * 30, inputs[1] * 30
    _check(inputs, floor=dataclasses.replace(fused_floor(torch.float32), rtol_for=UNDERFLOW_RTOL))
    got, exact = run("triton", inputs, torch.float32, device=DEVICE), run("reference", inputs)
    reached = (got["kl_local"] == 0).any() or (got["kl_global"] == 0).any() or (exact["kl_local"] < 1e-30).any()
    assert reached, "the inputs do not reach the underflow regime"
    js = 0.5 * (got["kl_local"] + got["kl_global"])
    assert (js >= -1e-6).all() and (js <= math.log(2) + 1e-6).all()


def _bad(**change):
    xs = make_inputs(1, 2, 8, 16, 2, dtype=torch.float32, device=DEVICE)
    xs = dict(zip(("q", "k", "v", "freqs", "weights", "mix"), xs))
    xs.update(change)
    return xs


class _NoLaunch:
    def __getitem__(self, grid):
        raise AssertionError("a kernel was launched for inputs that should have been refused")


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(q=torch.zeros(1, 2, 8, 24), k=torch.zeros(1, 2, 8, 24), v=torch.zeros(1, 2, 8, 24),
              freqs=torch.zeros(2, 2, 12)), "head dim"),
        (dict(freqs=torch.zeros(2, 17, 8), weights=torch.zeros(2, 17)), "scales"),
        (dict(q=torch.zeros(1, 2, 8, 16, dtype=torch.float64), k=torch.zeros(1, 2, 8, 16, dtype=torch.float64),
              v=torch.zeros(1, 2, 8, 16, dtype=torch.float64)), "dtype"),
        (dict(k=torch.zeros(1, 2, 9, 16)), "k: expected shape"),
    ],
)
def test_bad_inputs_are_refused_before_any_launch(monkeypatch, change, match):
    for kernel in ("_fwd", "_bwd_dkdv", "_bwd_dq"):
        monkeypatch.setattr(km, kernel, _NoLaunch())
    xs = _bad(**{n: t.to(DEVICE) for n, t in change.items()})
    with pytest.raises((RuntimeError, ValueError, TypeError), match=match):
        amad_fast.automask_attention(**xs, backend="triton")


@pytest.mark.skipif(not km.INTERPRETED, reason="interpreter-only refusal")
def test_bfloat16_refused_under_interpreter():
    xs = _bad(**{n: torch.zeros(1, 2, 8, 16, dtype=torch.bfloat16) for n in "qkv"})
    with pytest.raises(RuntimeError, match="bfloat16"):
        amad_fast.automask_attention(**xs, backend="triton")


def test_declaration_states_the_kernel_limits_and_is_available():
    support = triton_backend.TritonBackend().support()
    assert [d for d in range(2, 514, 2) if support.head_dims.admits(d)] == [16, 32, 64, 128]
    assert support.max_scales == 16 and not support.dropout
    status = amad_fast.available_backends()["triton"]
    assert status.available, status.reason


def test_custom_ops_pass_opcheck_and_fake_shapes():
    q, k, v, f, w, m = make_inputs(2, 2, 20, 16, 2, seed=5, dtype=torch.float32, device=DEVICE)
    grad = [t.clone().requires_grad_() for t in (q, k, v, f, w, m)]
    for nd in (True, False):
        torch.library.opcheck(km.automask_fwd_op, (*grad, 0.25, nd, True))
    torch.library.opcheck(km.automask_fwd_op, (q, k, v, f, w, m, 0.25, False, False))
    bias = torch.randn(4, 20, 20, device=DEVICE).masked_fill(torch.rand(4, 20, 20, device=DEVICE) < 0.2, float("-inf"))
    padded = torch.arange(20, device=DEVICE)[None, :] >= torch.tensor([20, 12], device=DEVICE)[:, None]
    for masks in ((padded, True, bias), (None, False, bias[:1])):  # (B·H, L, L) and (1, L, L) biases
        torch.library.opcheck(km.automask_fwd_op, (*grad, 0.25, True, True, *masks))
    out = km.automask_fwd_op(q, k, v, f, w, m, 0.25, True, True)
    dout = torch.randn_like(q)
    torch.library.opcheck(km.automask_bwd_op, (dout, None, None, None, None, q, k, v, f, w, m, *out[1:], 0.25))

    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    fakes = [mode.from_tensor(t) for t in (q, k, v, f, w, m)]
    for nd, sb in ((True, True), (False, False)):
        real = km.automask_fwd_op(q, k, v, f, w, m, 0.25, nd, sb)
        with mode:
            fake = km.automask_fwd_op(*fakes, 0.25, nd, sb)
        assert [(tuple(t.shape), t.dtype) for t in fake] == [(tuple(t.shape), t.dtype) for t in real]


@pytest.mark.skipif(not amad_fast.available_backends()["cpp"].available, reason="needs the C++ extension")
def test_op_takes_the_raw_mix_like_the_cpp_op():
    """One contract: both ops take the mixup logit m (not λ = sigmoid(m)) and return dmix."""
    xs = make_inputs(1, 2, 20, 16, 2, seed=7, dtype=torch.float32, device=DEVICE, requires_grad=True)
    got = km.automask_fwd_op(*xs, 0.25, True, True)
    want = torch.ops.amad_fast.automask_forward(*[x.cpu() for x in xs], 0.25, True)
    for a, b in zip(got[:5], want[:5]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-6)
    dmix, = torch.autograd.grad(got[0].sum(), xs[5])
    dmix_cpp, = torch.autograd.grad(want[0].sum(), xs[5])
    torch.testing.assert_close(dmix.cpu(), dmix_cpp, rtol=1e-5, atol=1e-6)


def test_torch_compile_fullgraph_matches_eager():
    xs = make_inputs(2, 2, 24, 16, 2, seed=6, dtype=torch.float32, device=DEVICE, requires_grad=True)

    def loss(q, k, v, f, w, m):
        r = amad_fast.automask_attention(q, k, v, f, w, m, need_divergence=True, need_branches=True, backend="triton")
        return (r.out ** 2).sum() + r.js.sum() + r.out_local.sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    a = compiled(*xs)
    ga = torch.autograd.grad(a, xs)
    b = loss(*xs)
    gb = torch.autograd.grad(b, xs)
    assert torch.allclose(a, b)
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y)


def test_torch_compile_fullgraph_in_a_fresh_process():
    """The first call under torch.compile imports the kernels inside the traced frame; it must not
    break the graph (a sys.modules lookup in the adapter once did)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import torch, amad_fast, sys
        from amad_fast.attention.testing import make_inputs
        assert "amad_fast.kernels.automask" not in sys.modules
        xs = make_inputs(1, 2, 12, 16, 2, dtype=torch.float32, device="%s", requires_grad=True)
        def loss(*xs):
            r = amad_fast.automask_attention(*xs, need_divergence=True, backend="triton")
            return r.out.sum() + r.js.sum()
        torch.compile(loss, fullgraph=True)(*xs).backward()  # inductor
        assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in xs)
        """
        % DEVICE
    )
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_kernels_compile_for_hopper_without_a_gpu():
    """Every kernel variant goes through the real compiler down to ptxas (sm_90) in a process where
    Triton is not interpreted: the interpreter does not enforce tl.dot shapes, constexpr and
    loop-carried types."""
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    code = ("from amad_fast.kernels.launch import aot_compile\n"
            "for dt in ('fp32', 'bf16'):\n"
            "    r = aot_compile(90, dt, head_dim=16, scales=2, block_m=16, block_n=32)  # M != N: catches shape-changing loop-carried names\n"
            "    print(dt, r)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("dq kl=True") == 2, proc.stdout
