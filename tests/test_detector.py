"""AMADDetector: fit/score/predict on synthetic anomalies, the spec §4 score, thresholds,
save/load round trip and bad input."""
import numpy as np
import pytest
import torch

from amad_fast import metrics

from amad_fast.detection import thresholds
from amad_fast.data import make_synthetic
from amad_fast.detection.scoring import (
    ERROR_SCALE_FLOOR, PROFILE_WINDOWS, channel_error_scale, combine_terms, score_series, smooth_scores,
    step_terms,
)
from amad_fast.detection.detector import AMADDetector
from amad_fast.files import META_KEYS, write_file
from amad_fast.detection.training import validation_segments

SMALL = dict(window_size=16, d_model=16, n_heads=2, n_layers=2, num_scales=2, d_ff=32, epochs=3,
             train_stride=4, batch_size=16, lr=1e-3, progress=False, seed=0,
             smooth=1, score="recon_js", position_norm="none")  # the spec's per-step score: its formulas
#                                                                   are checked below (position_norm below too)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(length=1500, channels=4, seed=1, train_length=2000)


@pytest.fixture(scope="module")
def fitted(data):
    return AMADDetector(**SMALL).fit(data.train)


def test_training_lowers_loss_and_ranks_anomalies(fitted, data):
    h = fitted.history_
    assert h[-1]["rec"] < h[0]["rec"]
    scores = fitted.decision_function(data.test)
    assert scores.shape == (data.test.shape[0],) and np.isfinite(scores).all()
    auc = metrics.auroc(scores, data.test_labels)
    assert auc > 0.7, auc


def _window_terms(fitted, X):
    """Per-channel squared error (L, C) and spec js̄ (L,) of one window, straight from the model."""
    x = torch.as_tensor(fitted.standardizer_.transform(X))[None]
    with torch.no_grad():
        out = fitted.model_(x, need_branches=False)
    return ((x - out.recon) ** 2)[0], 0.5 * (out.kl_local + out.kl_global).mean(dim=(0, 2))[0]


def test_score_matches_spec_formula(fitted, data):
    err_c, js = _window_terms(fitted, data.test[:16])
    err = err_c.mean(-1)
    want = torch.softmax(-50.0 * js, dim=0) * err
    fitted.error_norm = "none"  # the spec's plain mean over channels
    try:
        np.testing.assert_allclose(fitted.decision_function(data.test[:16]), want.double().numpy(), rtol=1e-5, atol=1e-9)
        fitted.score = "recon"
        np.testing.assert_allclose(fitted.decision_function(data.test[:16]), err.double().numpy(), rtol=1e-5)
    finally:
        fitted.score, fitted.error_norm = "recon_js", "channel"


def test_channel_error_norm_divides_by_validation_error(fitted, data):
    # the scale is the mean squared error per channel on the validation split (last 20 % of train)
    Z = fitted.standardizer_.transform(data.train)
    err, _ = step_terms(fitted.model_, Z, stride=fitted.resolved_score_stride())
    val = err[-int(round(len(Z) * fitted.val_fraction)):]
    np.testing.assert_allclose(fitted.error_scale_, np.maximum(val.mean(0), ERROR_SCALE_FLOOR), rtol=1e-12)
    err_c, js = _window_terms(fitted, data.test[:16])
    scale = torch.as_tensor(fitted.error_scale_)
    want = torch.softmax(-50.0 * js.double(), dim=0) * (err_c.double() / scale).mean(-1)
    got = fitted.decision_function(data.test[:16])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-9)
    # a channel with a tiny validation error is floored, not divided by ~0
    assert (channel_error_scale(np.zeros((5, 2))) == ERROR_SCALE_FLOOR).all()


def test_channel_error_scale_follows_the_blocks_validation_split(data):
    det = AMADDetector(**dict(SMALL, epochs=1, val_split="blocks")).fit(data.train)
    Z = det.standardizer_.transform(data.train)
    err, _ = step_terms(det.model_, Z, stride=det.resolved_score_stride())
    _, val = validation_segments(len(Z), 16, 0.2, "blocks")
    assert len(val) > 1
    held_out = np.concatenate([err[a:b] for a, b in val])
    np.testing.assert_allclose(det.error_scale_, np.maximum(held_out.mean(0), ERROR_SCALE_FLOOR), rtol=1e-12)


