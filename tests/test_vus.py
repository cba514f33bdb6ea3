"""VUS-PR / VUS-ROC and the TSB-AD window rule (amad_fast.metrics) against TSB-AD 1.5 itself.

tests/data/vus_golden.json holds TSB-AD's own values (scripts/tsb_ad_golden.py ran TSB-AD's
generate_curve / get_metrics / RangeAUC / find_length_rank on the stored inputs). The rest are
properties of the definition and an independent loop-by-loop statement of it.
"""
import json
import math
import pathlib
import time

import numpy as np
import pytest

from amad_fast.metrics import (
    TSB_AD_DEFAULT_WINDOW, aupr, auroc, evaluate, sliding_window_length, vus, vus_pr, vus_roc,
)

GOLDEN = json.loads((pathlib.Path(__file__).parent / "data" / "vus_golden.json").read_text())
VUS_CASES = {c["name"]: c for c in GOLDEN["vus_cases"]}
WINDOW_CASES = {c["name"]: c for c in GOLDEN["window_cases"]}

# We reproduce TSB-AD's float64 arithmetic step for step; only the order of a few sums differs
# (TSB-AD sums TP segment by segment, we by threshold), so agreement is at rounding level
# (observed <= 6e-16 relative). 1e-9 leaves room for other BLAS/numpy builds, nothing more.
REL = 1e-9


def _labels(n, segments):
    y = np.zeros(n, dtype=np.int8)
    for a, b in segments:
        y[a:b] = 1
    return y


def _case(name):
    c = VUS_CASES[name]
    return np.asarray(c["scores"], dtype=np.float64), _labels(c["n"], c["segments"]), c


