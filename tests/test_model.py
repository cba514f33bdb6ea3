"""AMAD model (spec §2): shapes, terms per block, parameter routes, bad input."""
import pytest
import torch

import amad_fast
from amad_fast.detection.model import AMAD, positional_encoding

#: the model's layers run on the reference and on the cpp backend (what ``auto`` picks on a CPU)
BACKENDS = ["reference", pytest.param("cpp", marks=pytest.mark.skipif(
    not amad_fast.available_backends()["cpp"].available, reason="the C++ extension is not built"))]


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(n_channels=3, window_size=16, d_model=16, n_heads=2, n_layers=2, num_scales=2, backend="reference")
    cfg.update(kw)
    return AMAD(**cfg)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_and_terms(backend):
    m = tiny(backend=backend)
    x = torch.randn(4, 16, 3)
    out = m(x)
    assert out.recon.shape == (4, 16, 3)
    assert out.kl_local.shape == out.kl_global.shape == (2, 4, 2, 16)
    assert len(out.out_local) == len(out.out_global) == 2
    assert out.out_local[0].shape == (4, 2, 16, 8)
    js = out.js
    assert (js >= -1e-6).all() and (js <= torch.log(torch.tensor(2.0)) + 1e-6).all()
    us, vs = m.contrastive_views(out)
    assert len(us) == 2 and us[0].shape == (4, 16)
    assert torch.allclose(us[0].norm(dim=-1), torch.ones(4), atol=1e-5)
    out2 = m(x, need_branches=False)
    assert out2.out_local is None
    # without the branches the cpp kernels mix both maps before their product with v: the same
    # recon up to float32 rounding (a few eps of its scale), and to float64's in float64
    eps32 = torch.finfo(torch.float32).eps
    torch.testing.assert_close(out2.recon, out.recon, rtol=0, atol=8 * eps32 * float(out.recon.abs().max()))
    m64, x64 = m.double(), x.double()
    torch.testing.assert_close(m64(x64, need_branches=False).recon, m64(x64).recon, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="need_branches"):
        m.contrastive_views(out2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_windows_are_independent_in_batch(backend):
    """Each window is reconstructed on its own (no batch coupling in the model)."""
    m = tiny(backend=backend).double()
    x = torch.randn(3, 16, 3, dtype=torch.float64)
    full = m(x).recon
    one = m(x[1:2]).recon
    assert torch.allclose(full[1:2], one, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_param_routes_partition(backend):
    m = tiny(backend=backend)
    r = m.param_routes()
    ids = [id(p) for p in r.automask] + [id(p) for p, _ in r.self_attention] + [id(p) for p in r.other]
    assert sorted(ids) == sorted(id(p) for p in m.parameters())
    assert len(r.automask) == 4  # freqs, weights per block
    for p, mask in r.self_attention:
        assert mask.shape[0] == p.shape[0] == 48 and int(mask.sum()) == 32


def test_positional_encoding():
    pe = positional_encoding(10, 6)
    assert pe.shape == (10, 6)
    assert torch.allclose(pe[0], torch.tensor([0.0, 1, 0, 1, 0, 1]))


def test_bad_input():
    m = tiny()
    with pytest.raises(ValueError, match="x: expected"):
        m(torch.randn(2, 15, 3))
    with pytest.raises(ValueError, match="x: expected"):
        m(torch.randn(2, 16, 4))
    with pytest.raises(ValueError, match="n_heads"):
        AMAD(3, n_heads=0)