def test_channel_error_norm_rebalances_a_dominant_channel():
    # channel 0 is reconstructed with error ~100x the others on normal data: with the plain mean it
    # drowns an anomaly on channel 1; divided by each channel's normal error, the anomaly wins
    rng = np.random.default_rng(0)
    err = np.abs(rng.normal(size=(400, 2))) * np.array([100.0, 1.0])
    err[200:210, 1] += 20.0
    labels = np.zeros(400, dtype=np.int8)
    labels[200:210] = 1
    w = np.ones(400)
    plain = combine_terms(err, w, "recon")
    normed = combine_terms(err, w, "recon", channel_error_scale(err[:150]))
    assert metrics.auroc(normed, labels) > 0.99 > 0.9 > metrics.auroc(plain, labels)


def test_smooth_scores():
    s = np.array([0.0, 0.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(smooth_scores(s, 1), s)
    np.testing.assert_allclose(smooth_scores(s, 3), [0.0, 1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(smooth_scores(np.ones(6), 4), np.ones(6))  # ends are not pulled down


def test_smooth_option_smooths_decision_function(fitted, data):
    raw = fitted.decision_function(data.test[:64])
    fitted.smooth = 5
    try:
        np.testing.assert_allclose(fitted.decision_function(data.test[:64]), smooth_scores(raw, 5), rtol=1e-12)
        fitted.smooth = None  # half a window
        assert fitted.resolved_smooth() == 8
        np.testing.assert_allclose(fitted.decision_function(data.test[:64]), smooth_scores(raw, 8), rtol=1e-12)
    finally:
        fitted.smooth = 1
    assert AMADDetector().resolved_smooth() == 50 and AMADDetector(window_size=3).resolved_smooth() == 1


@pytest.mark.parametrize("bad", [dict(error_norm="l2"), dict(smooth=0), dict(smooth=2.5), dict(smooth=True),
                                 dict(score_stride=0), dict(score_stride=101), dict(score_stride=2.5),
                                 dict(score_stride=True), dict(val_split="middle")])
def test_bad_scoring_options_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        AMADDetector(**bad)


def test_nonoverlapping_windows_and_tail(fitted, data):
    fitted.score_stride = 16  # = window_size: spec §4's protocol
    try:
        X = data.test[:16 * 5 + 7]
        full = fitted.decision_function(X)
        head = fitted.decision_function(X[: 16 * 5])
        # windows do not see each other (only float round-off from a different batch shape)
        np.testing.assert_allclose(full[: 16 * 5], head, rtol=1e-5, atol=1e-10)
        tail = fitted.decision_function(X[-16:])  # the tail comes from the window aligned to the end
        np.testing.assert_allclose(full[-7:], tail[-7:], rtol=1e-5, atol=1e-10)
        assert not np.allclose(full[-16:-7], tail[:-7], rtol=1e-3)  # ...and only the uncovered steps
    finally:
        fitted.score_stride = None


@pytest.mark.parametrize("stride", [1, 5])
def test_overlapping_windows_average_the_windows_covering_each_step(fitted, data, stride):
    X = data.test[:16 * 3 + 4]  # 52 steps: regular windows at 0, s, 2s, ... and (s = 5) an end-aligned tail
    T = len(X)
    regular = list(range(0, T - 16 + 1, stride))
    covered = regular[-1] + 16
    err_sum, w_sum, n = np.zeros((T, 4)), np.zeros(T), np.zeros(T)
    for start in regular + ([T - 16] if covered < T else []):
        err_c, js = _window_terms(fitted, X[start : start + 16])
        w = torch.softmax(-50.0 * js.double(), dim=0).numpy()
        for j in range(16):
            t = start + j
            if start in regular or t >= covered:  # the tail window scores only the uncovered steps
                err_sum[t] += err_c[j].double().numpy()
                w_sum[t] += w[j]
                n[t] += 1
    assert (stride == 5) == (covered < T)
    want = (err_sum / n[:, None] / fitted.error_scale_).mean(1) * (w_sum / n)
    fitted.score_stride = stride
    try:
        np.testing.assert_allclose(fitted.decision_function(X), want, rtol=1e-5, atol=1e-9)
    finally:
        fitted.score_stride = None


def test_default_score_stride_is_a_tenth_of_the_window():
    assert AMADDetector(window_size=100).resolved_score_stride() == 10
    assert AMADDetector(window_size=5).resolved_score_stride() == 1
    assert AMADDetector(window_size=100, score_stride=100).resolved_score_stride() == 100


def test_score_series_batching_is_invariant(fitted, data):
    Z = fitted.standardizer_.transform(data.test[:200])
    a = score_series(fitted.model_, Z, "recon_js", 50.0, batch_size=1)
    b = score_series(fitted.model_, Z, "recon_js", 50.0, batch_size=64)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-10)


def test_default_threshold_is_fixed_from_training_scores(fitted, data):
    """The default rule is 'train': the threshold is fixed at fit time from the
    training scores alone, so it does not move with the data being judged, and a batch that scores
    far above training is flagged as a whole instead of a fraction ~contamination of it ('paper')."""
    assert AMADDetector().threshold == "train" and fitted.threshold == "train"
    scores = fitted.decision_function(data.test)
    assert fitted.threshold_ == thresholds.train_threshold(fitted.train_scores_, 0.01)
    assert fitted.threshold_for(scores) == fitted.threshold_for(scores * 100) == fitted.threshold_
    high = np.full(500, 10 * fitted.train_scores_.max())
    assert (high > fitted.threshold_for(high)).mean() == 1.0
    assert (high > thresholds.paper_threshold(fitted.train_scores_, high, 0.01)).mean() < 0.1  # what 'paper' did


def test_thresholds(fitted, data):
    scores = fitted.decision_function(data.test)
    paper = AMADDetector.__new__(AMADDetector)
    paper.__dict__.update(fitted.__dict__)
    paper.set_params(threshold="paper")
    pred = paper.predict(data.test)
    thr = thresholds.paper_threshold(fitted.train_scores_, scores, 0.01)
    assert paper.last_threshold_ == thr and paper.threshold_ is None
    np.testing.assert_array_equal(pred, (scores > thr).astype(np.int8))
    frac = (np.concatenate([fitted.train_scores_, scores]) > thr).mean()
    assert 0.005 <= frac <= 0.015
    for rule in ("train", "pot"):
        det = AMADDetector.__new__(AMADDetector)
        det.__dict__.update(fitted.__dict__)
        det.threshold = rule
        det.threshold_ = det._fixed_threshold()
        assert det.threshold_ == (thresholds.train_threshold(fitted.train_scores_, 0.01) if rule == "train"
                                  else thresholds.pot_threshold(fitted.train_scores_))
        np.testing.assert_array_equal(det.predict(data.test), (scores > det.threshold_).astype(np.int8))


def test_save_load_round_trip(fitted, data, tmp_path):
    path = tmp_path / "det.pt"
    fitted.save(path)
    state = torch.load(path, weights_only=True)  # no pickled code in the file
    assert state["format"] == "amad_fast.detector/1"
    loaded = AMADDetector.load(path)
    np.testing.assert_array_equal(loaded.decision_function(data.test), fitted.decision_function(data.test))
    np.testing.assert_array_equal(loaded.predict(data.test), fitted.predict(data.test))
    assert loaded.get_params() == fitted.get_params()
    state["params"]["device"] = "cuda"  # fitted on a GPU machine, loaded on one without CUDA
    write_file(tmp_path / "gpu.pt", state["format"], state)  # as save() writes it there (with its checksum)
    if not torch.cuda.is_available():
        with pytest.warns(RuntimeWarning, match="CUDA is not available"):
            moved = AMADDetector.load(tmp_path / "gpu.pt")
        assert moved.device == "cpu"
    state["params"]["device"] = "cpu"
    del state["params"]["score_stride"]  # written before the option: scored with non-overlapping windows
    for key in ("checksum", "package_version"):  # ... and before files carried a checksum
        del state[key]
    torch.save(state, tmp_path / "old.pt")
    with pytest.warns(RuntimeWarning, match="no checksum"):
        old = AMADDetector.load(tmp_path / "old.pt")
    assert old.resolved_score_stride() == fitted.window_size
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="format"):
        AMADDetector.load(tmp_path / "other.pt")


def test_fit_is_reproducible(data):
    a = AMADDetector(**dict(SMALL, epochs=1)).fit(data.train[:600])
    b = AMADDetector(**dict(SMALL, epochs=1)).fit(data.train[:600])
    np.testing.assert_array_equal(a.decision_function(data.test[:100]), b.decision_function(data.test[:100]))


def test_bad_input(fitted, data):
    with pytest.raises(ValueError, match="expected 4 channel"):
        fitted.decision_function(data.test[:, :3])
    with pytest.raises(ValueError, match="window_size=16"):
        fitted.decision_function(data.test[:10])
    with pytest.raises(ValueError, match="1-D .* or 2-D"):
        fitted.decision_function(data.test[None])
    X = data.test[:64].copy()
    X[5, 1] = np.nan
    X[9, 2] = np.inf
    with pytest.warns(RuntimeWarning, match="non-finite"):
        s = fitted.decision_function(X)
    assert np.isfinite(s).all()
    strict = AMADDetector.__new__(AMADDetector)
    strict.__dict__.update(fitted.__dict__)
    strict.nan_policy = "raise"
    with pytest.raises(ValueError, match="finite"):
        strict.decision_function(X)
    with pytest.raises(RuntimeError, match="not fitted"):
        AMADDetector(**SMALL).decision_function(data.test)
    with pytest.raises(ValueError, match="window_size=16"):
        AMADDetector(**SMALL).fit(data.train[:10])
    for bad in (dict(score="js"), dict(threshold="best"), dict(contamination=0), dict(contamination=1.0), dict(maxmin="on"), dict(epochs=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AMADDetector(**dict(SMALL, **bad))


def test_constant_channel_is_handled(data):
    X = data.train[:600].copy()
    X[:, 2] = 3.0
    with pytest.warns(RuntimeWarning, match="constant"):
        det = AMADDetector(**dict(SMALL, epochs=1)).fit(X)
    assert np.isfinite(det.decision_function(data.test[:100])).all()


def test_score_terms_share_forward_passes_between_variants(fitted, data):
    X = data.test[:200]
    err, w = fitted.score_terms(X)
    np.testing.assert_array_equal(fitted.scores_from_terms(err, w), fitted.decision_function(X))
    want = smooth_scores(combine_terms(err, w, "recon", fitted.error_scale_), 7)
    np.testing.assert_array_equal(fitted.scores_from_terms(err, w, score="recon", smooth=7), want)
    plain = smooth_scores(combine_terms(err, w, "recon_js", None), 1)
    np.testing.assert_array_equal(fitted.scores_from_terms(err, w, error_norm="none"), plain)
    with pytest.raises(ValueError, match="error_norm"):
        fitted.scores_from_terms(err, w, error_norm="max")


# -- a series' first and last steps are scored on the same footing as its middle --

@pytest.fixture(scope="module")
def edge_case():
    d = make_synthetic(length=2000, channels=4, seed=3, train_length=6000)
    det = AMADDetector(window_size=50, d_model=32, n_heads=4, n_layers=2, num_scales=2, epochs=2, train_stride=5,
                       progress=False, seed=0).fit(d.train[:4000])
    return det, d.train[4000:], d.train.std(axis=0)


def _edge_ratios(det, clean):
    """Median over 19 clean 200-step pieces of (mean of the first 3 / last 3 step scores) / median score."""
    r = []
    for s0 in range(0, len(clean) - 200 + 1, 100):
        s = det.decision_function(clean[s0 : s0 + 200])
        r.append((s[:3].mean() / np.median(s), s[-3:].mean() / np.median(s)))
    return np.median(np.array(r), axis=0)


def test_clean_series_scores_show_no_rise_at_their_edges(edge_case):
    det, clean, _ = edge_case
    assert det.position_norm == "train" and det.position_scale_.shape == (det.window_size,)
    try:
        det.set_params(smooth=1)  # per-step scores: nothing averages the edges away
        first, last = _edge_ratios(det, clean)
        assert 0.67 < first < 1.5 and 0.67 < last < 1.5, (first, last)
        # the raw errors do rise there (the model reconstructs its window's edges worse): what the
        # position profile corrects, and what makes this test able to fail
        det.set_params(position_norm="none")
        assert max(_edge_ratios(det, clean)) > 1.5
    finally:
        det.set_params(smooth=None, position_norm="train")


@pytest.mark.parametrize("where", [0, -1])
def test_an_anomaly_at_the_first_or_last_step_is_found(edge_case, where):
    det, clean, std = edge_case
    x = clean[:400].copy()
    x[where] += 6 * std
    s = det.decision_function(x)
    assert s.argmax() == (where % len(x)), (s.argmax(), np.argsort(s)[::-1][:5])


def test_position_profile_is_the_mean_training_error_per_window_position(fitted, data):
    det = AMADDetector(**dict(SMALL, position_norm="train", score="recon")).fit(data.train)
    Z = det.standardizer_.transform(data.train)
    L, stride = det.window_size, det.resolved_score_stride()
    starts = np.arange(0, len(Z) - L + 1, stride)
    assert len(starts) > PROFILE_WINDOWS  # so the even spread of at most PROFILE_WINDOWS is tested too
    starts = starts[np.linspace(0, len(starts) - 1, PROFILE_WINDOWS).round().astype(int)]
    x = torch.as_tensor(np.stack([Z[s : s + L] for s in starts]))
    with torch.no_grad():
        e = ((x - det.model_(x, need_branches=False).recon) ** 2).double().mean(-1).mean(0).numpy()
    np.testing.assert_allclose(det.position_scale_, np.maximum(e / e.mean(), ERROR_SCALE_FLOOR), rtol=1e-6)
    # one window scored: its per-position errors divided by the profile, then the channel scale
    err_c, _ = _window_terms(det, data.test[:16])
    want = (err_c.double() / torch.as_tensor(det.position_scale_)[:, None] / torch.as_tensor(det.error_scale_)).mean(-1)
    np.testing.assert_allclose(det.decision_function(data.test[:16]), want.numpy(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("rule", ["train", "paper", "pot"])
def test_files_storing_anomaly_ratio_in_percent_load_with_the_same_threshold(fitted, data, tmp_path, rule):
    """A file written while the detector took ``anomaly_ratio`` in percent (its params hold
    ``anomaly_ratio``, no ``contamination``) loads with contamination = anomaly_ratio / 100 and the
    same thresholds: the stored one for "train"/"pot", the same percentile for "paper"."""
    fitted.save(tmp_path / "new.pt")
    state = torch.load(tmp_path / "new.pt", weights_only=True)
    params = {k: v for k, v in state["params"].items() if k != "contamination"}
    params.update(threshold=rule, anomaly_ratio=3.0)  # as such a file stores 3 %
    train_scores = state["train_scores"].numpy()
    old_threshold = {"train": float(np.percentile(train_scores, 100.0 - 3.0)),
                     "pot": thresholds.pot_threshold(train_scores), "paper": None}[rule]
    old = {k: v for k, v in state.items() if k not in META_KEYS}
    old.update(params=params, threshold=old_threshold)
    write_file(tmp_path / "old.pt", state["format"], old)
    loaded = AMADDetector.load(tmp_path / "old.pt")
    assert loaded.contamination == 0.03 and "anomaly_ratio" not in loaded.get_params()
    assert loaded.threshold_ == old_threshold
    scores = loaded.decision_function(data.test)
    want = (old_threshold if rule != "paper"
            else float(np.percentile(np.concatenate([train_scores, scores]), 100.0 - 3.0)))
    assert loaded.threshold_for(scores) == want
    if rule == "train":  # refitting the threshold from the converted contamination gives the stored one
        assert loaded._fixed_threshold() == old_threshold


def test_contamination_is_one_parameter_in_pyods_unit(fitted):
    """``contamination`` (a fraction) is the only name for the expected anomaly share: the old
    percent-valued ``anomaly_ratio`` is not a parameter, so passing it fails loudly instead of
    meaning 100x; get_params/set_params/repr carry it."""
    det = AMADDetector(contamination=0.05)
    assert det.get_params()["contamination"] == 0.05 and "anomaly_ratio" not in det.get_params()
    assert repr(det) == "AMADDetector(contamination=0.05)"
    with pytest.raises(TypeError, match="anomaly_ratio"):
        AMADDetector(anomaly_ratio=1.0)
    with pytest.raises(ValueError, match="set_params: unknown parameter 'anomaly_ratio'"):
        det.set_params(anomaly_ratio=1.0)
    with pytest.raises(ValueError, match=r"contamination: expected a fraction in \(0, 1\)"):
        det.set_params(contamination=5)
    assert det.contamination == 0.05
    refit = AMADDetector.__new__(AMADDetector)
    refit.__dict__.update(fitted.__dict__)
    refit.set_params(contamination=0.2)  # a fitted detector's "train" threshold follows at once
    assert refit.threshold_ == thresholds.train_threshold(fitted.train_scores_, 0.2) < fitted.threshold_


def test_position_profile_round_trips_and_old_files_score_raw_errors(edge_case, tmp_path):
    det, clean, _ = edge_case
    det.save(tmp_path / "d.pt")
    back = AMADDetector.load(tmp_path / "d.pt")
    np.testing.assert_array_equal(back.position_scale_, det.position_scale_)
    np.testing.assert_array_equal(back.decision_function(clean[:300]), det.decision_function(clean[:300]))
    # a file from before position_norm existed keeps scoring as it did: raw errors
    state = torch.load(tmp_path / "d.pt", weights_only=True)
    del state["params"]["position_norm"], state["position_scale"]
    write_file(tmp_path / "old.pt", state["format"], {k: v for k, v in state.items() if k not in META_KEYS})
    old = AMADDetector.load(tmp_path / "old.pt")
    assert old.position_norm == "none" and old.position_scale_ is None
    det.set_params(position_norm="none")
    try:
        np.testing.assert_array_equal(old.decision_function(clean[:300]), det.decision_function(clean[:300]))
    finally:
        det.set_params(position_norm="train")
    with pytest.raises(ValueError, match="position_norm"):
        AMADDetector(position_norm="window")


def test_fit_with_progress_reports_plan_estimate_and_lines_off_a_terminal(data, capsys, monkeypatch):
    """fit(progress=True) with stderr not a terminal (a log, a notebook): the planned work (windows,
    epochs, steps, model size) before the first step, a time estimate after the first steps, a line
    per epoch and every PROGRESS_LINE_SECONDS, and the scoring pass."""
    import amad_fast.detection.progress as progress_mod

    monkeypatch.setattr(progress_mod, "PROGRESS_LINE_SECONDS", 0.0)
    det = AMADDetector(**{**SMALL, "progress": True, "epochs": 2}).fit(data.train[:600])
    err = capsys.readouterr().err
    lines = err.splitlines()
    plan = next(i for i, line in enumerate(lines) if line.startswith("plan: "))
    estimate = next(i for i, line in enumerate(lines) if line.startswith("estimate: "))
    assert plan < estimate
    assert "training windows of 16 steps" in lines[plan] and "2 epochs" in lines[plan]
    assert f"model {sum(p.numel() for p in det.model_.parameters()):,} parameters" in lines[plan]
    assert any(line.startswith("epoch 1/2: step ") for line in lines)  # between epoch ends
    assert any(line.startswith("epoch 2/2 done in ") for line in lines)
    assert any(line.startswith("scoring the training series") for line in lines)
    assert "\r" not in err  # lines, not a bar


def test_the_detector_scores_through_its_scorer(fitted, data):
    """decision_function, score_terms/scores_from_terms and the causal scores are the scoring
    module's WindowScorer with the detector's settings, not arithmetic of the detector's own."""
    scorer = fitted.scorer()
    Z = fitted.standardizer_.transform(data.test)
    assert scorer.stride == fitted.resolved_score_stride() and scorer.smooth == fitted.resolved_smooth()
    np.testing.assert_array_equal(fitted.decision_function(data.test), scorer.scores(Z))
    np.testing.assert_array_equal(fitted.decision_function(data.test, causal=True), scorer.causal_scores(Z))
    err, w = fitted.score_terms(data.test, score_stride=fitted.window_size)
    want = step_terms(fitted.model_, Z, fitted.temperature, fitted.score_batch_size, fitted.window_size)
    np.testing.assert_array_equal(err, want[0])
    np.testing.assert_array_equal(w, want[1])
    with pytest.raises(ValueError, match="position_norm: expected one of"):
        fitted.score_terms(data.test, position_norm="window")


def test_fit_reuses_the_profile_forwards_for_the_training_scores(data):
    """fit's second pass over the training series takes the position profile's model outputs where
    a batch holds the same windows: the same terms bit for bit as a pass that computes every forward,
    with only the batch holding the end-aligned tail window computed again."""
    from amad_fast.detection.scoring import ForwardCache, position_error_profile

    X = data.train[:611]  # window 16, stride 2: 298 regular windows (batches 128, 128, 42) and a tail window
    det = AMADDetector(**{**SMALL, "epochs": 1, "position_norm": "train", "score_stride": 2}).fit(X)
    assert np.array_equal(det.train_scores_, det.decision_function(X))
    Z = det.standardizer_.transform(X, name="X")
    calls = []
    hook = det.model_.register_forward_hook(lambda *_: calls.append(1))
    try:
        cache = ForwardCache()
        profile = position_error_profile(det.model_, Z, 2, cache=cache)
        assert len(calls) == 3 and len(cache.outputs) == 3
        err, weight = step_terms(det.model_, Z, det.temperature, stride=2, position_scale=profile, cache=cache)
        assert len(calls) == 4 and len(cache.outputs) == 1  # the last batch (42 regular windows + tail) is new
    finally:
        hook.remove()
    err_full, weight_full = step_terms(det.model_, Z, det.temperature, stride=2, position_scale=profile)
    assert np.array_equal(err, err_full) and np.array_equal(weight, weight_full)
    assert np.array_equal(profile, det.position_scale_)
