"""Live scoring: AMADDetector.stream() against decision_function(causal=True)."""
import numpy as np
import pytest
import torch

from amad_fast import AMADDetector
from amad_fast.data import make_synthetic

TINY = dict(window_size=20, d_model=16, n_heads=2, n_layers=1, num_scales=2, epochs=1, train_stride=5,
            progress=False, smooth=7)


@pytest.fixture(scope="module")
def fitted():
    d = make_synthetic(length=400, channels=3, seed=4, train_length=600)
    return AMADDetector(**TINY).fit(d.train), d


@pytest.mark.parametrize("score", ["recon", "recon_js"])
def test_stream_gives_the_causal_batch_scores(fitted, score):
    det, d = fitted
    det.set_params(score=score)
    try:
        want = det.decision_function(d.test, causal=True)
        st = det.stream()
        rng = np.random.default_rng(0)
        got, i = [], 0
        while i < len(d.test):
            n = int(rng.integers(0, 30))  # empty updates, single rows and chunks, across the first window
            got.append(st.update(d.test[i : i + n] if n != 1 else d.test[i]))
            i += n
        got = np.concatenate(got)
    finally:
        det.set_params(score="recon")
    assert got.shape == want.shape and st.n_scored == st.n_seen == len(d.test)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_nothing_is_returned_before_a_window_then_the_whole_first_window(fitted):
    det, d = fitted
    st = det.stream()
    L = det.window_size
    assert st.update(d.test[: L - 1]).shape == (0,)
    assert st.update(d.test[L - 1]).shape == (L,)
    assert st.update(d.test[L : L + 3]).shape == (3,)


def test_causal_scores_do_not_use_the_future(fitted):
    det, d = fitted
    full = det.decision_function(d.test, causal=True)
    t = 150
    X = d.test.copy()
    X[t + 1 :] += 50.0  # a huge change after t
    np.testing.assert_allclose(det.decision_function(X, causal=True)[: t + 1], full[: t + 1], rtol=1e-6)
    assert not np.allclose(det.decision_function(d.test)[: t + 1], det.decision_function(X)[: t + 1])  # centred does


def test_stream_memory_is_bounded(fitted):
    det, d = fitted
    st = det.stream()
    for _ in range(10):
        st.update(d.test)
    assert st.n_seen == 10 * len(d.test)
    assert len(st._rows) == det.window_size and len(st._smoothing.recent) == det.resolved_smooth()


def test_bad_stream_input_is_refused_clearly(fitted):
    det, d = fitted
    st = det.stream()
    with pytest.raises(ValueError, match=r"x: expected one row of 3 numbers or an \(n, 3\) array of them, got shape"):
        st.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"x: expected finite values, got nan at row 1 of this update \(stream step 1\)"):
        row = d.test[:2].copy()
        row[1, 2] = np.nan
        st.update(row)
    assert st.n_seen == 0  # a refused update changes nothing
    with pytest.raises(ValueError, match="dtype"):
        st.update(np.array([["a", "b", "c"]]))
    with pytest.raises(RuntimeError, match="fit"):
        AMADDetector(**TINY).stream()
    st.update(torch.as_tensor(d.test[:5]))  # tensors are rows too
    assert st.n_seen == 5
