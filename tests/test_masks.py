"""Attention masks (key_padding_mask, attn_mask, is_causal): the reference against an independent
dense computation, the fused kernels (Triton, and the cpp backend's CPU kernels on each instruction
set path) against the reference under the parity rule, dispatch, the module inside torch's
transformer layers, and every bad mask.

Without a GPU the Triton cases run on Triton's CPU interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before Triton is imported), on small shapes: it is slow.
"""
import importlib.util
import math
import types

import pytest
import torch
from torch import nn

from amad_fast import AutoMaskAttention, automask_attention
from amad_fast.attention import testing
from amad_fast.attention.dispatch import BACKENDS, select_backend
from amad_fast.attention.reference import automask_attention_reference
from amad_fast.attention.backends.base import Backend, Support
from amad_fast.attention.validation import MASK_KINDS, NO_MASKS, check_inputs, check_masks

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed")
CPP_MISSING = BACKENDS["cpp"].availability()
needs_cpp = pytest.mark.skipif(CPP_MISSING is not None, reason=f"cpp: {CPP_MISSING}")


def padding(lengths, L):
    """(B, L) bool key padding mask: True past each sequence's length."""
    return torch.arange(L)[None, :] >= torch.tensor(lengths)[:, None]


def random_bool_mask(shape, seed, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) < p


def random_float_mask(shape, seed):
    """An additive mask: N(0, 1) biases with about a fifth of the entries −inf."""
    g = torch.Generator().manual_seed(seed)
    bias = torch.randn(shape, generator=g, dtype=torch.float64)
    return bias.masked_fill(torch.rand(shape, generator=g) < 0.2, float("-inf"))


# ----------------------------------------------------------------------------------------------
# An independent dense computation: each query row over its allowed keys only
# ----------------------------------------------------------------------------------------------


def dense_masked(q, k, v, freqs, weights, mix, allowed, bias):
    """Spec §1 row by row, the softmaxes and KL sums taken over the allowed keys of the row (a row
    with none gives zeros). allowed (B, H, L, L) bool; bias (B, H, L, L) float added to the scores."""
    B, H, L, D = q.shape
    P = D // 2
    pos = torch.arange(L, dtype=q.dtype)
    angle = freqs[:, :, None, :] * pos[None, None, :, None]  # (H, S, L, P)
    c = (weights[:, :, None, None] * torch.cos(angle)).sum(1)
    s = (weights[:, :, None, None] * torch.sin(angle)).sum(1)

    def embed(x):
        return torch.cat((x[..., :P] * c - x[..., P:] * s, x[..., :P] * s + x[..., P:] * c), -1)

    qm, km = embed(q), embed(k)
    lam = torch.sigmoid(mix)
    out, out_l, out_g, kl_l, kl_g = [], [], [], [], []
    for b in range(B):
        for h in range(H):
            for i in range(L):
                keys = allowed[b, h, i].nonzero().flatten()
                if keys.numel() == 0:
                    zero_row = (q[b, h, i] * 0).detach()
                    for lst, val in ((out, zero_row), (out_l, zero_row), (out_g, zero_row)):
                        lst.append(val)
                    kl_l.append(q.new_zeros(()))
                    kl_g.append(q.new_zeros(()))
                    continue
                a = (qm[b, h, i] @ km[b, h, keys].T) / math.sqrt(D) + bias[b, h, i, keys]
                g = (q[b, h, i] @ k[b, h, keys].T) / math.sqrt(D) + bias[b, h, i, keys]
                pl, pg = torch.softmax(a, 0), torch.softmax(g, 0)
                anchor = (0.5 * (pl + pg)).detach()
                out_l.append(pl @ v[b, h, keys])
                out_g.append(pg @ v[b, h, keys])
                out.append(lam[h] * out_l[-1] + (1 - lam[h]) * out_g[-1])
                kl_l.append((pl * (pl.log() - anchor.log())).sum())
                kl_g.append((pg * (pg.log() - anchor.log())).sum())

    def rows(lst, *shape):
        return torch.stack(lst).reshape(*shape)

    return dict(out=rows(out, B, H, L, D), kl_local=rows(kl_l, B, H, L), kl_global=rows(kl_g, B, H, L),
                out_local=rows(out_l, B, H, L, D), out_global=rows(out_g, B, H, L, D))