def _series(c):
    if "formula" in c:                      # see square_wave_truncation in scripts/tsb_ad_golden.py
        t = np.arange(26000)
        return np.where(t < 20000, (t // 20) % 2, 10 * ((t // 40) % 2)).astype(float)
    if "series_from_vus_case" in c:
        return np.asarray(VUS_CASES[c["series_from_vus_case"]]["series"])
    return np.asarray(c["series"])


# ---------------------------------------------------------------------------------------------
# Golden values from TSB-AD
# ---------------------------------------------------------------------------------------------
def test_golden_file_is_what_we_think():
    assert GOLDEN["tsb_ad"]["package"] == "tsb-ad==1.5"
    assert len(VUS_CASES) >= 8 and len(WINDOW_CASES) >= 8
    assert any(c["n"] >= 4000 for c in VUS_CASES.values())          # realistic lengths are covered
    assert all(c.get("checked_with_get_metrics") for c in VUS_CASES.values() if c["thre"] == 250)


@pytest.mark.parametrize("name", sorted(VUS_CASES))
def test_vus_matches_tsb_ad(name):
    s, y, c = _case(name)
    assert vus_pr(s, y, c["window"], n_thresholds=c["thre"]) == pytest.approx(c["vus_pr"], rel=REL, abs=1e-15)
    assert vus_roc(s, y, c["window"], n_thresholds=c["thre"]) == pytest.approx(c["vus_roc"], rel=REL, abs=1e-15)


@pytest.mark.parametrize("name", sorted(n for n, c in VUS_CASES.items() if "range_auc_pr_window0" in c))
def test_window_zero_is_tsb_ads_plain_range_auc(name):
    """With window 0 the surface is one curve: TSB-AD's RangeAUC(labels, score, window=0)."""
    s, y, c = _case(name)
    assert vus_pr(s, y, 0) == pytest.approx(c["range_auc_pr_window0"], rel=REL, abs=1e-15)
    assert vus_roc(s, y, 0) == pytest.approx(c["range_auc_roc_window0"], rel=REL, abs=1e-15)


@pytest.mark.parametrize("name", sorted(WINDOW_CASES))
def test_sliding_window_length_matches_find_length_rank(name):
    c = WINDOW_CASES[name]
    x = _series(c)
    assert sliding_window_length(x) == c["window"]
    assert sliding_window_length(x.reshape(-1, 1)) == c["window"]   # TSB-AD passes data[:, 0].reshape(-1, 1)


def test_golden_quirks_we_reproduce():
    # window 0 and 1 give the same surface (w // 2 = 0: no buffer) in TSB-AD and here
    assert VUS_CASES["window_zero"]["vus_pr"] == VUS_CASES["window_one"]["vus_pr"]
    s, y, _ = _case("window_zero")
    assert vus_pr(s, y, 0) == vus_pr(s, y, 1) and vus_roc(s, y, 0) == vus_roc(s, y, 1)
    assert vus_pr(s, y, 2) != vus_pr(s, y, 1)
    # perfect 0/1 scores give exactly 1 (TSB-AD too); reversed ones are low
    assert VUS_CASES["perfect_binary"]["vus_pr"] == 1.0 and VUS_CASES["perfect_binary"]["vus_roc"] == 1.0
    # periods beyond lag 303, constant and very short series: TSB-AD's fallback 125
    assert [WINDOW_CASES[k]["window"] for k in ("sine_period_350", "constant", "five_steps")] == [125] * 3
    # TSB-AD returns 0 for a multichannel array; we raise instead (see test_bad_inputs)
    assert GOLDEN["tsb_ad"]["multichannel_find_length_rank"] == 0


# ---------------------------------------------------------------------------------------------
# The definition, stated loop by loop (independent of the vectorised code's shortcuts)
# ---------------------------------------------------------------------------------------------
def _vus_loops(scores, labels, window, thre=250):
    """TSB-AD's RangeAUC_volume_opt as plain loops: (VUS-PR, VUS-ROC). Small inputs only."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    n, P = len(scores), labels.sum()
    segs, i = [], 0
    while i < n:
        if labels[i]:
            j = i
            while j + 1 < n and labels[j + 1]:
                j += 1
            segs.append((i, j))                                   # inclusive ends
            i = j + 1
        else:
            i += 1
    ranked = np.sort(scores)[::-1]
    thresholds = [ranked[int(i)] for i in np.linspace(0, n - 1, thre).astype(int)]
    prs, rocs = [], []
    for w in range(window + 1):
        h = w // 2
        soft = labels.astype(float)
        for s, e in segs:
            for d in range(1, h + 1):
                if e + d < n:
                    soft[e + d] += math.sqrt(1 - d / w)
                if s - d >= 0:
                    soft[s - d] += math.sqrt(1 - d / w)
        soft = np.minimum(soft, 1.0)
        regions = []
        for s, e in segs:
            if regions and regions[-1][2] + h >= s - h:           # buffers overlap or touch: merge
                regions[-1] = (regions[-1][0], min(e + h, n - 1), e)
            else:
                regions.append((max(s - h, 0), min(e + h, n - 1), e))
        tpr, fpr, prec = [0.0], [0.0], []
        for t in thresholds:
            pred = scores >= t
            lab = np.where(labels == 1, 1.0, soft * pred)
            tp = float((lab * pred).sum())
            p_new = (P + lab.sum()) / 2
            exist = sum(bool(pred[a:b + 1].any()) for a, b, _ in regions)
            tpr.append(min(tp / p_new, 1.0) * exist / len(regions))
            fpr.append((pred.sum() - tp) / (n - p_new))
            prec.append(tp / pred.sum())
        tpr.append(1.0)
        fpr.append(1.0)
        rocs.append(sum((fpr[k + 1] - fpr[k]) * (tpr[k + 1] + tpr[k]) / 2 for k in range(len(tpr) - 1)))
        prs.append(sum((tpr[k + 1] - tpr[k]) * prec[k] for k in range(thre)))
    return sum(prs) / (window + 1), sum(rocs) / (window + 1)


def test_matches_loop_statement_on_random_cases():
    rng = np.random.default_rng(11)
    for trial in range(14):
        n = int(rng.integers(20, 160))
        y = np.zeros(n, dtype=int)
        for _ in range(int(rng.integers(1, 7))):
            a = int(rng.integers(0, n))
            y[a:a + int(rng.integers(1, 12))] = 1
        if trial % 5 == 0:
            y[0] = 1                                            # segments touching both ends
            y[-1] = 1
        if y.all():
            y[n // 2] = 0
        s = rng.random(n) + rng.uniform(0, 1) * y
        if trial % 3 == 0:
            s = np.round(s, 1)                                  # ties
        window = int(rng.integers(0, 40))
        thre = [250, 37, 1, 250, 90][trial % 5]
        pr, roc = _vus_loops(s, y, window, thre)
        assert vus_pr(s, y, window, n_thresholds=thre) == pytest.approx(pr, rel=1e-12, abs=1e-15), trial
        assert vus_roc(s, y, window, n_thresholds=thre) == pytest.approx(roc, rel=1e-12, abs=1e-15), trial


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
def _random_case(seed, n=1500, n_seg=6):
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    for a in rng.choice(n - 60, n_seg, replace=False):
        y[a:a + int(rng.integers(1, 50))] = 1
    return rng, y


@pytest.mark.parametrize("window", [0, 1, 7, 40, 150])
def test_perfect_scores_give_one_and_reversed_are_low(window):
    rng, y = _random_case(window)
    assert vus_pr(y.astype(float), y, window) == 1.0
    assert vus_roc(y.astype(float), y, window) == 1.0
    # a perfect ranking with distinct values is not 1: only the top-scored steps are predicted at
    # the first threshold, and the 250 thresholds are spread over all n steps
    graded = y * (1 + rng.random(y.size))
    assert vus_pr(graded, y, window) < 1.0
    # reversed scores: below uniform noise (which itself rises with the window: wide buffers credit
    # chance hits near segments), and the ROC volume below one half
    rev_pr, rev_roc = vus_pr(-y.astype(float), y, window), vus_roc(-y.astype(float), y, window)
    noise = rng.random(y.size)
    assert rev_pr < vus_pr(noise, y, window) < 1.0
    assert rev_roc < 0.5 and rev_roc < vus_roc(noise, y, window)


def test_invariant_under_increasing_transforms():
    rng, y = _random_case(3)
    s = rng.random(y.size) + 0.3 * y
    for f in (lambda x: np.exp(3 * x), lambda x: x ** 3 + 10, lambda x: np.arctan(x - 0.5)):
        assert vus_pr(f(s), y, 33) == vus_pr(s, y, 33)
        assert vus_roc(f(s), y, 33) == vus_roc(s, y, 33)
    assert vus_pr(-s, y, 33) != vus_pr(s, y, 33)                   # a decreasing one is not


def test_window_zero_one_segment_every_rank_is_point_wise_auc():
    """One segment, no buffer, a threshold at every rank: the existence factor is 1 exactly when
    recall > 0, so TSB-AD's curves are the ordinary ROC and PR curves: AUROC and AUPR."""
    rng = np.random.default_rng(4)
    n = 300
    y = np.zeros(n, dtype=int)
    y[100:140] = 1
    for s in (rng.random(n) + 0.4 * y, np.round(rng.random(n) + 0.4 * y, 1)):   # distinct, tied
        assert vus_roc(s, y, 0, n_thresholds=n) == pytest.approx(auroc(s, y), rel=1e-12)
        assert vus_pr(s, y, 0, n_thresholds=n) == pytest.approx(aupr(s, y), rel=1e-12)
    # with TSB-AD's 250 thresholds on 300 steps it is only close
    s = rng.random(n) + 0.4 * y
    assert vus_roc(s, y, 0) == pytest.approx(auroc(s, y), abs=0.02)


def test_buffer_rewards_early_detection():
    """A rise just before the segment is worth more with a wider buffer."""
    n = 1000
    y = np.zeros(n, dtype=int)
    y[500:520] = 1
    s = np.random.default_rng(5).random(n) * 0.5
    s[490:500] += 1.0
    values = [vus_pr(s, y, w) for w in (0, 20, 60)]
    assert values[0] < values[1] < values[2]


def test_sliding_window_length_properties():
    t = np.arange(3000)
    for period in (23, 60, 144):
        assert sliding_window_length(np.sin(2 * np.pi * t / period)) == period
    assert sliding_window_length(np.full(100, 3.0)) == 125        # no period: TSB-AD's fallback
    assert sliding_window_length([1.0]) == 125
    assert sliding_window_length(np.sin(2 * np.pi * t / 400)) == 125   # beyond lag 303
    assert sliding_window_length(np.arange(50, dtype=np.int64) % 10) == 10


def test_fast_on_10000_steps():
    rng, y = _random_case(6, n=10_000, n_seg=25)
    s = rng.random(y.size) + 0.5 * y
    vus_pr(s, y, 100)
    t0 = time.perf_counter()
    vus_pr(s, y, 100)
    vus_roc(s, y, 100)
    assert time.perf_counter() - t0 < 1.0          # ~10 ms here; TSB-AD itself takes seconds


# ---------------------------------------------------------------------------------------------
# evaluate() and bad inputs
# ---------------------------------------------------------------------------------------------
def test_evaluate_reports_vus():
    rng, y = _random_case(8, n=800)
    s = rng.random(y.size) + 0.5 * y
    r = evaluate(s, y, threshold=1.0)
    assert r["vus_window"] == TSB_AD_DEFAULT_WINDOW == 100
    assert r["vus_pr"] == vus_pr(s, y, 100) and r["vus_roc"] == vus_roc(s, y, 100)
    r7 = evaluate(s, y, threshold=1.0, vus_window=7)
    assert (r7["vus_pr"], r7["vus_roc"], r7["vus_window"]) == (vus_pr(s, y, 7), vus_roc(s, y, 7), 7)
    json.dumps(r7, allow_nan=False)
    for one_class in (np.zeros(800, int), np.ones(800, int)):
        r0 = evaluate(s, one_class, threshold=1.0)
        assert r0["vus_pr"] is None and r0["vus_roc"] is None
    with pytest.raises(ValueError, match="vus_window: expected an integer >= 0, got -3"):
        evaluate(s, y, 1.0, vus_window=-3)


def test_bad_inputs():
    y = np.array([0, 1, 1, 0, 0])
    s = np.array([0.1, 0.9, 0.8, 0.2, 0.3])
    for bad in (-1, 2.5, True, "10", None, np.float64(3.0)):
        with pytest.raises(ValueError, match="window: expected an integer >= 0"):
            vus_pr(s, y, bad)
    assert vus_pr(s, y, np.int64(3)) == vus_pr(s, y, 3)
    with pytest.raises(ValueError, match="n_thresholds: expected an integer >= 1, got 0"):
        vus_roc(s, y, 3, n_thresholds=0)
    with pytest.raises(ValueError, match="scores and labels: expected equal lengths, got 5 and 4"):
        vus_pr(s, y[:4], 3)
    with pytest.raises(ValueError, match="labels: VUS-PR is undefined without an anomalous step"):
        vus_pr(s, np.zeros(5, int), 3)
    with pytest.raises(ValueError, match="labels: VUS-ROC is undefined when every step is anomalous"):
        vus_roc(s, np.ones(5, int), 3)
    with pytest.raises(ValueError, match="scores: expected finite scores"):
        vus_pr([0.1, np.nan, 0.2, 0.3, 0.4], y, 3)
    with pytest.raises(ValueError, match=r"labels: expected values in \{0, 1\}"):
        vus_roc(s, [0, 2, 1, 0, 0], 3)
    with pytest.raises(ValueError, match="series: expected one channel.*data\\[:, 0\\]"):
        sliding_window_length(np.zeros((100, 3)))
    with pytest.raises(ValueError, match="series: expected finite values"):
        sliding_window_length([0.0, np.inf, 1.0])
    with pytest.raises(ValueError, match="series: expected at least one value"):
        sliding_window_length([])
    with pytest.raises(TypeError, match="series: expected numeric"):
        sliding_window_length(["a", "b"])


def test_vus_gives_both_from_one_pass():
    rng = np.random.default_rng(7)
    y = np.zeros(400, dtype=np.int8)
    y[100:130] = y[300:305] = 1
    s = rng.normal(size=400) + 2.0 * y
    assert vus(s, y, 20) == (vus_pr(s, y, 20), vus_roc(s, y, 20))
