"""amad_fast.detection.baselines: each baseline's score on hand-made data with known answers, thresholds as
AMADDetector's, save/load round trips, the registry, input checks, and one SMAP check."""
import ast
import csv
import os
import pathlib
import sys
import warnings

import numpy as np
import pytest
import torch

from amad_fast import metrics

from amad_fast.detection import thresholds
from amad_fast.detection.baselines import (
    BASELINES, FORMAT, IsolationForestDetector, L2NormDetector, MaxAbsZDetector,
    NearestNeighborDetector, PCAErrorDetector, PointScoreDetector, RandomDetector, _pca_error,
    kth_neighbor_distance, pca_fit,
)
from amad_fast.detection.registry import METHODS, load_detector, make_detector
from amad_fast.detection.detector import AMADDetector
from amad_fast.detection.thresholds import THRESHOLDS

REPO = pathlib.Path(__file__).resolve().parents[1]
NEEDS_SKLEARN = {"iforest"}


def _skip_without_sklearn(name):
    if name in NEEDS_SKLEARN:
        pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def series():
    """Correlated 4-channel training and test series; the test has a burst on channel 2."""
    rng = np.random.default_rng(0)
    t = np.arange(1200)
    base = np.stack([np.sin(t / 20), np.cos(t / 20), np.sin(t / 20) + np.cos(t / 20), np.sin(t / 7)], 1)
    train = (base[:800] + 0.05 * rng.standard_normal((800, 4))).astype(np.float32)
    test = (base[800:] + 0.05 * rng.standard_normal((400, 4))).astype(np.float32)
    labels = np.zeros(400, dtype=np.int8)
    test[200:220, 2] += 3.0
    labels[200:220] = 1
    return train, test, labels


# ----------------------------------------------------------------------------------------------
# Known answers
# ----------------------------------------------------------------------------------------------
# two channels with training mean (1, 10) and population std (1, 2): z = ((x0 - 1) / 1, (x1 - 10) / 2)
TRAIN_2CH = np.array([[0.0, 8.0], [2.0, 12.0], [0.0, 12.0], [2.0, 8.0]])


def test_l2_and_maxz_of_known_points():
    X = np.array([[4.0, 18.0], [1.0, 10.0], [-2.0, 4.0]])  # z = (3, 4), (0, 0), (-3, -3)
    l2 = L2NormDetector().fit(TRAIN_2CH)
    np.testing.assert_allclose(l2.standardizer_.mean, [1.0, 10.0])
    np.testing.assert_allclose(l2.standardizer_.std, [1.0, 2.0])
    np.testing.assert_allclose(l2.decision_function(X), [5.0, 0.0, np.sqrt(18.0)], rtol=1e-12)
    np.testing.assert_allclose(l2.train_scores_, np.full(4, np.sqrt(2.0)), rtol=1e-12)
    mz = MaxAbsZDetector().fit(TRAIN_2CH)
    np.testing.assert_allclose(mz.decision_function(X), [4.0, 0.0, 3.0], rtol=1e-12)
    out = l2.decision_function(torch.tensor(X))  # tensors accepted, float64 out
    assert out.dtype == np.float64 and out.shape == (3,)


S = np.sqrt(1.5)  # a channel with values (-S, 0, S) has mean 0 and population std 1, so z = x
TRAIN_3PT = np.array([[-S, 0.0], [0.0, S], [S, -S]])