def dense_allowed_and_bias(B, H, L, key_padding_mask=None, attn_mask=None, is_causal=False):
    allowed = torch.ones(B, H, L, L, dtype=torch.bool)
    bias = torch.zeros(B, H, L, L, dtype=torch.float64)
    if key_padding_mask is not None:
        allowed &= ~key_padding_mask[:, None, None, :]
    if is_causal:
        allowed &= torch.ones(L, L, dtype=torch.bool).tril()
    if attn_mask is not None:
        full = attn_mask.expand(B * H, L, L).reshape(B, H, L, L) if attn_mask.dim() == 2 else attn_mask.view(B, H, L, L)
        if full.dtype == torch.bool:
            allowed &= ~full
        else:
            allowed &= full != float("-inf")
            bias = full.masked_fill(full == float("-inf"), 0.0)
    return allowed, bias


B, H, L, D, S = 2, 2, 7, 4, 3


def mask_cases(L=L, B=B, H=H):
    """(label, masks) covering every kind, their combinations and fully masked rows."""
    no_row_0 = torch.zeros(L, L, dtype=torch.bool)
    no_row_0[0] = True
    return [
        ("padding", dict(key_padding_mask=padding([L - 3, L], L))),
        ("padding_whole_sequence", dict(key_padding_mask=padding([0, 2], L))),
        ("causal", dict(is_causal=True)),
        # leading padding under causal: the first rows have no allowed key
        ("causal_leading_padding", dict(key_padding_mask=padding([L - 2, L], L).flip(1), is_causal=True)),
        ("bool_2d", dict(attn_mask=random_bool_mask((L, L), 1) | no_row_0)),
        ("bool_3d", dict(attn_mask=random_bool_mask((B * H, L, L), 2))),
        ("float_2d", dict(attn_mask=random_float_mask((L, L), 3))),
        ("float_3d_padding_causal", dict(attn_mask=random_float_mask((B * H, L, L), 4).masked_fill(
            torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf")), key_padding_mask=padding([L, 4], L),
            is_causal=True)),
    ]


def run_masked(backend, inputs, masks, dtype=None, device="cpu", **run_kw):
    """testing.run (outputs and the six gradients under its fixed cotangents) with masks added;
    run_kw: which outputs are formed and get gradients (testing.run)."""
    masks = {name: (m.to(device) if isinstance(m, torch.Tensor) else m) for name, m in masks.items()}

    def masked_call(*args, **kwargs):
        return automask_attention(*args, **kwargs, backend=backend, **masks)

    return testing.run(masked_call, inputs, dtype, device=device, **run_kw)


def rel_err(a, b, natural_scale=0.0):
    """max |a − b| / max(max |b|, natural_scale) in float64."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(max(natural_scale, 1e-300))).item()


@pytest.mark.parametrize("label, masks", mask_cases(), ids=[c[0] for c in mask_cases()])
def test_reference_float64_equals_dense_masked_computation(label, masks):
    inputs = testing.make_inputs(B, H, L, D, S, seed=11)
    got = run_masked("reference", inputs, masks)
    xs = [x.detach().clone().requires_grad_() for x in inputs]
    allowed, bias = dense_allowed_and_bias(B, H, L, **masks)
    dense = dense_masked(*xs, allowed, bias)
    g = torch.Generator().manual_seed(1)  # testing.cotangents, in FIELDS order
    loss = sum((dense[name] * torch.randn(dense[name].shape, generator=g, dtype=torch.float64)).sum()
               for name in testing.FIELDS)
    loss.backward()
    dense.update({name: x.grad for name, x in zip(testing.GRADS, xs)})
    for name in testing.FIELDS + testing.GRADS:
        assert torch.isfinite(got[name]).all(), name
        err = rel_err(got[name], dense[name].detach(), testing.NATURAL_SCALE.get(name, 0.0))
        assert err < 1e-12, f"{label} {name}: {err:.2e}"
    empty = ~allowed.any(-1)
    if empty.any():  # rows with no allowed key: zeros, not NaN
        assert (got["out"][empty] == 0).all() and (got["kl_local"][empty] == 0).all()
        assert (got["out_global"][empty] == 0).all() and (got["kl_global"][empty] == 0).all()


@pytest.mark.parametrize("label, masks", mask_cases(), ids=[c[0] for c in mask_cases()])
def test_reference_float32_is_close_to_float64(label, masks):
    inputs = testing.make_inputs(B, H, L, D, S, seed=12)
    exact = run_masked("reference", inputs, masks)
    got = run_masked("reference", inputs, masks, dtype=torch.float32)
    for name in testing.FIELDS + testing.GRADS:
        assert torch.isfinite(got[name]).all(), name
        err = rel_err(got[name], exact[name], testing.NATURAL_SCALE.get(name, 0.0))
        assert err < 1e-5, f"{label} {name}: {err:.2e}"


def test_unmasked_reference_is_unchanged_by_empty_masks():
    inputs = testing.make_inputs(B, H, L, D, S, seed=13)
    plain = run_masked("reference", inputs, {})
    none_padded = run_masked("reference", inputs, dict(key_padding_mask=torch.zeros(B, L, dtype=torch.bool)))
    zero_bias = run_masked("reference", inputs, dict(attn_mask=torch.zeros(L, L, dtype=torch.float64)))
    for name in testing.FIELDS + testing.GRADS:
        torch.testing.assert_close(none_padded[name], plain[name], rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(zero_bias[name], plain[name], rtol=1e-13, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# The fused kernels against the float64 reference (the parity rule of amad_fast.attention.testing)
# ----------------------------------------------------------------------------------------------

FUSED_CASES = [
    # (label, L, masks): L = 37 fits one key block of Triton's fixed config (32 x 64) and one row
    # block of the CPU kernels (64 rows), L = 80 neither
    ("padding_single_block", 37, dict(key_padding_mask=padding([23, 37], 37))),
    ("padding_multi_block", 80, dict(key_padding_mask=padding([80, 45], 80))),
    ("causal_single_block", 37, dict(is_causal=True)),
    ("causal_multi_block", 80, dict(is_causal=True)),
    # leading padding under causal: the first 40 rows of the first sequence have no allowed key
    ("padding_causal_empty_rows", 80, dict(key_padding_mask=padding([40, 75], 80).flip(1), is_causal=True)),
    ("padding_whole_sequence", 37, dict(key_padding_mask=padding([0, 30], 37))),
]


def _with_masked_rows(mask, rows):
    """A bool attn_mask (L, L) or (B·H, L, L) with every key of the given query rows masked."""
    mask = mask.clone()
    mask[..., rows, :] = True
    return mask


def _future_blocked(mask):
    """An attn_mask that also blocks every future key (j > i), as is_causal=True requires of it."""
    future = torch.ones(mask.shape[-2:], dtype=torch.bool).triu(1)
    return mask | future if mask.dtype == torch.bool else mask.masked_fill(future, float("-inf"))


def _large_bias(L, seed):
    """An additive (L, L) attn_mask of large finite biases, uniform in [−30, 30]."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(L, L, generator=g, dtype=torch.float64) * 2 - 1) * 30


# four row blocks of the CPU kernels: under causal the later blocks attend more keys than the first;
# attn_mask cases at lengths off the row block (64) and the row padding (16), each kind of bias
CPP_CASES = FUSED_CASES + [
    ("causal_four_blocks", 200, dict(is_causal=True)),
    ("padding_causal_four_blocks", 200, dict(key_padding_mask=padding([200, 130], 200), is_causal=True)),
    ("attn_bool_2d_masked_rows", 80, dict(attn_mask=_with_masked_rows(random_bool_mask((80, 80), 11), [0, 70]))),
    ("attn_bool_3d", 37, dict(attn_mask=_with_masked_rows(random_bool_mask((4, 37, 37), 12), [5]))),
    ("attn_float_2d", 80, dict(attn_mask=random_float_mask((80, 80), 13))),
    ("attn_float_3d_padding_causal", 200, dict(attn_mask=_future_blocked(random_float_mask((4, 200, 200), 14)),
                                                key_padding_mask=padding([200, 130], 200), is_causal=True)),
    ("attn_bool_3d_leading_padding_causal", 80, dict(attn_mask=_future_blocked(random_bool_mask((4, 80, 80), 15)),
                                                     key_padding_mask=padding([50, 80], 80).flip(1),
                                                     is_causal=True)),
    ("attn_large_bias_padding", 80, dict(attn_mask=_large_bias(80, 16), key_padding_mask=padding([80, 33], 80))),
]


def _attn_mask_cases():
    """(label, L, masks) with an attn_mask: bool and float, (L, L) and (B·H, L, L), −inf entries,
    rows it blocks entirely, combined with padding and causal, large finite biases."""
    bool_2d = random_bool_mask((37, 37), 31)
    bool_2d[0] = True  # row 0 has no allowed key
    bool_3d = random_bool_mask((4, 80, 80), 32)
    bool_3d[1, 70] = True  # a row past the first key and query blocks, blocked in one b·h only
    float_3d = random_float_mask((4, 80, 80), 34)
    float_3d[3, 5] = float("-inf")
    future = torch.ones(80, 80, dtype=torch.bool).triu(1)
    g = torch.Generator().manual_seed(36)
    large = (torch.rand((4, 80, 80), generator=g, dtype=torch.float64) * 60 - 30).masked_fill(
        torch.rand((4, 80, 80), generator=g) < 0.1, float("-inf"))  # uniform in [−30, 30]
    return [
        ("attn_bool_2d_empty_row", 37, dict(attn_mask=bool_2d)),
        ("attn_bool_3d_empty_row", 80, dict(attn_mask=bool_3d)),
        ("attn_float_2d", 37, dict(attn_mask=random_float_mask((37, 37), 33))),
        ("attn_float_2d_multi_block", 80, dict(attn_mask=random_float_mask((80, 80), 35))),
        ("attn_float_3d_empty_row", 80, dict(attn_mask=float_3d)),
        ("attn_float_3d_padding_causal", 80, dict(attn_mask=random_float_mask((4, 80, 80), 37).masked_fill(
            future, float("-inf")), key_padding_mask=padding([80, 45], 80).flip(1), is_causal=True)),
        ("attn_bool_2d_padding_single_block", 37, dict(attn_mask=bool_2d, key_padding_mask=padding([23, 37], 37))),
        ("attn_float_large_30", 80, dict(attn_mask=large)),
    ]


#: L = 37 and 80 are not multiples of Triton's fixed tile (32 x 64): partial tiles of the bias
ATTN_MASK_CASES = _attn_mask_cases()


def _triton_device():
    from amad_fast.kernels import limits

    return "cuda" if torch.cuda.is_available() and not limits.interpreted() else "cpu"


def check_masked_parity(backend, label, length, masks, dtype, **run_kw):
    """The rule on one draw of (2, 2, length, 16, 2) with masks: float32 against the float32
    reference (Triton under the fused kernels' floor, cpp under the C++ kernels' as in
    tests/test_parity.py), float64 against the float64 reference itself; every output and gradient
    finite, and padded keys get exactly zero gradients."""
    inputs = testing.make_inputs(2, 2, length, 16, 2, seed=21)
    exact = run_masked("reference", inputs, masks, **run_kw)
    device = _triton_device() if backend == "triton" else "cpu"
    got = run_masked(backend, inputs, masks, dtype=dtype, device=device, **run_kw)
    for name in got:
        assert torch.isfinite(got[name]).all(), f"{label} {name}"
    if dtype == torch.float64:
        testing.assert_parity(got, exact, exact, testing.FLOAT64_FLOOR, label=f"{backend} {label}")
    else:
        ref = run_masked("reference", inputs, masks, dtype=dtype, **run_kw)
        floor = testing.fused_floor(dtype) if backend == "triton" else testing.kernel_floor(dtype)
        testing.assert_parity(got, ref, exact, floor, label=f"{backend} {label}")
    if "key_padding_mask" in masks:
        kpm = masks["key_padding_mask"]
        for name in ("dk", "dv"):
            assert (got[name].permute(0, 2, 1, 3)[kpm] == 0).all(), name  # padded keys get no gradient


@pytest.mark.parametrize("label, length, masks", FUSED_CASES, ids=[c[0] for c in FUSED_CASES])
@pytest.mark.parametrize("backend", [pytest.param("cpp", marks=needs_cpp), pytest.param("triton", marks=needs_triton)])
def test_fused_masked_parity(backend, label, length, masks):
    check_masked_parity(backend, label, length, masks, torch.float32)


def _cpu_isa_paths():
    """The instruction set paths of the CPU kernels this CPU runs (AMAD_FAST_CPU_ISA lowers the choice)."""
    if CPP_MISSING is not None:
        return ["default"]
    order = ["default", "avx2", "avx512", "brgemm"]
    return order[: order.index(torch.ops.amad_fast.automask_cpu_isa()) + 1]


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("label, length, masks", CPP_CASES, ids=[c[0] for c in CPP_CASES])
@pytest.mark.parametrize("isa", _cpu_isa_paths())
def test_cpp_masked_parity_on_each_isa_path(isa, label, length, masks, dtype, monkeypatch):
    monkeypatch.setenv("AMAD_FAST_CPU_ISA", isa)
    assert torch.ops.amad_fast.automask_cpu_isa() == isa
    check_masked_parity("cpp", label, length, masks, dtype)


@needs_cpp
@pytest.mark.parametrize("label, length, masks", CPP_CASES, ids=[c[0] for c in CPP_CASES])
@pytest.mark.parametrize("isa", [i for i in _cpu_isa_paths() if i in ("brgemm", "default")])
def test_cpp_masked_parity_without_branches(isa, label, length, masks, monkeypatch):
    """need_branches=False: the kernels mix both maps before their one product with v and take dmix
    from the recomputed maps in the backward (empty rows, bias, padding and causal included)."""
    monkeypatch.setenv("AMAD_FAST_CPU_ISA", isa)
    for dtype in (torch.float32, torch.float64):
        check_masked_parity("cpp", label, length, masks, dtype, need_branches=False)


CPP_BF16_UNITS = CPP_MISSING is None and torch.ops.amad_fast.automask_cpu_bf16_units()


@pytest.mark.skipif(not CPP_BF16_UNITS, reason="cpp: no bfloat16 on 16-bit units (AMX) on this CPU")
@pytest.mark.parametrize("label, length, masks", CPP_CASES, ids=[c[0] for c in CPP_CASES])
def test_cpp_masked_parity_bfloat16_on_16bit_units(label, length, masks):
    """The bfloat16 path (AMX products), whose causal and padded blocks skip keys as float32's do."""
    check_masked_parity("cpp", label, length, masks, torch.bfloat16)


@needs_cpp
@pytest.mark.parametrize("masks", [dict(key_padding_mask=torch.zeros(2, 80, dtype=torch.bool)),
                                   dict(attn_mask=torch.zeros(80, 80, dtype=torch.float64))],
                         ids=["key_padding_mask", "attn_mask"])
def test_cpp_empty_mask_is_bit_identical_to_no_mask(masks):
    """An all-False key_padding_mask, or an all-zero additive attn_mask, takes the masked code path
    and changes no bit."""
    inputs = testing.make_inputs(2, 2, 80, 16, 2, seed=5)
    plain = run_masked("cpp", inputs, {}, dtype=torch.float32)
    none_masked = run_masked("cpp", inputs, masks, dtype=torch.float32)
    for name in testing.FIELDS + testing.GRADS:
        assert torch.equal(none_masked[name], plain[name]), name


@needs_triton
@pytest.mark.parametrize("label, length, masks", ATTN_MASK_CASES, ids=[c[0] for c in ATTN_MASK_CASES])
def test_triton_attn_mask_parity(label, length, masks):
    check_masked_parity("triton", label, length, masks, torch.float32)


@needs_triton
def test_triton_takes_attn_mask_inside_the_kernels():
    """An attn_mask runs on the Triton kernels (not the reference): dispatch picks Triton, and a
    zero bias gives the unmasked kernels' numbers bit for bit (the bias is added, nothing else moves)."""
    inputs = [x.float() for x in testing.make_inputs(2, 2, 37, 16, 2, seed=6)]
    dims = check_inputs(*inputs, None)
    mask = random_bool_mask((37, 37), 9)
    checked = check_masks(None, mask, False, dims, inputs[0].device)
    assert BACKENDS["triton"].unsupported_reason(inputs[0], inputs[3], dims, 0.0, checked) is None
    plain = run_masked("triton", inputs, {}, dtype=torch.float32)
    zero_bias = run_masked("triton", inputs, dict(attn_mask=torch.zeros(37, 37)), dtype=torch.float32)
    for name in testing.FIELDS + testing.GRADS:
        assert torch.equal(zero_bias[name], plain[name]), name
    blocked = run_masked("triton", inputs, dict(attn_mask=mask), dtype=torch.float32)
    assert not torch.equal(blocked["out"], plain["out"])


# ----------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------


def _float_inputs(L=5, D=4):
    return [x.float() for x in testing.make_inputs(2, 2, L, D, 2, seed=3)]


def test_backends_declare_their_masks():
    assert BACKENDS["reference"].support().masks == {"key_padding_mask", "attn_mask", "is_causal"}
    assert BACKENDS["triton"].support().masks == {"key_padding_mask", "attn_mask", "is_causal"}
    assert BACKENDS["cpp"].support().masks == {"key_padding_mask", "attn_mask", "is_causal"}


@needs_cpp
@pytest.mark.parametrize("masks", [dict(key_padding_mask=padding([5, 3], 5)), dict(is_causal=True),
                                   dict(key_padding_mask=padding([5, 3], 5), is_causal=True)],
                         ids=["padding", "causal", "padding_causal"])
def test_auto_picks_cpp_for_masked_cpu_inputs(masks):
    inputs = _float_inputs()
    checked = check_masks(masks.get("key_padding_mask"), None, masks.get("is_causal", False),
                          check_inputs(*inputs, None), inputs[0].device)
    assert select_backend(inputs[0], inputs[3], None, "auto", 0.0, checked).name == "cpp"
    got = automask_attention(*inputs, **masks, need_divergence=True)
    want = automask_attention(*inputs, **masks, need_divergence=True, backend="cpp")
    for name in ("out", "kl_local", "kl_global"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_cpp_takes_attn_mask_on_cpu_but_refuses_masks_on_cuda_tensors():
    inputs = _float_inputs()
    dims = check_inputs(*inputs, None)
    bool_mask = torch.zeros(5, 5, dtype=torch.bool)
    bool_mask[1, 0] = True
    with_attn = check_masks(None, bool_mask, False, dims, inputs[0].device)
    assert BACKENDS["cpp"].unsupported_reason(inputs[0], inputs[3], None, 0.0, with_attn) is None
    if CPP_MISSING is None:
        assert select_backend(inputs[0], inputs[3], None, "auto", 0.0, with_attn).name == "cpp"
    # a float attn_mask that requires grad needs its gradient: the kernels return none, so it is refused
    grad_bias = torch.zeros(5, 5, requires_grad=True)
    with_grad = check_masks(None, grad_bias, False, dims, inputs[0].device)
    assert BACKENDS["cpp"].unsupported_reason(inputs[0], inputs[3], None, 0.0, with_grad) is not None
    cuda_q_attn = types.SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32, shape=inputs[0].shape)
    assert BACKENDS["cpp"].unsupported_reason(cuda_q_attn, inputs[3], None, 0.0, with_attn).startswith(
        "attn_mask not supported on cuda tensors (the cpp backend's CUDA kernels have not been ")
    # masks on CUDA tensors are refused until the CUDA kernels' masks are checked on a GPU: a CUDA q
    # (stood in for, no GPU needed) with masks is refused with the reason
    cuda_q = types.SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32, shape=inputs[0].shape)
    causal = check_masks(None, None, True, dims, inputs[0].device)
    reason = BACKENDS["cpp"].unsupported_reason(cuda_q, inputs[3], None, 0.0, causal)
    assert reason.startswith("is_causal not supported on cuda tensors (the cpp backend's CUDA kernels have not been ")


