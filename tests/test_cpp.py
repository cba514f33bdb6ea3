"""The C++ extension backend (``backend="cpp"``, ops ``torch.ops.amad_fast.automask_*``): what its
parity with the reference (tests/test_parity.py) does not cover: underflowing probabilities, the
backward's split of one long window, any strides, thread-count independence, every
instruction-set variant, opcheck, and input errors raised before any kernel runs."""
from __future__ import annotations

import os

import pytest
import torch

import amad_fast
from amad_fast import automask_attention
from amad_fast.attention.testing import FLOAT64_FLOOR, NAMES, Floor, assert_parity, make_inputs, run

_STATUS = amad_fast.available_backends()["cpp"]
if not _STATUS.available:
    if os.environ.get("AMAD_FAST_SKIP_EXTENSION", "0") in ("1", "true", "yes"):
        pytest.skip(f"cpp backend deliberately not built: {_STATUS.reason}", allow_module_level=True)
    raise RuntimeError(f"cpp backend unavailable ({_STATUS.reason}); build it or set AMAD_FAST_SKIP_EXTENSION=1")

OPS = torch.ops.amad_fast


def test_float64_parity_when_probabilities_underflow():
    """Scores of magnitude ~1e3: most probabilities underflow to 0; kl and grads stay finite and exact."""
    inputs = make_inputs(1, 2, 64, 16, 2, q_scale=40.0)
    ref = run("reference", inputs)
    assert_parity(run("cpp", inputs), ref, ref, FLOAT64_FLOOR, "cpp")  # finite, and within 1e-9


