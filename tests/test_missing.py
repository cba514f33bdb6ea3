"""AMADDetector(nan_policy="mask"): series with missing stretches, trained and scored through the
attention's key padding mask; missing steps have NaN scores and are masked, not filled."""
import numpy as np
import pytest
import torch

from amad_fast.data.series import Standardizer, check_series, missing_steps
from amad_fast.detection.baselines import L2NormDetector
from amad_fast.detection.detector import AMADDetector

SMALL = dict(window_size=16, d_model=16, n_heads=2, n_layers=1, num_scales=2, epochs=1, batch_size=8,
             train_stride=4, progress=False, device="cpu", seed=1, backend="reference")


def _series(T=400, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return np.stack([np.sin(t / 5), np.cos(t / 9), 0.3 * rng.normal(size=T)], 1).astype(np.float32)


def _with_gaps(X):
    """X with a missing stretch in every channel (steps 100-129) and one channel missing at 250-259."""
    Y = X.copy()
    Y[100:130] = np.nan
    Y[250:260, 1] = np.nan
    return Y


def _missing(T):
    m = np.zeros(T, dtype=bool)
    m[100:130] = m[250:260] = True
    return m


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    X = _with_gaps(_series())
    return AMADDetector(nan_policy="mask", **SMALL).fit(X), X


def test_missing_steps_score_nan_and_the_others_are_finite(fitted):
    det, X = fitted
    missing = _missing(len(X))
    for scores in (det.train_scores_, det.decision_function(X)):
        assert np.isnan(scores[missing]).all()
        assert np.isfinite(scores[~missing]).all()
    assert np.isfinite(det.threshold_)
    labels = det.predict(X)
    assert labels.dtype == np.int8 and not labels[missing].any()  # a missing step is never flagged
    assert np.array_equal(det.labels_, (np.nan_to_num(det.train_scores_, nan=-np.inf) > det.threshold_)
                          .astype(np.int8))
    assert np.isfinite(det.error_scale_).all() and np.isfinite(det.position_scale_).all()


def test_values_under_the_mask_change_no_score(fitted):
    """The observed channels of a partly missing step are masked with it: changing them changes
    neither the training (same model, threshold) nor any score."""
    det, X = fitted
    Y = X.copy()
    Y[250:260, [0, 2]] = 1e3  # channel 1 is NaN there, so the whole step is missing
    other = AMADDetector(nan_policy="mask", **SMALL).fit(Y)
    for (n1, p1), (n2, p2) in zip(det.model_.named_parameters(), other.model_.named_parameters()):
        assert torch.equal(p1, p2), n1
    np.testing.assert_array_equal(det.train_scores_, other.train_scores_)
    assert det.threshold_ == other.threshold_
    np.testing.assert_array_equal(det.decision_function(X), det.decision_function(Y))
    # the observed values around the stretch do change scores: the test can fail
    Z = X.copy()
    Z[240:250, 0] += 5.0
    assert not np.allclose(np.nan_to_num(det.decision_function(Z)), np.nan_to_num(det.decision_function(X)))


def test_a_window_with_no_observed_step_adds_nothing():
    """A gap longer than a window: the windows inside it are skipped, the steps around it scored."""
    torch.set_num_threads(1)
    X = _series(T=420)
    X[150:200] = np.nan  # 50 steps > window_size 16
    det = AMADDetector(nan_policy="mask", **SMALL).fit(X)
    scores = det.decision_function(X)
    assert np.isnan(scores[150:200]).all() and np.isfinite(np.delete(scores, np.arange(150, 200))).all()


def test_standardisation_statistics_come_from_observed_values():
    X = _with_gaps(_series())
    A = check_series(X, nan_policy="mask")
    assert np.isnan(A[100:130]).all() and np.isnan(A[250:260, 1]).all()
    np.testing.assert_array_equal(missing_steps(A), _missing(len(X)))
    s = Standardizer().fit(A, nan_policy="mask")
    observed = A[~_missing(len(X))].astype(np.float64)  # the fully observed steps only
    np.testing.assert_array_equal(s.mean, observed.mean(axis=0))
    np.testing.assert_array_equal(s.std, observed.std(axis=0))
    Z = s.transform(A, nan_policy="mask")
    assert np.array_equal(np.isnan(Z), np.isnan(A))
    Xi = X.copy()
    Xi[5, 0] = np.inf  # ±Inf is missing too
    assert np.isnan(check_series(Xi, nan_policy="mask")[5, 0])


def test_the_stream_and_causal_scoring_refuse_missing_steps(fitted):
    det, X = fitted
    with pytest.raises(ValueError, match="causal"):
        det.decision_function(X, causal=True)
    clean = _series()
    # without missing steps both work, equal up to the stream's running-mean rounding
    np.testing.assert_allclose(det.stream().update(clean[:200]), det.decision_function(clean[:200], causal=True),
                               rtol=1e-12, atol=0)
    stream = det.stream()
    stream.update(clean[:20])
    with pytest.raises(ValueError, match="finite values"):
        stream.update(X[100:101])


def test_bad_input_is_refused_with_the_argument_named():
    X = _with_gaps(_series())
    with pytest.raises(ValueError, match="nan_policy"):
        AMADDetector(nan_policy="drop")
    with pytest.raises(ValueError, match="nan_policy"):
        check_series(X, nan_policy="drop")
    Y = X.copy()
    Y[:, 2] = np.nan
    with pytest.raises(ValueError, match=r"channel\(s\) \[2\] contain no finite value"):
        AMADDetector(nan_policy="mask", **SMALL).fit(Y)
    Y = X.copy()
    Y[0::2, 0] = np.nan
    Y[1::2, 1] = np.nan
    with pytest.raises(ValueError, match="missing value in every step"):
        AMADDetector(nan_policy="mask", **SMALL).fit(Y)
    with pytest.raises(ValueError, match="nan_policy"):
        L2NormDetector(nan_policy="mask")
    with pytest.raises(ValueError, match="non-finite"):  # the default policies are unchanged
        AMADDetector(nan_policy="raise", **SMALL).fit(X)