def test_knn_distance_to_a_three_point_training_set():
    det = NearestNeighborDetector().fit(TRAIN_3PT)
    np.testing.assert_allclose(det.standardizer_.std, [1.0, 1.0])
    X = np.array([[-S, 0.0], [S + 3.0, -S - 4.0], [0.0, S + 0.5], [-S, -0.5]])
    want = [0.0, 5.0, 0.5, 0.5]  # on p0; (3, −4) from p2; 0.5 above p1; 0.5 below p0
    got = det.decision_function(X)
    assert got[0] == 0.0  # exactly: the same point
    np.testing.assert_allclose(got, want, rtol=1e-6)  # (inputs are rounded to float32)
    # leave-one-out training scores: |p0 p1| = √3, |p0 p2| = |p1 p2| = √7.5
    np.testing.assert_allclose(det.train_scores_, [np.sqrt(3.0), np.sqrt(3.0), np.sqrt(7.5)], rtol=1e-6)
    det2 = NearestNeighborDetector(n_neighbors=2).fit(TRAIN_3PT)
    np.testing.assert_allclose(det2.decision_function(X[:1]), [np.sqrt(3.0)], rtol=1e-6)  # 2nd nearest of p0
    np.testing.assert_allclose(det2.train_scores_, [np.sqrt(7.5)] * 3, rtol=1e-6)
    with pytest.raises(ValueError, match="n_neighbors"):
        NearestNeighborDetector(n_neighbors=3).fit(TRAIN_3PT)  # each point has 2 others only


def test_knn_leave_one_out_counts_duplicates():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [3.0, 1.0]])
    det = NearestNeighborDetector().fit(X)
    z = det._z(X)
    d23 = np.linalg.norm(z[3] - z[2])  # (1, 1) is nearer to (3, 1) than to (0, 0) in z-space
    assert d23 < np.linalg.norm(z[2] - z[0])
    np.testing.assert_allclose(det.train_scores_, [0.0, 0.0, d23, d23], rtol=1e-12)


def _brute_kth(q, r, k, exclude_self=False):
    d = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]


@pytest.mark.parametrize("k", [1, 3])
def test_kth_neighbor_distance_is_exact_with_ties_and_duplicates(k):
    # small integers: every distance is exact in float64, and ties and duplicates abound (so the
    # product form's candidates are ambiguous and rows fall back to the full recomputation)
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 3, size=(300, 5)).astype(np.float64)
    query = rng.integers(-1, 4, size=(250, 5)).astype(np.float64)
    for chunk in (7, 512):
        np.testing.assert_array_equal(kth_neighbor_distance(query, ref, k, chunk=chunk), _brute_kth(query, ref, k))
        np.testing.assert_array_equal(kth_neighbor_distance(ref, ref, k, exclude_self=True, chunk=chunk),
                                      _brute_kth(ref, ref, k, exclude_self=True))
    # continuous data: agrees with the direct computation to rounding, and a copied point is at exactly 0
    ref = rng.standard_normal((400, 25)) * 3
    query = np.concatenate([rng.standard_normal((100, 25)) * 3, ref[:5]])
    got = kth_neighbor_distance(query, ref, 1)
    np.testing.assert_allclose(got, _brute_kth(query, ref, 1), rtol=1e-12)
    assert (got[-5:] == 0).all()


def test_pca_error_on_a_line_is_zero_on_it_and_squared_distance_off_it():
    t = np.linspace(-1.0, 1.0, 201)
    X = np.stack([t, 2.0 * t + 5.0], 1)  # both channels standardise to the same z: the line z0 = z1
    det = PCAErrorDetector().fit(X)
    assert det.components_.shape == (1, 2)
    sd = t.std()
    d = 1.5  # a point at distance d from the line in z-space: z = (d/√2, −d/√2)
    off = np.array([[sd * d / np.sqrt(2), -2 * sd * d / np.sqrt(2) + 5.0]])
    on = np.array([[0.3, 5.6], [-2.0, 1.0]])  # further out along the line: still error 0
    scores = det.decision_function(np.concatenate([on, off]))
    np.testing.assert_allclose(scores[:2], 0.0, atol=1e-10)  # (inputs are rounded to float32)
    np.testing.assert_allclose(scores[2], d ** 2, rtol=1e-5)
    np.testing.assert_allclose(det.train_scores_, 0.0, atol=1e-10)
    # exactly representable points on the line: the projection's rounding noise (~1e-32) counts as 0
    k = np.arange(-50.0, 51.0)
    exact = PCAErrorDetector().fit(np.stack([k, k], 1))
    assert (exact.train_scores_ == 0.0).all()
    np.testing.assert_array_equal(exact.decision_function([[3.0, 3.0], [7.0, 7.0], [1.0, -1.0]])[:2], 0.0)