def test_any_strides_give_identical_results():
    inputs = make_inputs(2, 3, 37, 16, 4)
    base = run("cpp", inputs)
    # (B, L, H, D) storage seen as (B, H, L, D), and parameters behind transposes
    strided = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in inputs[:3]]
    f = inputs[3].transpose(0, 2).contiguous().transpose(0, 2)
    w = inputs[4].t().contiguous().t()
    mix = torch.stack([inputs[5], inputs[5]], 1)[:, 0]
    assert not strided[0].is_contiguous() and not f.is_contiguous() and not mix.is_contiguous()
    other = run("cpp", strided + [f, w, mix])
    for name in NAMES:
        assert torch.equal(base[name], other[name]), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_thread_count_does_not_change_results(dtype):
    inputs = make_inputs(2, 2, 150, 32, 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run("cpp", inputs, dtype)
        torch.set_num_threads(2)
        two = run("cpp", inputs, dtype)
    finally:
        torch.set_num_threads(before)
    for name in NAMES:
        assert torch.equal(one[name], two[name]), name


def test_single_head_long_window_splits_work_deterministically():
    """B·H = 1: the backward splits the row blocks; still exact and thread-count independent."""
    inputs = make_inputs(1, 1, 700, 16, 2)
    ref = run("reference", inputs)
    assert_parity(run("cpp", inputs), ref, ref, FLOAT64_FLOOR, "cpp")


@pytest.mark.parametrize("update", ["in_place", "through_data"])
def test_modulation_tables_follow_parameter_updates(update):
    """The CPU kernels keep recently built modulation tables keyed by the parameters' values: after
    freqs and weights change in place (an optimizer step, or a write through .data that leaves the
    version counter alone) the next call must use the new values, not the tables of the old ones."""
    inputs = make_inputs(1, 2, 40, 8, 3)
    run("cpp", inputs)  # builds (and keeps) the tables of these freqs and weights
    f, w = inputs[3], inputs[4]
    with torch.no_grad():
        (f if update == "in_place" else f.data).mul_(1.5).add_(0.05)
        (w if update == "in_place" else w.data).mul_(-2.0)
    ref = run("reference", inputs)
    assert_parity(run("cpp", inputs), ref, ref, FLOAT64_FLOOR, "cpp after a parameter update")


@pytest.mark.parametrize("isa", ["avx2", "default"])
def test_every_instruction_set_variant_agrees(isa, monkeypatch):
    """AMAD_FAST_CPU_ISA lowers the kernels' instruction set: the fallbacks are exact too."""
    inputs = make_inputs(1, 2, 45, 24, 3)
    best = run("cpp", inputs)
    monkeypatch.setenv("AMAD_FAST_CPU_ISA", isa)
    assert OPS.automask_cpu_isa() in (isa, "default")
    assert_parity(run("cpp", inputs), best, best, Floor(rtol=1e-12), f"cpp with {isa}")


def test_fields_not_asked_for_are_none_and_partial_gradients_work():
    q, k, v, f, w, m = make_inputs(1, 2, 20, 8, 2, requires_grad=True)
    r = automask_attention(q, k, v, f, w, m, backend="cpp")
    assert r.kl_local is None and r.kl_global is None and r.out_local is None and r.out_global is None
    r.out.sum().backward()  # only `out` reaches the loss: the other cotangents are absent
    q2, k2, v2, f2, w2, m2 = [x.detach().clone().requires_grad_() for x in (q, k, v, f, w, m)]
    automask_attention(q2, k2, v2, f2, w2, m2, backend="reference").out.sum().backward()
    for a, b in zip((q, k, v, f, w, m), (q2, k2, v2, f2, w2, m2)):
        assert (a.grad - b.grad).abs().max() <= 1e-9 * b.grad.abs().max()


def test_double_backward_is_refused_clearly():
    q, k, v, f, w, m = make_inputs(1, 1, 8, 4, 1, requires_grad=True)
    r = automask_attention(q, k, v, f, w, m, backend="cpp")
    (gq,) = torch.autograd.grad(r.out.square().sum(), q, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gq.sum().backward()


def _op_samples():
    samples = []
    for need_div, shape in ((True, (1, 2, 9, 8, 2)), (False, (2, 1, 5, 4, 1))):
        args = make_inputs(*shape, dtype=torch.float32, requires_grad=True)
        samples.append(args + [0.3, need_div])
    # all three masks: padding, causality and a (B·H, L, L) bias with a −inf entry
    args = make_inputs(2, 1, 5, 4, 1, dtype=torch.float32, requires_grad=True)
    bias = torch.randn(2, 5, 5)
    bias[0, 3, 1] = float("-inf")
    samples.append(args + [0.3, True, torch.tensor([[False] * 4 + [True], [False] * 5]), True, bias])
    # without the branch outputs (empty on the CPU), with and without masks
    samples.append(make_inputs(1, 2, 9, 8, 2, dtype=torch.float32, requires_grad=True)
                   + [0.3, True, None, False, None, False])
    samples.append(args + [0.3, False, torch.tensor([[False] * 4 + [True], [False] * 5]), True, bias, False])
    return samples


@pytest.mark.skipif(not hasattr(torch.library, "opcheck"), reason="torch.library.opcheck needs torch >= 2.4")
def test_opcheck_forward_op():
    for args in _op_samples():
        torch.library.opcheck(OPS.automask_forward.default, tuple(args))


@pytest.mark.skipif(not hasattr(torch.library, "opcheck"), reason="torch.library.opcheck needs torch >= 2.4")
def test_opcheck_backward_op():
    q, k, v, f, w, m = make_inputs(1, 2, 9, 8, 2, dtype=torch.float32)
    fwd = OPS.automask_forward(q, k, v, f, w, m, 0.3, True)
    g, gkl = torch.randn_like(q), torch.randn(q.shape[:3])
    args = (g, None, g, gkl, None, q, k, v, f, w, m, *fwd[1:], 0.3)
    torch.library.opcheck(OPS.automask_backward.default, args)
    # a forward without the branch outputs: they come back empty, and the backward takes no gradient for them
    fwd = OPS.automask_forward(q, k, v, f, w, m, 0.3, True, None, False, None, False)
    assert fwd[1].numel() == 0 and fwd[2].numel() == 0
    torch.library.opcheck(OPS.automask_backward.default, (g, None, None, gkl, None, q, k, v, f, w, m, *fwd[1:], 0.3))
    with pytest.raises(RuntimeError, match="a branch output gradient came but the forward ran with need_branches=False"):
        OPS.automask_backward(g, g, None, gkl, None, q, k, v, f, w, m, *fwd[1:], 0.3)


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda a: a.__setitem__(1, a[1][:, :, :-1]), ValueError, "k: expected shape"),
        (lambda a: a.__setitem__(2, a[2].float()), TypeError, "v: expected dtype"),
        (lambda a: a.__setitem__(0, a[0].long()), TypeError, "q: expected a floating-point tensor"),
        (lambda a: a.__setitem__(3, a[3][:, :, :-1]), ValueError, "freqs: expected shape"),
        (lambda a: a.__setitem__(5, a[5][:1]), ValueError, "mix: expected shape"),
    ],
    ids=["k-shape", "v-dtype", "q-int", "freqs-shape", "mix-shape"],
)
def test_bad_inputs_raise_before_the_kernel(mutate, error, match):
    args = make_inputs(1, 2, 6, 8, 2)
    mutate(args)
    with pytest.raises(error, match=match):
        automask_attention(*args, backend="cpp")


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.__setitem__(1, a[1][:, :, :-1]), "k: expected shape"),
        (lambda a: a.__setitem__(2, a[2].float()), "k, v: expected dtype"),
        (lambda a: [a.__setitem__(i, a[i][..., :6]) for i in range(3)], "freqs: expected shape"),
        (lambda a: a.__setitem__(4, a[4][:, :1]), "weights: expected shape"),
        (lambda a: a.__setitem__(5, a[5].float()), "weights, mix: expected dtype"),
        (lambda a: [a.__setitem__(i, a[i].long()) for i in range(3)], "q: expected dtype float16"),
        (lambda a: [a.__setitem__(i, a[i][..., :5]) for i in range(3)], "even head dim"),
        (lambda a: a.__setitem__(6, -1.0), "scale: expected a finite positive float"),
    ],
    ids=["k-shape", "v-dtype", "D-mismatch", "weights-shape", "mix-dtype", "int", "odd-D", "scale"],
)
def test_direct_op_calls_check_their_inputs(mutate, match):
    args = make_inputs(1, 2, 6, 8, 2) + [0.5, True]
    mutate(args)
    with pytest.raises(RuntimeError, match=match):
        OPS.automask_forward(*args)