def test_attn_bias_is_the_mask_as_an_additive_float():
    """What the fused kernels are given: a bool mask as 0 / −inf, a float one as itself, (N, L, L)."""
    dims = check_inputs(*_float_inputs(), None)
    bool_mask = random_bool_mask((5, 5), 7)
    bias = check_masks(None, bool_mask, False, dims, torch.device("cpu")).attn_bias(torch.float64)
    assert bias.shape == (1, 5, 5) and bias.dtype == torch.float64 and bias.is_contiguous()
    assert torch.equal(bias[0] == float("-inf"), bool_mask)
    assert bool((bias[0][~bool_mask] == 0).all())
    float_mask = random_float_mask((4, 5, 5), 8)
    bias = check_masks(None, float_mask.transpose(1, 2), False, dims, torch.device("cpu")).attn_bias(torch.float32)
    assert bias.shape == (4, 5, 5) and bias.dtype == torch.float32 and bias.is_contiguous()
    assert torch.equal(bias, float_mask.transpose(1, 2).float())
    assert NO_MASKS.attn_bias(torch.float32) is None


def test_backend_without_attn_mask_grad_refuses_a_mask_that_requires_grad():
    """A float attn_mask that requires grad goes to a backend that differentiates it (the reference)."""
    inputs = _float_inputs()
    dims = check_inputs(*inputs, None)
    mask = torch.zeros(5, 5, requires_grad=True)
    checked = check_masks(None, mask, False, dims, inputs[0].device)

    class AttnMaskKernel(Backend):
        name = "attn-mask-kernel"

        def support(self):
            return Support(device_types=None, auto_device_types=frozenset({"cpu"}), masks=MASK_KINDS)

    assert AttnMaskKernel().unsupported_reason(inputs[0], inputs[3], dims, 0.0, checked) == \
        "attn_mask requires grad (this backend returns no gradient for an additive mask)"
    assert AttnMaskKernel().unsupported_reason(inputs[0], inputs[3], dims, 0.0, checked._replace(
        attn=mask.detach())) is None
    assert select_backend(inputs[0], inputs[3], dims, "auto", 0.0, checked).name == "reference"
    out = automask_attention(*inputs, attn_mask=mask).out
    out.sum().backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0


