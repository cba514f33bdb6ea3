"""Every bad input to the functional API raises a clear error naming the argument."""
import pytest
import torch

import amad_fast
from amad_fast.attention.reference import default_freqs


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
