"""AMAD and the baselines under PyOD's own API: its detector checks, its definitions of
``threshold_`` / ``labels_`` / ``predict_proba`` / ``predict_confidence`` run by PyOD's code on our
scores, and one calling code for a PyOD time-series detector and ours side by side.

Skipped when PyOD is not installed (``pip install pyod``: it needs numba, scipy and scikit-learn,
not torch)."""
import numpy as np
import pytest

pytest.importorskip("pyod", reason="PyOD is not installed (pip install pyod)")
sklearn_validation = pytest.importorskip("sklearn.utils.validation")

from pyod.models.base import BaseDetector  # noqa: E402
from pyod.utils.utility import check_detector, check_parameter  # noqa: E402

import amad_fast  # noqa: E402
from amad_fast.data import make_synthetic  # noqa: E402

TINY = dict(window_size=20, d_model=16, n_heads=2, n_layers=1, num_scales=2, epochs=1, train_stride=10,
            progress=False)
#: the attributes PyOD's own methods require of a fitted detector (its check_is_fitted list)
PYOD_FITTED = ["decision_scores_", "threshold_", "labels_"]


@pytest.fixture(scope="module")
def series():
    return make_synthetic(length=600, channels=3, seed=4, train_length=800)


@pytest.fixture(scope="module", params=["amad", "l2"])
def fitted(request, series):
    det = amad_fast.make_detector(request.param, contamination=0.05,
                                  **(TINY if request.param == "amad" else {}))
    return det.fit(series.train)


class ScoresUnderPyOD(BaseDetector):
    """A PyOD detector whose scores are those of one of ours: PyOD's own ``BaseDetector`` code
    (threshold, labels, predict_proba, predict_confidence) then runs on exactly our scores."""

    def __init__(self, ours=None, contamination=0.1):
        super().__init__(contamination=contamination)
        self.ours = ours

    def fit(self, X, y=None):
        self._set_n_classes(y)
        self.decision_scores_ = np.asarray(self.ours.decision_scores_, dtype=np.float64)
        self._process_decision_scores()
        return self

    def decision_function(self, X):
        return self.ours.decision_function(X)


class FixedThreshold:
    """PyOD's interface for a threshold not given by a contamination fraction (a PyThresh object:
    ``fit(scores)`` sets ``labels_`` and ``thresh_``; ``predict(scores)`` labels new ones), here
    holding a threshold one of our rules chose."""

    def __init__(self, threshold):
        self.threshold = threshold

    def fit(self, scores):
        self.thresh_ = self.threshold
        self.labels_ = self.predict(scores)
        return self

    def predict(self, scores):
        return (np.asarray(scores) > self.threshold).astype(int)


def test_pyod_checks_accept_our_detectors(fitted, series):
    check_detector(fitted)
    check_parameter(fitted.contamination, 0, 0.5, include_left=False, include_right=True,
                    param_name="contamination")  # PyOD's range for contamination
    unfitted = amad_fast.make_detector("l2")
    with pytest.raises(sklearn_validation.NotFittedError):
        sklearn_validation.check_is_fitted(unfitted, PYOD_FITTED)
    with pytest.raises(sklearn_validation.NotFittedError):
        sklearn_validation.check_is_fitted(unfitted)
    sklearn_validation.check_is_fitted(fitted, PYOD_FITTED)
    sklearn_validation.check_is_fitted(fitted)


def test_threshold_and_labels_are_pyods(fitted, series):
    pyod = ScoresUnderPyOD(fitted, contamination=fitted.contamination).fit(series.train)
    assert fitted.threshold_ == pyod.threshold_
    np.testing.assert_array_equal(fitted.labels_, pyod.labels_)
    np.testing.assert_array_equal(fitted.predict(series.test), pyod.predict(series.test))


@pytest.mark.parametrize("method", ["linear", "unify"])
def test_predict_proba_is_pyods(fitted, series, method):
    pyod = ScoresUnderPyOD(fitted, contamination=fitted.contamination).fit(series.train)
    ours = fitted.predict_proba(series.test, method=method)
    np.testing.assert_array_equal(ours, pyod.predict_proba(series.test, method=method))
    assert ours.shape == (len(series.test), 2) and 0 < ours[:, 1].mean() < 1


def test_predict_confidence_is_pyods(fitted, series):
    pyod = ScoresUnderPyOD(fitted, contamination=fitted.contamination).fit(series.train)
    np.testing.assert_array_equal(fitted.predict_confidence(series.test), pyod.predict_confidence(series.test))
    labels, confidence = fitted.predict(series.test, return_confidence=True)
    want_labels, want_confidence = pyod.predict(series.test, return_confidence=True)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(confidence, want_confidence)


def test_predict_confidence_under_pot_is_pyods_for_a_threshold_not_from_contamination(series):
    det = amad_fast.make_detector("l2", threshold="pot", contamination=0.05).fit(series.train)
    pyod = ScoresUnderPyOD(det, contamination=FixedThreshold(det.threshold_)).fit(series.train)
    np.testing.assert_array_equal(det.labels_, pyod.labels_)
    np.testing.assert_array_equal(det.predict_confidence(series.test), pyod.predict_confidence(series.test))


def test_one_calling_code_for_a_pyod_time_series_detector_and_ours(series):
    ts_od = pytest.importorskip("pyod.models.ts_od", reason="this PyOD has no TimeSeriesOD (added in PyOD 3)")
    detectors = [ts_od.TimeSeriesOD(detector="KNN", window_size=20, contamination=0.05),
                 amad_fast.make_detector("amad", contamination=0.05, **TINY),
                 amad_fast.make_detector("knn", contamination=0.05)]
    for det in detectors:
        det.fit(series.train)
        assert det.decision_scores_.shape == (len(series.train),) and np.isscalar(det.threshold_)
        assert set(np.unique(det.labels_)) <= {0, 1} and det.labels_.mean() <= 0.05 + 1e-9
        scores = det.decision_function(series.test)
        labels, confidence = det.predict(series.test, return_confidence=True)
        proba = det.predict_proba(series.test, method="linear")
        assert scores.shape == labels.shape == confidence.shape == (len(series.test),)
        np.testing.assert_array_equal(labels, (scores > det.threshold_).astype(int))
        assert proba.shape == (len(series.test), 2) and ((proba >= 0) & (proba <= 1)).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert ((confidence >= 0) & (confidence <= 1)).all()
