"""Every bad input to the functional API raises a clear error naming the argument."""
import re

import pytest
import torch

import amad_fast
from amad_fast.attention.backends.base import Backend, HeadDims, Support
from amad_fast.attention.dispatch import BACKENDS, select_backend
from amad_fast.attention.reference import automask_attention_reference, default_freqs
from amad_fast.attention.validation import check_inputs


def good(B=2, H=2, L=5, D=4, S=3, dtype=torch.float32):
    q, k, v = (torch.randn(B, H, L, D, dtype=dtype) for _ in range(3))
    return dict(q=q, k=k, v=v, freqs=default_freqs(H, S, D // 2), weights=torch.full((H, S), 1 / S), mix=torch.zeros(H))


def call(**inputs):
    kwargs = {key: inputs.pop(key) for key in ("scale", "backend") if key in inputs}
    return amad_fast.automask_attention(
        inputs["q"], inputs["k"], inputs["v"], inputs["freqs"], inputs["weights"], inputs["mix"], **kwargs
    )


def test_good_inputs_pass():
    assert call(**good()).out.shape == (2, 2, 5, 4)


CASES = [
    ("q", lambda x: x["q"][0], ValueError, r"q: expected 4 dimensions"),
    ("k", lambda x: x["k"][:, :, :4], ValueError, r"k: expected shape .* to match q"),
    ("v", lambda x: x["v"][:1], ValueError, r"v: expected shape"),
    ("k", lambda x: x["k"][:, :1], ValueError, r"k: expected shape"),
    ("freqs", lambda x: x["freqs"][:, :, :1], ValueError, r"freqs: expected shape \(H, S, D/2\)"),
    ("freqs", lambda x: x["freqs"][:, :0], ValueError, r"S = 0"),
    ("freqs", lambda x: x["freqs"][0], ValueError, r"freqs: expected 3 dimensions"),
    ("weights", lambda x: x["weights"][:, :2], ValueError, r"weights: expected shape \(H, S\)"),
    ("mix", lambda x: x["mix"][:1], ValueError, r"mix: expected shape \(H,\)"),
    ("q", lambda x: x["q"].to(torch.int64), TypeError, r"q: expected a floating-point tensor, got dtype torch.int64"),
    ("v", lambda x: x["v"].double(), TypeError, r"v: expected dtype torch.float32 \(that of q\)"),
    ("mix", lambda x: x["mix"].double(), TypeError, r"mix: expected dtype torch.float32 \(that of freqs\)"),
    ("weights", lambda x: x["weights"].tolist(), TypeError, r"weights: expected a torch.Tensor, got list"),
    ("freqs", lambda x: x["freqs"].to("meta"), ValueError, r"freqs: expected device cpu"),
]


@pytest.mark.parametrize("arg, corrupt, exc, pattern", CASES)
def test_bad_input_names_the_argument(arg, corrupt, exc, pattern):
    inputs = good()
    inputs[arg] = corrupt(inputs)
    with pytest.raises(exc, match=pattern):
        call(**inputs)


def test_odd_head_dim():
    inputs = good(D=5)
    inputs["freqs"] = torch.zeros(2, 3, 2)
    with pytest.raises(ValueError, match=r"even head dim .* got D = 5"):
        call(**inputs)


def test_empty_window():
    with pytest.raises(ValueError, match=r"q: expected non-empty"):
        call(**good(L=0))


@pytest.mark.parametrize("arg", ["q", "k", "v", "freqs", "weights", "mix"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_values_are_refused(arg, value):
    inputs = good()
    inputs[arg] = inputs[arg].clone()
    inputs[arg].view(-1)[0] = value
    with pytest.raises(ValueError, match=rf"{arg}: expected finite values, got 1 NaN/Inf"):
        call(**inputs)


def test_finite_checks_can_be_disabled():
    inputs = good()
    inputs["q"] = inputs["q"].clone()
    inputs["q"][0, 0, 0, 0] = float("nan")
    amad_fast.set_finite_checks(False)
    try:
        out = call(**inputs).out
    finally:
        amad_fast.set_finite_checks(True)
    assert torch.isnan(out).any()


@pytest.mark.parametrize("scale, exc", [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), ("x", TypeError)])
def test_bad_scale(scale, exc):
    with pytest.raises(exc, match="scale: expected"):
        call(**good(), scale=scale)


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"backend: expected one of .*'reference'.*got 'fast'"):
        call(**good(), backend="fast")


def test_available_backends_explain_themselves():
    status = amad_fast.available_backends()
    assert list(status) == ["triton", "cpp", "reference"]
    assert status["reference"].available
    for s in status.values():
        assert s.available or s.reason, f"{s.name} is unavailable without a reason"


def test_unavailable_backend_says_why():
    unavailable = [s for s in amad_fast.available_backends().values() if not s.available]
    for s in unavailable:
        with pytest.raises(RuntimeError, match=rf"backend '{s.name}' cannot run these inputs: "):
            call(**good(), backend=s.name)


@pytest.mark.parametrize("dropout_p, exc", [(-0.1, ValueError), (1.0, ValueError), (float("nan"), ValueError),
                                            ("0.1", TypeError), (True, TypeError)])
def test_bad_dropout(dropout_p, exc):
    with pytest.raises(exc, match="dropout_p: expected"):
        amad_fast.automask_attention(*good().values(), dropout_p=dropout_p)


def test_backends_without_dropout_are_passed_over():
    """auto skips every backend that does not declare dropout; naming one says why it cannot run."""
    inputs = list(good(D=16).values())  # a head dim every backend takes
    dims = check_inputs(*inputs, None)
    assert select_backend(inputs[0], inputs[3], dims, "auto", dropout_p=0.1).name == "reference"
    for name, backend in BACKENDS.items():
        if backend.support().dropout or backend.availability():
            continue
        with pytest.raises(RuntimeError, match=rf"backend '{name}' cannot run these inputs: dropout not supported"):
            amad_fast.automask_attention(*inputs, dropout_p=0.1, backend=name)
    torch.manual_seed(0)
    auto = amad_fast.automask_attention(*inputs, dropout_p=0.1).out
    torch.manual_seed(0)
    ref = automask_attention_reference(*inputs, dropout_p=0.1).out
    torch.testing.assert_close(auto, ref, rtol=0, atol=0)


class _Declared(Backend):
    """A backend that exists only as a declaration, to check the generic checks against it."""

    name = "declared"

    def support(self):
        return Support(
            device_types=frozenset({"cpu"}), auto_device_types=frozenset({"cpu"}),
            dtypes=(torch.float32,), param_dtypes=(torch.float32,),
            head_dims=HeadDims(minimum=4, maximum=16, power_of_two=True), max_scales=2,
        )


@pytest.mark.parametrize("change, reason", [
    (dict(), None),
    (dict(D=8, S=2), None),
    (dict(dtype=torch.float64), r"q: expected dtype float32, got torch.float64"),
    (dict(param_dtype=torch.float64), r"freqs: expected parameter dtype float32, got torch.float64"),
    (dict(D=12), r"q: expected head dim D in \(4, 8, 16\), got D = 12"),
    (dict(D=2), r"q: expected head dim D in \(4, 8, 16\), got D = 2"),
    (dict(D=32), r"got D = 32"),
    (dict(S=3), r"freqs: expected at most 2 scales S, got S = 3"),
    (dict(dropout_p=0.5), r"^dropout not supported$"),
    (dict(device="meta"), r"q: expected a tensor on device type cpu, got device meta"),
])
def test_declared_support_is_checked_generically(change, reason):
    D, S = change.get("D", 4), change.get("S", 1)
    device, param_dtype = change.get("device", "cpu"), change.get("param_dtype", torch.float32)
    q = torch.zeros(1, 1, 3, D, dtype=change.get("dtype", torch.float32), device=device)
    freqs = torch.zeros(1, S, D // 2, dtype=param_dtype, device=device)
    got = _Declared().unsupported_reason(q, freqs, None, change.get("dropout_p", 0.0))
    if reason is None:
        assert got is None
    else:
        assert got is not None and re.search(reason, got), got


def test_head_dims_describe_what_they_admit():
    assert HeadDims().describe() == "even" and HeadDims().admits(2)
    assert HeadDims(maximum=512).describe() == "≤ 512" and not HeadDims(maximum=512).admits(514)
    assert HeadDims(minimum=16, power_of_two=True).describe() == "≥ 16, a power of two"
