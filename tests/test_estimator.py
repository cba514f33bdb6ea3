"""Estimator conventions users of scikit-learn and PyOD expect: the
detectors from the top-level package, sklearn's clone / get_params / set_params, PyOD's
decision_scores_ / threshold_ / labels_, and device="auto"."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import amad_fast
from amad_fast.data import make_synthetic

TINY = dict(window_size=20, d_model=16, n_heads=2, n_layers=1, num_scales=2, epochs=1, train_stride=10,
            progress=False)


@pytest.fixture(scope="module")
def series():
    return make_synthetic(length=600, channels=3, seed=2, train_length=800)


def test_detectors_come_from_the_top_level_package_without_loading_them_for_the_attention():
    from amad_fast.detection.registry import make_detector
    from amad_fast.detection.detector import AMADDetector
    from amad_fast.detection.estimator import DetectorBase

    assert amad_fast.AMADDetector is AMADDetector and amad_fast.make_detector is make_detector
    assert isinstance(amad_fast.make_detector("l2"), DetectorBase)
    with pytest.raises(AttributeError, match="no attribute 'Detector'"):
        amad_fast.Detector
    # `import amad_fast` for the attention alone does not import the detector side
    code = "import sys, amad_fast; print('amad_fast.detection.detector' in sys.modules, 'amad_fast.detection.training' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("method", ["amad", "l2", "knn"])
def test_sklearn_clone_get_and_set_params(method):
    sklearn_base = pytest.importorskip("sklearn.base")
    det = amad_fast.make_detector(method, threshold="pot", seed=3, contamination=0.02,
                                  **(TINY if method == "amad" else {}))
    twin = sklearn_base.clone(det)
    assert type(twin) is type(det) and twin is not det and twin.get_params() == det.get_params()
    assert "threshold='pot'" in repr(twin) and "seed=3" in repr(twin) and "contamination=0.02" in repr(twin)
    assert twin.contamination == 0.02 and "anomaly_ratio" not in twin.get_params()
    twin.set_params(seed=4, contamination=0.1)
    assert twin.seed == 4 and det.seed == 3 and twin.contamination == 0.1 and det.contamination == 0.02


@pytest.mark.parametrize("method", ["amad", "l2"])
def test_pyod_attributes_after_fit(series, method):
    det = amad_fast.make_detector(method, **(TINY if method == "amad" else {}))
    assert not hasattr(det, "decision_scores_") and not hasattr(det, "labels_")  # unfitted: AttributeError
    det.fit(series.train)
    assert det.decision_scores_ is det.train_scores_ and det.decision_scores_.shape == (len(series.train),)
    np.testing.assert_array_equal(det.labels_, det.predict(series.train))
    assert det.labels_.dtype == np.int8 and set(np.unique(det.labels_)) <= {0, 1}
    # the default threshold ("train") flags about a fraction contamination of the training steps
    assert det.threshold == "train" and det.labels_.mean() <= det.contamination + 1e-9
    det.set_params(threshold="paper")  # a rule that needs the judged scores: labels_ follows it
    np.testing.assert_array_equal(det.labels_, det.predict(series.train))


def test_device_auto_is_the_default_and_resolves_here(series, tmp_path):
    det = amad_fast.AMADDetector(**TINY)
    assert det.device == "auto"
    det.fit(series.train)
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(det.model_.parameters()).device.type == want
    det.save(tmp_path / "d.pt")
    back = amad_fast.AMADDetector.load(tmp_path / "d.pt")  # "auto" is stored: it loads on whatever is here
    assert back.device == "auto" and next(back.model_.parameters()).device.type == want
    np.testing.assert_array_equal(back.decision_function(series.test), det.decision_function(series.test))


def binomial_upper_tail(n, m, p):
    """P(X > n − m) for X ~ Binomial(n, p), summed term by term (independent of SciPy)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(n - m + 1, n + 1))


@pytest.fixture(scope="module")
def fitted_l2(series):
    return amad_fast.make_detector("l2", contamination=0.05).fit(series.train)


def test_predict_proba_linear_is_the_min_max_scaled_score(series, fitted_l2):
    train = fitted_l2.decision_scores_
    scores = fitted_l2.decision_function(series.test)
    proba = fitted_l2.predict_proba(series.test)
    want = np.clip((scores - train.min()) / (train.max() - train.min()), 0, 1)
    np.testing.assert_allclose(proba[:, 1], want, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(proba[:, 0], 1 - proba[:, 1])
    assert (proba[:, 1] == 1).any() and (proba[:, 1] < 1).any()  # scores above the training range clip to 1
    with pytest.raises(ValueError, match="method: expected one of"):
        fitted_l2.predict_proba(series.test, method="sigmoid")
    with pytest.raises(RuntimeError, match="not fitted"):
        amad_fast.make_detector("l2").predict_proba(series.test)


def test_predict_proba_unify_is_the_gaussian_scaled_score(series, fitted_l2):
    pytest.importorskip("scipy")
    train = fitted_l2.decision_scores_
    scores = fitted_l2.decision_function(series.test)
    z = (scores - train.mean()) / (train.std() * math.sqrt(2))
    want = np.clip([math.erf(v) for v in z], 0, 1)
    np.testing.assert_allclose(fitted_l2.predict_proba(series.test, method="unify")[:, 1], want, rtol=1e-12, atol=1e-15)
    constant = amad_fast.make_detector("l2").fit(series.train)
    constant.train_scores_ = np.full_like(constant.train_scores_, 2.0)
    with pytest.raises(ValueError, match="standard deviation 0"):
        constant.predict_proba(series.test, method="unify")


@pytest.mark.parametrize("rule", ["train", "pot"])
def test_predict_confidence_is_exceeds_binomial_confidence_in_the_label(series, rule):
    pytest.importorskip("scipy")
    det = amad_fast.make_detector("l2", contamination=0.05, threshold=rule).fit(series.train)
    train = np.sort(det.decision_scores_)
    n = train.size
    flagged_in_training = int(n * 0.05) if rule == "train" else int((train > det.threshold_).sum())
    judged = np.array([train[0] - 1, train[n // 2], det.threshold_, train[-1] + 1])
    det.decision_function = lambda X: judged  # the confidence of chosen scores
    labels, confidence = det.predict(series.test, return_confidence=True)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1])
    for score, label, got in zip(judged, labels, confidence):
        tail = binomial_upper_tail(n, flagged_in_training, (1 + int((train <= score).sum())) / (2 + n))
        assert got == pytest.approx(tail if label else 1 - tail, rel=1e-9, abs=1e-12)
    if rule == "train":  # 40 training steps flagged: far from the threshold a label is near certain, at it not
        assert confidence[0] > 0.999 and confidence[3] > 0.999 and confidence[2] < 0.9
    np.testing.assert_array_equal(det.predict_confidence(series.test), confidence)
