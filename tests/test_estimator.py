"""Estimator conventions users of scikit-learn and PyOD expect: the
detectors from the top-level package, sklearn's clone / get_params / set_params, PyOD's
decision_scores_ / threshold_ / labels_, and device="auto"."""
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