@pytest.mark.parametrize(
    "bias, match",
    [
        (torch.zeros(1, 6, 6, dtype=torch.float32), "attn_bias: expected dtype Double"),
        (torch.zeros(6, 6, dtype=torch.float64), r"attn_bias: expected shape \(1, L, L\) or \(B·H, L, L\)"),
        (torch.zeros(3, 6, 6, dtype=torch.float64), r"attn_bias: expected shape \(1, L, L\) or \(B·H, L, L\)"),
    ],
    ids=["dtype", "2d", "wrong-batch-heads"],
)
def test_direct_op_calls_check_the_attn_bias(bias, match):
    """The bias comes in the dtype scores are formed in (float64 here), (1, L, L) or (B·H, L, L)."""
    args = make_inputs(1, 2, 6, 8, 2) + [0.5, True, None, False, bias]
    with pytest.raises(RuntimeError, match=match):
        OPS.automask_forward(*args)


def test_backward_op_refuses_kl_gradient_without_kl():
    q, k, v, f, w, m = make_inputs(1, 1, 5, 4, 1)
    fwd = OPS.automask_forward(q, k, v, f, w, m, 0.5, False)
    with pytest.raises(RuntimeError, match="need_divergence=False"):
        OPS.automask_backward(None, None, None, torch.ones(1, 1, 5, dtype=q.dtype), None, q, k, v, f, w, m,
                              *fwd[1:], 0.5)


def test_unsupported_inputs_are_named():
    backend = amad_fast.attention.dispatch.BACKENDS["cpp"]
    q = torch.empty(1, 1, 2, 2, device="meta")
    assert "device" in backend.unsupported_reason(q, torch.empty(1, 1, 1), None)
    assert backend.unsupported_reason(torch.empty(1, 1, 2, 2), torch.empty(1, 1, 1), None) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_cpu_finds_every_non_finite_value(dtype, bad):
    """The input check's raw-bit scan (all_finite_cpu) against torch.isfinite: a non-finite value
    first, last, inside a partial chunk, behind a transpose (dense, scanned in storage order) or in a
    slice with gaps (not dense: aminmax), and the largest finite values, which it must pass."""
    base = torch.randn(3, 70, 5, dtype=torch.float32).to(dtype)
    cases = [base, base.transpose(0, 2), base[:, ::3], torch.full((7,), torch.finfo(dtype).max, dtype=dtype),
             -torch.full((7,), torch.finfo(dtype).max, dtype=dtype), base.new_empty(0)]
    for flat in (0, base.numel() - 1, 1049):
        x = base.clone()
        x.view(-1)[flat] = bad
        cases += [x, x.transpose(0, 2), x[:, ::3], x[:, flat // 5 % 70 :: 70]]
    got = OPS.all_finite_cpu(cases)
    want = [bool(torch.isfinite(c).all()) for c in cases]
    assert got == want
    assert not all(want) and any(want)  # the cases hold both kinds
