"""Trainer (spec §3): the three Max-Min gradient routes, loss modes, determinism, early stopping,
atomic checkpoints and bit-exact resume."""
import os

import numpy as np
import pytest
import torch

import amad_fast
from amad_fast.files import write_file
from amad_fast.detection.model import AMAD
from amad_fast.detection.training import (
    SegmentWindows, TrainConfig, compute_losses, contrastive_loss, maxmin_gradients, train_model,
    validation_segments,
)
from amad_fast.detection.checkpoints import load_checkpoint
from amad_fast.files import save_atomic

K, MU, TAU = 3.0, 0.1, 0.1

#: the model's layers run on the reference and on the cpp backend (what ``auto`` picks on a CPU)
BACKENDS = ["reference", pytest.param("cpp", marks=pytest.mark.skipif(
    not amad_fast.available_backends()["cpp"].available, reason="the C++ extension is not built"))]


def tiny(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    cfg = dict(n_channels=3, window_size=16, d_model=16, n_heads=2, n_layers=2, num_scales=2, backend="reference")
    cfg.update(kw)
    return AMAD(**cfg).to(dtype)


def grads_of(model, x, loss_fn):
    """Fresh forward, gradient of loss_fn(losses) w.r.t. every parameter (zeros when unused)."""
    losses = compute_losses(model, x, TAU)
    gs = torch.autograd.grad(loss_fn(losses), list(model.parameters()), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(model.parameters(), gs)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_routes_match_separate_gradients(backend):
    m = tiny(backend=backend)
    x = torch.randn(6, 16, 3, dtype=torch.float64)
    got = maxmin_gradients(m, compute_losses(m, x, TAU), "exact", K, MU)
    plain = grads_of(m, x, lambda l: l["rec"] + MU * l["con"])
    minstep = grads_of(m, x, lambda l: l["rec"] + MU * l["con"] - K * l["dm"])
    maxstep = grads_of(m, x, lambda l: l["rec"] + MU * l["con"] + K * l["dg"])
    routes = m.param_routes()
    automask = {id(p) for p in routes.automask}
    qk_rows = {id(p): mask for p, mask in routes.self_attention}
    n_checked = {"automask": 0, "self": 0, "other": 0}
    for p, g, g_plain, g_min, g_max in zip(m.parameters(), got, plain, minstep, maxstep):
        if id(p) in automask:
            torch.testing.assert_close(g, g_min, rtol=1e-10, atol=1e-12)
            assert not torch.allclose(g, g_plain)  # the D^M term really is there
            n_checked["automask"] += 1
        elif id(p) in qk_rows:
            mask = qk_rows[id(p)]
            torch.testing.assert_close(g[mask], g_max[mask], rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(g[~mask], g_plain[~mask], rtol=1e-10, atol=1e-12)  # W_V rows
            assert not torch.allclose(g[mask], g_plain[mask])
            n_checked["self"] += 1
        else:
            torch.testing.assert_close(g, g_plain, rtol=1e-10, atol=1e-12)
            n_checked["other"] += 1
    assert n_checked == {"automask": 4, "self": 4, "other": len(list(m.parameters())) - 8}


@pytest.mark.parametrize("backend", BACKENDS)
def test_joint_and_off_modes(backend):
    m = tiny(backend=backend)
    x = torch.randn(5, 16, 3, dtype=torch.float64)
    joint = maxmin_gradients(m, compute_losses(m, x, TAU), "joint", K, MU)
    want = grads_of(m, x, lambda l: 2 * l["rec"] + 2 * MU * l["con"] - K * l["dm"] + K * l["dg"])
    for a, b in zip(joint, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    off = maxmin_gradients(m, compute_losses(m, x, TAU), "off", K, MU)
    want = grads_of(m, x, lambda l: l["rec"] + MU * l["con"])
    for a, b in zip(off, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="maxmin"):
        maxmin_gradients(m, compute_losses(m, x, TAU), "both", K, MU)


def test_contrastive_loss_prefers_matching_views():
    u = torch.nn.functional.normalize(torch.randn(8, 4, dtype=torch.float64), dim=-1)
    aligned = contrastive_loss([u], [u], 0.1)
    shuffled = contrastive_loss([u], [u.roll(1, 0)], 0.1)
    assert aligned < shuffled
    # symmetric: swapping views gives the same loss
    v = torch.nn.functional.normalize(torch.randn(8, 4, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(contrastive_loss([u], [v], 0.1), contrastive_loss([v], [u], 0.1))


def series(T=600, C=3, seed=0):
    t = np.arange(T)[:, None]
    rng = np.random.default_rng(seed)
    return (np.sin(2 * np.pi * t / (8 + 3 * np.arange(C))) + 0.1 * rng.standard_normal((T, C))).astype(np.float32)


def cfg(**kw):
    base = dict(epochs=3, batch_size=8, train_stride=4, lr=1e-3, progress=False, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_lowers_loss_and_is_reproducible():
    X = series()
    m1 = tiny(torch.float32, dropout=0.1)
    r1 = train_model(m1, X, cfg(epochs=4, patience=10))
    assert r1.history[-1]["rec"] < 0.6 * r1.history[0]["rec"]
    assert r1.history[-1]["val_rec"] < r1.history[0]["val_rec"]
    m2 = tiny(torch.float32, dropout=0.1)
    train_model(m2, X, cfg(epochs=4, patience=10))
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_early_stopping_restores_best():
    X = series()
    m = tiny(torch.float32)
    # lr so large the validation loss cannot keep improving: patience must end training
    r = train_model(m, X, cfg(epochs=30, lr=0.05, patience=1))
    assert r.stopped_early and len(r.history) < 30
    assert r.best_val == min(h["val_rec"] for h in r.history)
    assert r.history[r.best_epoch]["val_rec"] == r.best_val


class Kill(RuntimeError):
    pass


@pytest.mark.parametrize("every", [0, 3])
def test_resume_after_kill_matches_uninterrupted(tmp_path, every):
    X = series()
    ref = tiny(torch.float32, dropout=0.1)
    train_model(ref, X, cfg(epochs=3))
    def killer(info):
        if info["epoch"] == 1 and info["step"] == 4:
            raise Kill()

    m = tiny(torch.float32, dropout=0.1)
    c = cfg(epochs=3, checkpoint_dir=str(tmp_path), checkpoint_every=every)
    with pytest.raises(Kill):
        train_model(m, X, c, callback=killer)
    ck = load_checkpoint(str(tmp_path / "last.pt"))
    assert (ck["epoch"], ck["step"]) == ((1, 3) if every else (1, 0))
    if not every:  # a checkpoint written before val_split existed held out the tail: still resumable
        del ck["config"]["val_split"]
        write_file(str(tmp_path / "last.pt"), ck["format"], ck)  # written (and checksummed) that way
    m2 = tiny(torch.float32, dropout=0.1)  # a fresh process would build a fresh model
    c.resume = True
    r = train_model(m2, X, c)
    assert r.resumed_from == ck["global_step"]
    for (name, a), b in zip(ref.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), name
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    if every:
        return
    c.lr = 1e-2  # resuming with other settings is refused
    with pytest.raises(ValueError, match="lr: checkpoint 0.001, now 0.01"):
        train_model(tiny(torch.float32, dropout=0.1), X, c)
    c.lr = 1e-3
    with pytest.raises(ValueError, match="model.d_model"):
        train_model(tiny(torch.float32, dropout=0.1, d_model=24, n_heads=2), X, c)


def test_validation_segments_tail_and_blocks():
    assert validation_segments(1000, 16, 0.2, "tail") == ([(0, 800)], [(800, 1000)])
    train, val = validation_segments(1000, 16, 0.2, "blocks")
    assert len(val) == 1000 // 160  # blocks of 2 * window / val_fraction steps
    pieces = sorted(train + val)
    assert pieces[0][0] == 0 and pieces[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # disjoint, and together the whole series
    assert all(b - a >= 16 for a, b in val) and abs(sum(b - a for a, b in val) - 200) <= len(val)
    assert all(t[1] == v[0] for t, v in zip(train, val))  # each block ends with its validation piece
    # a series too short for two blocks is split like "tail"; pieces shorter than a window: no split
    assert validation_segments(250, 16, 0.2, "blocks") == validation_segments(250, 16, 0.2, "tail")
    assert validation_segments(60, 16, 0.2, "blocks") == ([(0, 60)], [])
    with pytest.raises(ValueError, match="val_split"):
        validation_segments(1000, 16, 0.2, "middle")


def test_blocks_split_never_trains_on_validation_steps():
    X = torch.as_tensor(series(T=700))
    train, val = validation_segments(700, 16, 0.2, "blocks")
    assert len(val) == 4
    windows = SegmentWindows(X, train, 16, 3)
    held_out = torch.zeros(700, dtype=torch.bool)
    for a, b in val:
        held_out[a:b] = True
    steps = windows.starts[:, None] + windows.offsets
    assert not held_out[steps].any()
    assert torch.equal(windows[[0, 5]], X[steps[[0, 5]]])
    r = train_model(tiny(torch.float32), X.float().numpy(), cfg(epochs=2, val_split="blocks"))
    assert all(np.isfinite(h["val_rec"]) for h in r.history)


def test_save_atomic_keeps_old_file_on_failure(tmp_path):
    path = str(tmp_path / "x.pt")
    save_atomic({"a": 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomic({"a": Boom()}, path)
    assert torch.load(path) == {"a": 1}
    assert os.listdir(tmp_path) == ["x.pt"]


def test_bad_config_and_series():
    m = tiny(torch.float32)
    with pytest.raises(ValueError, match="maxmin"):
        train_model(m, series(), cfg(maxmin="max"))
    with pytest.raises(ValueError, match="val_split"):
        train_model(m, series(), cfg(val_split="middle"))
    with pytest.raises(ValueError, match="series: expected at least window_size=16 time steps, got 10"):
        train_model(m, series(T=10), cfg())
    with pytest.raises(ValueError, match="series: expected"):
        train_model(m, series(C=4), cfg())
