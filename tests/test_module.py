"""AutoMaskAttention as a drop-in for nn.MultiheadAttention (self-attention)."""
import math

import pytest
import torch
from torch import nn

from amad_fast import AutoMaskAttention
from amad_fast.attention import module as module_file
from amad_fast.attention.reference import automask_attention_reference


def manual_forward(attn: AutoMaskAttention, x: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    """The module's math spelled out: projections, reference attention, output projection."""
    B, L, E = x.shape
    H, D = attn.num_heads, attn.head_dim
    q, k, v = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    heads = lambda t: t.reshape(B, L, H, D).permute(0, 2, 1, 3)  # noqa: E731
    res = automask_attention_reference(
        heads(q), heads(k), heads(v), attn.freqs, attn.weights, attn.mix, dropout_p=dropout_p
    )
    return attn.out_proj(res.out.permute(0, 2, 1, 3).reshape(B, L, E))


def test_initialisation_follows_the_spec():
    attn = AutoMaskAttention(32, 4, num_scales=3)
    assert attn.freqs.shape == (4, 3, 4)
    assert torch.allclose(attn.weights, torch.full((4, 3), 1 / 3))
    assert torch.all(attn.mix == 0)
    assert attn.freqs[0, 1, 0].item() == pytest.approx(0.5)
    assert attn.freqs[2, 0, 1].item() == pytest.approx(10000 ** (-1 / 4), rel=1e-6)


def test_call_matches_multihead_attention_contract():
    torch.manual_seed(0)
    attn = AutoMaskAttention(16, 2).double()
    x = torch.randn(3, 7, 16, dtype=torch.float64)
    out, w = attn(x, x, x)
    torch.testing.assert_close(out, manual_forward(attn, x), rtol=1e-12, atol=1e-12)
    assert w.shape == (3, 7, 7)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 7, dtype=torch.float64))
    out2, w2 = attn(x, x, x, need_weights=True, average_attn_weights=False)
    assert w2.shape == (3, 2, 7, 7)
    torch.testing.assert_close(w2.mean(1), w)
    # the weights are the map that multiplies v
    v = nn.functional.linear(x, attn.in_proj_weight[32:], attn.in_proj_bias[32:]).reshape(3, 7, 2, 8).transpose(1, 2)
    mixed = (w2 @ v).transpose(1, 2).reshape(3, 7, 16)
    torch.testing.assert_close(attn.out_proj(mixed), out, rtol=1e-10, atol=1e-10)
    _, none = attn(x, x, x, need_weights=False)
    assert none is None


def test_sequence_first_and_unbatched_inputs():
    torch.manual_seed(1)
    attn = AutoMaskAttention(8, 2, batch_first=False).double()
    x = torch.randn(5, 2, 8, dtype=torch.float64)  # (L, B, E)
    out, _ = attn(x, x, x, need_weights=False)
    assert out.shape == (5, 2, 8)
    attn.batch_first = True
    out_bf, _ = attn(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), need_weights=False)
    torch.testing.assert_close(out, out_bf.transpose(0, 1))
    single, _ = attn(x[:, 0], x[:, 0], x[:, 0], need_weights=False)
    torch.testing.assert_close(single, out[:, 0])
    single, w = attn(x[:, 0], x[:, 0], x[:, 0])
    assert w.shape == (5, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("training", [True, False])
def test_inside_transformer_encoder_layer(training):
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True).double()
    layer.self_attn = AutoMaskAttention(16, 2).double()
    layer.train(training)
    x = torch.randn(4, 9, 16, dtype=torch.float64, requires_grad=training)
    with torch.set_grad_enabled(training):
        y = layer(x)
    # the layer's own arithmetic around our attention (post-norm): must not take torch's fused MHA path
    h = layer.norm1(x + manual_forward(layer.self_attn, x))
    expected = layer.norm2(h + layer.linear2(torch.relu(layer.linear1(h))))
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    if training:
        y.sum().backward()
        for name, p in layer.self_attn.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert layer.self_attn.freqs.grad.abs().sum() > 0


