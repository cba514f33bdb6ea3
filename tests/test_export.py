"""AMADDetector.export: one TorchScript file that scores raw series like ``decision_function``,
loaded and run in a Python process where amad_fast cannot be imported."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from amad_fast.data import make_synthetic, window_starts
from amad_fast.detection.detector import AMADDetector
from amad_fast.detection.scoring import scoring_window_starts

SMALL_MODEL = dict(window_size=32, d_model=16, n_heads=2, n_layers=2, num_scales=2, epochs=1, train_stride=8,
                   progress=False, seed=0, device="cpu")
SCORINGS = {
    "defaults": {},  # recon, error_norm="channel", position_norm="train", binary_scaling="unit", smooth=L//2
    "plain_recon": dict(score="recon", error_norm="none", smooth=1),
    "recon_js": dict(score="recon_js"),  # the js weighting (temperature, softmax over positions)
}

#: run with ``python -c FILE X THREADS OUT``: loads the exported file with amad_fast made unimportable
#: (a None entry in sys.modules makes ``import amad_fast`` and every ``amad_fast.*`` raise ImportError)
SCORE_WITHOUT_AMAD_FAST = """
import sys
sys.modules["amad_fast"] = None
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[3]))
scorer = torch.jit.load(sys.argv[1])
np.save(sys.argv[4], scorer(torch.from_numpy(np.load(sys.argv[2]))).numpy())
print(repr(scorer.threshold))
"""

#: the exported file runs the reference attention; the default backend on a CPU with the compiled
#: extension is the C++ one, whose float32 sums run in another order. A score is the squared error
#: x − x̂ of a reconstruction x̂ of O(1) in standardised units, so one float32 ulp of x̂ (2^-23 ≈
#: 1.2e-7 near 1) reaches a small score absolutely, whatever its size: allowed are 16 ulp relative
#: (2e-6) or 4 ulp of 1 absolute (measured: at most 1 ulp of 1, 1.19e-7, where the scores are ~0.05)
OTHER_BACKEND_RTOL = 2e-6
OTHER_BACKEND_ATOL = 4 * 2.0 ** -23


@pytest.fixture(scope="module")
def series():
    """Train and test series with a two-valued flag channel (binary scaling) and one test value so
    extreme that standardisation clips it, besides the synthetic anomalies."""
    data = make_synthetic(length=700, channels=3, seed=2, train_length=1200)
    rng = np.random.default_rng(0)
    train = np.column_stack([data.train, 1 + 5 * (rng.random(1200) < 0.1)]).astype(np.float32)
    test = np.column_stack([data.test, 1 + 5 * (rng.random(700) < 0.1)]).astype(np.float32)
    test[300, 0] = 1e12
    return train, test


@pytest.fixture(scope="module", params=sorted(SCORINGS))
def fitted(request, series):
    return AMADDetector(**SMALL_MODEL, **SCORINGS[request.param]).fit(series[0])


def _score_in_clean_process(path, X, tmp_path):
    """Scores and threshold of the exported file ``path`` on X, from a Python process that cannot
    import amad_fast, started outside the repository with no PYTHONPATH, on this process's thread
    count (float32 reductions may be split differently on another)."""
    np.save(tmp_path / "X.npy", X)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", SCORE_WITHOUT_AMAD_FAST, str(path), str(tmp_path / "X.npy"),
         str(torch.get_num_threads()), str(tmp_path / "scores.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return np.load(tmp_path / "scores.npy"), float(run.stdout.strip().splitlines()[-1])


def test_exported_file_scores_like_decision_function_without_amad_fast(fitted, series, tmp_path):
    test = series[1]
    fitted.export(tmp_path / "det.pt")
    scores, threshold = _score_in_clean_process(tmp_path / "det.pt", test, tmp_path)

    fitted.save(tmp_path / "det.amad")
    same_math = AMADDetector.load(tmp_path / "det.amad", backend="reference")
    with pytest.warns(RuntimeWarning, match="clipped"):
        want = same_math.decision_function(test)
    assert scores.dtype == np.float64 and scores.shape == (len(test),)
    # the same float32 operations in the same order as the detector on the reference backend
    np.testing.assert_array_equal(scores, want)
    with pytest.warns(RuntimeWarning, match="clipped"):
        np.testing.assert_allclose(scores, fitted.decision_function(test), rtol=OTHER_BACKEND_RTOL,
                                   atol=OTHER_BACKEND_ATOL)
    assert threshold == fitted.threshold_
    assert (scores > threshold).any()  # the clipped value at least: the comparison is not vacuous


def test_exported_file_refuses_bad_input(fitted, series, tmp_path):
    fitted.export(tmp_path / "det.pt")
    scorer = torch.jit.load(str(tmp_path / "det.pt"))
    test = torch.from_numpy(series[1])
    with pytest.raises(Exception, match="C = 4"):
        scorer(test[:, :3])
    with pytest.raises(Exception, match="at least window_size=32"):
        scorer(test[:31])
    broken = test.clone()
    broken[5, 1] = float("nan")
    with pytest.raises(Exception, match="finite"):
        scorer(broken)
    assert scorer(test[:32]).shape == (32,)  # one window is enough


def test_export_refuses_what_it_cannot_write(series, tmp_path):
    det = AMADDetector(**SMALL_MODEL, threshold="paper").fit(series[0])
    with pytest.raises(ValueError, match="paper"):
        det.export(tmp_path / "det.pt")
    det.set_params(threshold="train")
    with pytest.raises(ValueError, match="format"):
        det.export(tmp_path / "det.onnx", format="onnx")
    with pytest.raises(RuntimeError):
        AMADDetector(**SMALL_MODEL).export(tmp_path / "unfitted.pt")


@pytest.mark.parametrize("T,L,stride", [(32, 32, 3), (100, 32, 3), (100, 32, 32), (101, 10, 7), (95, 10, 5)])
def test_scoring_window_starts_are_window_starts(T, L, stride):
    starts, n_regular, regular_end = scoring_window_starts(T, L, stride, torch.device("cpu"))
    want = window_starts(T, L, stride, cover_tail=True)
    np.testing.assert_array_equal(starts.numpy(), want)
    assert n_regular == len(window_starts(T, L, stride, cover_tail=False))
    assert regular_end == (n_regular - 1) * stride + L


def test_export_command_writes_the_detectors_scorer(fitted, series, tmp_path, capsys):
    from amad_fast.cli.main import main

    fitted.save(tmp_path / "det.amad")
    assert main(["export", str(tmp_path / "det.amad"), str(tmp_path / "det.ts")]) == 0
    assert "threshold" in capsys.readouterr().out
    scorer = torch.jit.load(str(tmp_path / "det.ts"))
    test = series[1][:200]
    np.testing.assert_array_equal(scorer(torch.from_numpy(test)).numpy(),
                                  AMADDetector.load(tmp_path / "det.amad", backend="reference").decision_function(test))
    assert scorer.threshold == fitted.threshold_
    with pytest.raises(SystemExit) as refused:  # argparse: not one of the formats offered
        main(["export", str(tmp_path / "det.amad"), str(tmp_path / "det.onnx"), "--format", "onnx"])
    assert refused.value.code == 2
    assert main(["export", str(tmp_path / "missing.amad"), str(tmp_path / "x.ts")]) == 2