def test_exactly_causal_attn_mask_is_read_as_is_causal():
    """The mask nn.Transformer generates, given with is_causal=True, leaves only the causal flag (so
    backends that take is_causal but not attn_mask run it); a mask blocking more is kept."""
    inputs = _float_inputs()
    dims = check_inputs(*inputs, None)
    causal_float = nn.Transformer.generate_square_subsequent_mask(5)
    causal_bool = torch.ones(5, 5, dtype=torch.bool).triu(1)
    for mask in (causal_float, causal_bool):
        masks = check_masks(None, mask, True, dims, torch.device("cpu"))
        assert masks.attn is None and masks.causal and masks.kinds == {"is_causal"}
    more = causal_bool.clone()
    more[3, 0] = True
    assert check_masks(None, more, True, dims, torch.device("cpu")).attn is more
    biased = causal_float.clone()
    biased[2, 1] = 0.5
    assert check_masks(None, biased, True, dims, torch.device("cpu")).attn is biased
    torch.testing.assert_close(automask_attention(*inputs, attn_mask=causal_float, is_causal=True).out,
                               automask_attention(*inputs, is_causal=True).out, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Bad masks
# ----------------------------------------------------------------------------------------------

BAD_MASKS = [
    (dict(key_padding_mask=torch.zeros(2, 4, dtype=torch.bool)), ValueError,
     r"key_padding_mask: expected shape \(B, L\) = \(2, 5\), got \(2, 4\)"),
    (dict(key_padding_mask=torch.zeros(5, dtype=torch.bool)), ValueError, r"key_padding_mask: expected shape"),
    (dict(key_padding_mask=torch.zeros(2, 5)), TypeError,
     r"key_padding_mask: expected dtype torch.bool \(True = ignore that key\), got torch.float32"),
    (dict(key_padding_mask=torch.zeros(2, 5, dtype=torch.int64)), TypeError, r"key_padding_mask: expected dtype"),
    (dict(key_padding_mask=torch.zeros(2, 5, dtype=torch.bool, device="meta")), ValueError,
     r"key_padding_mask: expected device cpu \(that of q\), got meta"),
    (dict(key_padding_mask=[[False] * 5] * 2), TypeError, r"key_padding_mask: expected a torch.Tensor or None"),
    (dict(attn_mask=torch.zeros(5, 4, dtype=torch.bool)), ValueError,
     r"attn_mask: expected shape \(L, L\) = \(5, 5\) or \(B·H, L, L\) = \(4, 5, 5\), got \(5, 4\)"),
    (dict(attn_mask=torch.zeros(2, 5, 5)), ValueError, r"attn_mask: expected shape"),
    (dict(attn_mask=torch.zeros(5, 5, dtype=torch.int32)), TypeError,
     r"attn_mask: expected dtype torch.bool \(True = not allowed\) or a floating-point additive mask, got torch.int32"),
    (dict(attn_mask=torch.zeros(5, 5, device="meta")), ValueError, r"attn_mask: expected device cpu"),
    (dict(attn_mask=torch.zeros(5, 5).index_fill(0, torch.tensor([2]), float("nan"))), ValueError,
     r"attn_mask: expected finite values or -inf \(not allowed\), got 5 NaN and 0 \+inf of 25"),
    (dict(attn_mask=torch.zeros(5, 5).index_fill(1, torch.tensor([0]), float("inf"))), ValueError,
     r"got 0 NaN and 5 \+inf"),
    (dict(is_causal=1), TypeError, r"is_causal: expected a bool, got int"),
    (dict(attn_mask=torch.zeros(5, 5, dtype=torch.bool), is_causal=True), ValueError,
     r"attn_mask: is_causal=True needs an attn_mask that blocks every future key \(j > i\), got one that allows 10"),
    (dict(attn_mask=torch.zeros(5, 5), is_causal=True), ValueError, r"attn_mask: is_causal=True needs"),
]


@pytest.mark.parametrize("masks, exc, pattern", BAD_MASKS)
def test_bad_masks_name_the_argument(masks, exc, pattern):
    with pytest.raises(exc, match=pattern):
        automask_attention(*_float_inputs(), **masks)


# ----------------------------------------------------------------------------------------------
# The module: nn.MultiheadAttention's masks, inside torch's transformer layers
# ----------------------------------------------------------------------------------------------


def manual_attention(attn, x, key_padding_mask=None, attn_mask=None, is_causal=False):
    """The module's math spelled out through the reference, with masks."""
    Bx, Lx, E = x.shape
    heads = lambda t: t.reshape(Bx, Lx, attn.num_heads, attn.head_dim).transpose(1, 2)  # noqa: E731
    q, k, v = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    res = automask_attention_reference(heads(q), heads(k), heads(v), attn.freqs, attn.weights, attn.mix,
                                       key_padding_mask=key_padding_mask, attn_mask=attn_mask, is_causal=is_causal)
    return attn.out_proj(res.out.transpose(1, 2).reshape(Bx, Lx, E))


def manual_layer(layer, x, **masks):
    """nn.TransformerEncoderLayer's post-norm arithmetic around our attention."""
    h = layer.norm1(x + manual_attention(layer.self_attn, x, **masks))
    return layer.norm2(h + layer.linear2(torch.relu(layer.linear1(h))))


def test_module_masks_match_the_reference():
    torch.manual_seed(0)
    attn = AutoMaskAttention(16, 2).double()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    kpm = padding([6, 4, 1], 6)
    out, w = attn(x, x, x, key_padding_mask=kpm, is_causal=True)
    torch.testing.assert_close(out, manual_attention(attn, x, key_padding_mask=kpm, is_causal=True),
                               rtol=1e-12, atol=1e-12)
    assert (w[kpm[:, None, :].expand(3, 6, 6)] == 0).all() and (w.triu(1) == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 6, dtype=torch.float64))
    # a float padding mask of 0 / -inf (what nn.TransformerEncoder passes) is the bool mask
    float_kpm = torch.zeros(3, 6, dtype=torch.float64).masked_fill(kpm, float("-inf"))
    torch.testing.assert_close(attn(x, x, x, key_padding_mask=float_kpm, is_causal=True)[0], out, rtol=0, atol=0)
    # other float padding values are added to the scores, as an attn_mask would be
    bias_kpm = torch.randn(3, 6, dtype=torch.float64)
    mask = random_bool_mask((6, 6), 5)
    merged = (bias_kpm[:, None, None, :].expand(3, 2, 6, 6)
              + torch.zeros(6, 6, dtype=torch.float64).masked_fill(mask, float("-inf"))).reshape(6, 6, 6)
    torch.testing.assert_close(attn(x, x, x, key_padding_mask=bias_kpm, attn_mask=mask)[0],
                               manual_attention(attn, x, attn_mask=merged), rtol=1e-12, atol=1e-12)
    # unbatched input with an (L,) padding mask
    single, _ = attn(x[1], x[1], x[1], key_padding_mask=kpm[1], is_causal=True)
    torch.testing.assert_close(single, out[1], rtol=1e-12, atol=1e-12)