def test_inside_transformer_encoder_stack_eval():
    torch.manual_seed(3)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    layer.self_attn = AutoMaskAttention(16, 2)
    enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 6, 16)
    with torch.inference_mode():
        y = enc(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_divergence_terms_are_reachable():
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    attn = layer.self_attn = AutoMaskAttention(16, 2)
    x = torch.randn(3, 8, 16)
    layer(x)
    assert attn.last_terms is None  # only kept when asked
    attn.keep_terms = True
    layer(x)
    terms = attn.last_terms
    assert terms.kl_local.shape == (3, 2, 8) and terms.out_local.shape == (3, 2, 8, 8)
    terms.js.mean().backward()  # differentiable, reaches the AutoMask parameters
    assert attn.freqs.grad is not None and attn.freqs.grad.abs().sum() > 0
    y, res = attn.forward_with_terms(x)
    y2, _ = attn(x, x, x, need_weights=False)
    torch.testing.assert_close(y, y2)
    assert (res.js >= 0).all() and (res.js <= math.log(2) + 1e-6).all()


def test_parameter_groups_cover_the_maxmin_routes():
    attn = AutoMaskAttention(8, 2)
    ids = {id(p) for p in attn.automask_parameters()} | {id(p) for p in attn.self_attention_parameters()}
    assert {id(attn.freqs), id(attn.weights), id(attn.in_proj_weight), id(attn.in_proj_bias)} == ids


def test_dropout_runs_in_training_and_is_off_in_eval():
    torch.manual_seed(5)
    attn = AutoMaskAttention(8, 2, dropout=0.5)
    x = torch.randn(2, 6, 8)
    a, _ = attn(x, x, x, need_weights=False)
    b, _ = attn(x, x, x, need_weights=False)
    assert not torch.allclose(a, b)
    attn.eval()
    c, _ = attn(x, x, x, need_weights=False)
    d, _ = attn(x, x, x, need_weights=False)
    torch.testing.assert_close(c, d)


def test_dropout_goes_through_dispatch_and_keeps_the_reference_numbers(monkeypatch):
    """The module calls only automask_attention, with dropout_p while training (0 in eval); dispatch
    runs the reference then, which draws the same masks for the same seed as calling it directly."""
    calls = []
    dispatch = module_file.automask_attention

    def recorded(*args, **kwargs):
        calls.append(kwargs)
        return dispatch(*args, **kwargs)

    monkeypatch.setattr(module_file, "automask_attention", recorded)
    torch.manual_seed(6)
    attn = AutoMaskAttention(8, 2, dropout=0.25).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    torch.manual_seed(7)
    out, _ = attn(x, x, x, need_weights=False)
    assert calls[-1]["dropout_p"] == 0.25 and calls[-1]["backend"] == "auto"
    torch.manual_seed(7)
    torch.testing.assert_close(out, manual_forward(attn, x, dropout_p=0.25), rtol=0, atol=0)
    attn.eval()
    attn(x, x, x, need_weights=False)
    assert calls[-1]["dropout_p"] == 0.0


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(embed_dim=10, num_heads=3), r"embed_dim: expected a multiple of num_heads=3, got 10"),
        (dict(embed_dim=6, num_heads=2), r"head dim 3"),
        (dict(embed_dim=8, num_heads=0), r"num_heads: expected a positive int"),
        (dict(embed_dim=8, num_heads=2, num_scales=0), r"num_scales: expected a positive int"),
        (dict(embed_dim=8, num_heads=2, dropout=1.5), r"dropout: expected a probability"),
        (dict(embed_dim=8, num_heads=2, backend="fastest"), r"backend: expected one of"),
        (dict(embed_dim=8, num_heads=2, dropout=0.1, backend="cpp"), r"dropout: the 'cpp' backend has no attention dropout"),
        (dict(embed_dim=8, num_heads=2, dropout=0.1, backend="triton"), r"the 'triton' backend has no attention dropout"),
    ],
)
def test_bad_construction(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        AutoMaskAttention(**kwargs)


def test_arguments_it_cannot_honour_are_refused():
    attn = AutoMaskAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match=r"key_padding_mask: expected shape \(B, L\)"):
        attn(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"attn_mask: is_causal=True needs an attn_mask that blocks every future key"):
        attn(x, x, x, attn_mask=torch.zeros(5, 5), is_causal=True)
    with pytest.raises(ValueError, match=r"query: expected \(B, L, E\) or \(L, E\) with E = 8, got shape \(2, 5, 7\)"):
        attn(x[..., :7], x, x)
    with pytest.raises(ValueError, match=r"key, value: expected the shape of query"):
        attn(x, x[:, :4], x[:, :4])
    with pytest.raises(TypeError, match=r"query: expected a torch.Tensor, got ndarray"):
        attn(x.numpy(), x, x)
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"finite"):
        attn(bad, bad, bad)