def test_pca_keeps_the_variance_fraction_like_sklearn():
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((500, 6)) @ np.diag([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])
    # cumulative explained-variance ratios of this Z: 0.636, 0.857, 0.965, 0.992, 0.9997, 1
    for variance, k in ((0.5, 1), (0.9, 3), (0.95, 3), (0.99, 4), (1.0, 6)):
        assert pca_fit(Z, variance)["components"].shape == (k, 6), variance
    decomposition = pytest.importorskip("sklearn.decomposition")
    W = rng.standard_normal((50, 6)) * 4
    for variance in (0.5, 0.9, 0.99):
        ref = decomposition.PCA(n_components=variance, svd_solver="full").fit(Z)
        mine = pca_fit(Z, variance)
        assert mine["components"].shape[0] == ref.n_components_
        want = ((W - ref.inverse_transform(ref.transform(W))) ** 2).sum(1)
        np.testing.assert_allclose(_pca_error(W, mine["mean"], mine["components"]), want, rtol=1e-9)


def test_pca_with_no_training_variance_keeps_zero_components():
    X = np.tile([[1.0, 5.0]], (50, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det = PCAErrorDetector().fit(X)
    assert [str(w.message) for w in caught] == ["X: 2 constant channel(s) [0, 1] are only centred (std set to 1)"]
    assert det.components_.shape == (0, 2)
    np.testing.assert_allclose(det.decision_function([[4.0, 9.0], [1.0, 5.0]]), [25.0, 0.0])  # squared norm of z
    with pytest.raises(ValueError, match="at least 2 time steps"), pytest.warns(RuntimeWarning, match="constant"):
        PCAErrorDetector().fit(X[:1])


def test_iforest_ranks_an_obvious_outlier_first():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(3)
    train = rng.standard_normal((500, 3))
    det = IsolationForestDetector(n_estimators=50).fit(train)
    test = rng.standard_normal((60, 3))
    test[17] = [8.0, -8.0, 8.0]
    scores = det.decision_function(test)
    assert int(np.argmax(scores)) == 17
    again = IsolationForestDetector(n_estimators=50).fit(train)
    np.testing.assert_array_equal(again.decision_function(test), scores)  # the same seed grows the same forest
    other = IsolationForestDetector(n_estimators=50, seed=1).fit(train)
    assert not np.array_equal(other.decision_function(test), scores)


def test_random_is_deterministic_and_uniform():
    det = RandomDetector(seed=7).fit(np.zeros((10, 2)) + np.arange(10)[:, None])
    X = np.random.default_rng(0).standard_normal((20000, 2))
    s = det.decision_function(X)
    np.testing.assert_array_equal(s, np.random.default_rng(7).uniform(size=20000))
    np.testing.assert_array_equal(s, det.decision_function(X * 100))  # the values do not matter
    np.testing.assert_array_equal(s, RandomDetector(seed=7).fit(X).decision_function(X))
    assert not np.array_equal(s, RandomDetector(seed=8).fit(X).decision_function(X))
    counts = np.histogram(s, bins=10, range=(0.0, 1.0))[0]
    assert np.all(np.abs(counts - 2000) < 200), counts
    assert s.min() >= 0.0 and s.max() < 1.0


# ----------------------------------------------------------------------------------------------
# Thresholds, parameters, input checks
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", THRESHOLDS)
def test_thresholds_follow_amad_detectors_rules(rule, series):
    train, test, labels = series
    det = L2NormDetector(threshold=rule, contamination=0.02).fit(train)
    amad = AMADDetector(threshold=rule, contamination=0.02)
    amad.train_scores_ = det.train_scores_
    amad.model_ = object()  # stands in for a fitted model: only the threshold code runs
    amad.threshold_ = amad._fixed_threshold()
    scores = det.decision_function(test)
    assert det.threshold_ == amad.threshold_
    assert det.threshold_for(scores) == amad.threshold_for(scores)
    pred = det.predict(test)
    assert pred.dtype == np.int8 and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, metrics.predict(scores, amad.threshold_for(scores)))
    assert det.last_threshold_ == amad.threshold_for(scores)
    if rule == "paper":
        assert det.threshold_ is None
        assert det.threshold_for(scores) != det.threshold_for(scores[:50])  # uses the judged scores
    np.testing.assert_array_equal(det.fit_predict(train), det.fit(train).predict(train))
    assert metrics.auroc(scores, labels) > 0.9


def test_params_repr_and_validation():
    det = PCAErrorDetector(variance=0.8, threshold="train")
    assert det.get_params() == {"variance": 0.8, "threshold": "train", "contamination": 0.01, "seed": 0,
                                "nan_policy": "interpolate"}
    assert repr(det) == "PCAErrorDetector(variance=0.8)"  # 'train' is the default
    assert repr(PCAErrorDetector(threshold="paper")) == "PCAErrorDetector(threshold='paper')"
    assert repr(NearestNeighborDetector()) == "NearestNeighborDetector()"
    assert NearestNeighborDetector().threshold == "train"  # the default: fixed from the training scores
    with pytest.raises(ValueError, match=r"threshold: expected one of \('paper', 'train', 'pot'\), got 'best'"):
        L2NormDetector(threshold="best")
    for bad in (0, 1, 100, -1, "x"):
        with pytest.raises(ValueError, match=r"contamination: expected a fraction in \(0, 1\)"):
            L2NormDetector(contamination=bad)
    with pytest.raises(ValueError, match="variance"):
        PCAErrorDetector(variance=1.5)
    with pytest.raises(ValueError, match="n_neighbors"):
        NearestNeighborDetector(n_neighbors=0)
    with pytest.raises(ValueError, match="n_estimators"):
        IsolationForestDetector(n_estimators=2.5)
    with pytest.raises(ValueError, match="seed"):
        RandomDetector(seed=-1)
    with pytest.raises(ValueError, match="nan_policy"):
        MaxAbsZDetector(nan_policy="drop")
    with pytest.raises(ValueError, match="unknown parameter 'depth'"):
        det.set_params(depth=3)
    with pytest.raises(ValueError, match="threshold"):
        det.set_params(threshold="nope")
    assert det.threshold == "train"  # a rejected value is not kept
    # on a fitted detector a new threshold rule takes effect at once
    det.fit(TRAIN_2CH)
    assert det.threshold_ == thresholds.train_threshold(det.train_scores_, 0.01)
    det.set_params(threshold="pot")
    assert det.threshold_ == thresholds.pot_threshold(det.train_scores_)


def test_input_checks(series):
    train, test, _ = series
    det = L2NormDetector()
    for call in (lambda: det.decision_function(test), lambda: det.predict(test), lambda: det.save("x.pt"),
                 lambda: det.threshold_for(np.ones(3))):
        with pytest.raises(RuntimeError, match=r"L2NormDetector: not fitted yet; call fit\(X\) or L2NormDetector.load"):
            call()
    det.fit(train)
    with pytest.raises(ValueError, match=r"X: expected 4 channel\(s\)"):
        det.decision_function(test[:, :3])
    bad = test.copy()
    bad[5, 1] = np.nan
    with pytest.warns(RuntimeWarning, match="interpolation"):
        assert np.isfinite(det.decision_function(bad)).all()
    with pytest.raises(ValueError, match="non-finite"):
        L2NormDetector(nan_policy="raise").fit(train).decision_function(bad)
    one = L2NormDetector().fit(train[:, 0])  # a 1-D series is one channel
    assert one.n_channels_ == 1 and one.decision_function(test[:, 0]).shape == (400,)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_constant_training_channel_is_only_centred(name):
    _skip_without_sklearn(name)
    rng = np.random.default_rng(4)
    X = np.column_stack([rng.standard_normal(300), np.full(300, 7.0), rng.standard_normal(300)])
    with pytest.warns(RuntimeWarning, match=r"constant channel\(s\) \[1\]"):
        det = make_detector(name).fit(X)
    np.testing.assert_allclose(det.standardizer_.std[1], 1.0)
    test = np.column_stack([np.zeros(3), [7.0, 9.0, 17.0], np.zeros(3)])
    s = det.decision_function(test)
    assert np.isfinite(s).all() and np.isfinite(det.train_scores_).all()
    if name in ("l2", "maxz"):  # z of the constant channel = its offset (std 1), the others ~0
        np.testing.assert_allclose(s, [0.0, 2.0, 10.0], atol=0.2)
    if name in ("knn", "pca"):
        assert s[2] > s[0]
    # (an isolation forest never splits on a channel that was constant in training: it cannot see it)


# ----------------------------------------------------------------------------------------------
# Persistence and registry
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_save_load_round_trip(name, series, tmp_path):
    _skip_without_sklearn(name)
    train, test, _ = series
    det = make_detector(name, threshold="train", contamination=0.03, seed=5).fit(train)
    path = tmp_path / f"{name}.pt"
    det.save(path)
    raw = torch.load(path, weights_only=True)  # plain containers only
    assert raw["format"] == FORMAT == "amad_fast.baseline/1" and raw["method"] == name
    for loaded in (type(det).load(path), load_detector(path), PointScoreDetector.load(str(path))):
        assert type(loaded) is type(det)
        assert loaded.get_params() == det.get_params()
        np.testing.assert_array_equal(loaded.train_scores_, det.train_scores_)
        assert loaded.threshold_ == det.threshold_ and loaded.n_channels_ == det.n_channels_
        np.testing.assert_array_equal(loaded.decision_function(test), det.decision_function(test))
        np.testing.assert_array_equal(loaded.predict(test), det.predict(test))


def test_load_refuses_foreign_files(series, tmp_path):
    train, _, _ = series
    l2_path = tmp_path / "l2.pt"
    L2NormDetector().fit(train).save(l2_path)
    with pytest.raises(ValueError, match=rf"{l2_path}: expected a 'knn' detector file .* got method 'l2'"):
        NearestNeighborDetector.load(l2_path)
    other = tmp_path / "other.pt"
    torch.save({"format": "someone.else/3", "weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=rf"{other}: expected a baseline detector file .* got format 'someone.else/3'"):
        L2NormDetector.load(other)
    with pytest.raises(ValueError, match=rf"{other}: expected a detector file of format .* got format 'someone.else/3'"):
        load_detector(other)
    text = tmp_path / "notes.txt"
    text.write_text("not a detector")
    for load in (load_detector, L2NormDetector.load):
        with pytest.raises(ValueError, match=rf"{text}: not a valid detector file: unreadable"):
            load(text)
    with pytest.raises(FileNotFoundError):
        load_detector(tmp_path / "missing.pt")


def test_load_detector_opens_amad_files_too(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 3)).astype(np.float32)
    amad = make_detector("amad", window_size=16, d_model=8, n_heads=2, n_layers=1, num_scales=2, d_ff=16,
                         epochs=1, train_stride=8, progress=False).fit(X)
    assert isinstance(amad, AMADDetector)
    path = tmp_path / "amad.pt"
    amad.save(path)
    loaded = load_detector(path)
    assert isinstance(loaded, AMADDetector)
    np.testing.assert_array_equal(loaded.decision_function(X), amad.decision_function(X))
    with pytest.raises(ValueError, match=rf"{path}: expected a baseline detector file .* got format 'amad_fast.detector/1'"):
        L2NormDetector.load(path)


def test_make_detector_names():
    assert METHODS == ("amad", "random", "l2", "maxz", "pca", "knn", "iforest")
    with pytest.raises(ValueError) as err:
        make_detector("xyz")
    assert str(err.value) == ("method: expected one of ['amad', 'random', 'l2', 'maxz', 'pca', 'knn', 'iforest'], "
                              "got 'xyz'")
    det = make_detector("knn", n_neighbors=3, threshold="pot")
    assert isinstance(det, NearestNeighborDetector) and det.n_neighbors == 3 and det.threshold == "pot"
    with pytest.raises(TypeError):
        make_detector("l2", n_neighbors=3)
    for name, cls in BASELINES.items():
        assert cls.method == name and isinstance(make_detector(name), cls)


def test_scikit_learn_is_optional(monkeypatch, series):
    tree = ast.parse((REPO / "amad_fast" / "detection" / "baselines.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top for a in n.names] + [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [m for m in names if m.startswith("sklearn")]  # no module-level scikit-learn import
    train, test, _ = series
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now fails
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)
    with pytest.raises(ImportError, match=r"IsolationForestDetector needs scikit-learn.*amad_fast\[baselines\]"):
        IsolationForestDetector().fit(train)
    for name in ("pca", "knn", "l2", "maxz", "random"):  # numpy/torch only
        assert make_detector(name).fit(train).decision_function(test).shape == (400,)


# ----------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------
def _smap_dir():
    roots = [r for r in os.environ.get("AMAD_DATA", "").split(os.pathsep) if r]
    roots.append(str(REPO.parent / "shared" / "data"))
    for root in roots:
        d = pathlib.Path(root) / "SMAP"
        if (d / "SMAP_entities.csv").is_file() and (d / "SMAP_train.npy").is_file():
            return d
    pytest.skip(f"SMAP (with SMAP_entities.csv) not found under {roots}")


def test_smap_p1_l2_auroc_matches_numpy():
    d = _smap_dir()
    row = next(r for r in csv.DictReader(open(d / "SMAP_entities.csv")) if r["entity"] == "P-1")
    a, b, c, e = (int(row[k]) for k in ("train_start", "train_end", "test_start", "test_end"))
    X = np.load(d / "SMAP_train.npy", mmap_mode="r")[a:b].astype(np.float64)
    Y = np.load(d / "SMAP_test.npy", mmap_mode="r")[c:e].astype(np.float64)
    y = np.load(d / "SMAP_test_label.npy", mmap_mode="r")[c:e]
    mu, sd = X.mean(0), X.std(0)
    sd[sd == 0] = 1.0
    want = metrics.auroc(np.linalg.norm((Y - mu) / sd, axis=1), y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # P-1's constant channels
        det = L2NormDetector().fit(X)
    got = metrics.auroc(det.decision_function(Y), y)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0.5 < got < 1.0


def test_baselines_module_does_not_import_the_amad_detector():
    """The registry sits above both kinds of detector: baselines.py names none of AMAD's modules."""
    import ast

    tree = ast.parse((REPO / "amad_fast" / "detection" / "baselines.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "amad_fast.detection.detector" not in imported and "amad_fast.detection.registry" not in imported


@pytest.mark.parametrize("rule", ["train", "paper"])
def test_files_storing_anomaly_ratio_in_percent_load_with_the_same_threshold(series, tmp_path, rule):
    """A baseline file whose params hold the percent-valued ``anomaly_ratio`` (no ``contamination``)
    loads with contamination = anomaly_ratio / 100 and the thresholds it had."""
    from amad_fast.files import META_KEYS, write_file

    train, test, _ = series
    L2NormDetector().fit(train).save(tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    params = {k: v for k, v in state["params"].items() if k != "contamination"}
    params.update(threshold=rule, anomaly_ratio=2.0)
    train_scores = state["train_scores"].numpy()
    stored = float(np.percentile(train_scores, 100.0 - 2.0)) if rule == "train" else None
    old = {k: v for k, v in state.items() if k not in META_KEYS}
    old.update(params=params, threshold=stored)
    write_file(tmp_path / "old.pt", FORMAT, old)
    for det in (load_detector(tmp_path / "old.pt"), L2NormDetector.load(tmp_path / "old.pt")):
        assert det.contamination == 0.02 and det.threshold_ == stored
        scores = det.decision_function(test)
        want = stored if rule == "train" else float(np.percentile(np.concatenate([train_scores, scores]), 98.0))
        assert det.threshold_for(scores) == want