def test_kdim_vdim():
    assert AutoMaskAttention(8, 2, kdim=8, vdim=8).kdim == 8
    for name in ("kdim", "vdim"):
        with pytest.raises(ValueError, match=rf"{name}: AutoMask attention is self-attention .* must be None or "
                                             rf"embed_dim=8; got 6"):
            AutoMaskAttention(8, 2, **{name: 6})


@pytest.mark.parametrize("training", [True, False])
def test_inside_transformer_encoder_layer_with_padding_and_causal(training):
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).double()
    layer.self_attn = AutoMaskAttention(16, 2).double()
    layer.train(training)
    x = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=training)
    kpm = padding([7, 5, 2], 7)
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)
    with torch.set_grad_enabled(training):
        y = layer(x, src_mask=causal, src_key_padding_mask=kpm, is_causal=True)
        y_pad = layer(x, src_key_padding_mask=kpm)
    torch.testing.assert_close(y, manual_layer(layer, x, key_padding_mask=kpm, is_causal=True), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(y_pad, manual_layer(layer, x, key_padding_mask=kpm), rtol=1e-10, atol=1e-10)
    if training:
        y.sum().backward()
        assert layer.self_attn.freqs.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_inside_transformer_encoder_default_settings_eval():
    """nn.TransformerEncoder with its defaults (enable_nested_tensor=True) in eval under no_grad:
    built around our layer it keeps the padded batch and our forward; with our attention put into
    a default-built encoder it hands us a nested tensor, which we take too (same valid rows)."""
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    layer.self_attn = AutoMaskAttention(16, 2)
    enc = nn.TransformerEncoder(layer, num_layers=2).eval()
    x = torch.randn(3, 6, 16)
    kpm = padding([6, 3, 4], 6)
    with torch.no_grad():
        y = enc(x, src_key_padding_mask=kpm)
        expected = x
        for each in enc.layers:
            expected = manual_layer(each, expected, key_padding_mask=kpm)
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        y_causal = enc(x, src_key_padding_mask=kpm, is_causal=True)
        expected = x
        for each in enc.layers:
            expected = manual_layer(each, expected, key_padding_mask=kpm, is_causal=True)
        torch.testing.assert_close(y_causal, expected, rtol=1e-5, atol=1e-5)

        default = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
                                        num_layers=2).eval()
        for mine, theirs in zip(enc.layers, default.layers):
            theirs.load_state_dict({k: v for k, v in mine.state_dict().items() if not k.startswith("self_attn")},
                                   strict=False)
            theirs.self_attn = mine.self_attn
        assert default.use_nested_tensor  # torch will convert the padded batch
        y_nested = default(x, src_key_padding_mask=kpm)
    valid = ~kpm
    torch.testing.assert_close(y_nested[valid], y[valid], rtol=1e-5, atol=1e-5)
    assert (y_nested[kpm] == 0).all()  # torch pads the rows it dropped with zeros
