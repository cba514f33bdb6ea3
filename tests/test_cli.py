"""amad-fast command line: train → score → evaluate, demo, env, help, errors (tiny data)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from amad_fast.cli import DETECTOR_HELP, main, read_scores_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "synthetic:length=600,channels=3,seed=2,train_length=800"
TINY = ["--window-size", "16", "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--num-scales", "2",
        "--epochs", "1", "--train-stride", "8", "--batch-size", "16", "--lr", "1e-3", "--no-progress",
        "--backend", "reference"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    det = str(d / "det.pt")
    assert main(["train", DATA, "--out", det, "--threshold", "train", "--anomaly-ratio", "5"] + TINY) == 0
    return d, det


def test_train_score_evaluate(trained, capsys):
    d, det = trained
    scores_csv = str(d / "scores.csv")
    assert main(["score", det, DATA, "--out", scores_csv]) == 0
    scores, threshold, labels = read_scores_csv(scores_csv)
    assert scores.shape == (600,) and labels.shape == (600,) and threshold is not None
    assert labels.sum() > 0
    out = str(d / "m.json")
    assert main(["evaluate", "--scores", scores_csv, "--out", out]) == 0
    res = json.load(open(out))
    for key in ("pa_f1", "f1", "auroc", "aupr", "best_f1", "affiliation_f1"):
        assert key in res["metrics"]
    assert res["metrics"]["threshold"] == pytest.approx(threshold)
    assert os.path.getsize(str(d / "m.png")) > 1000
    out2 = str(d / "m2.json")
    assert main(["evaluate", "--detector", det, "--data", DATA, "--out", out2, "--plot", ""]) == 0
    res2 = json.load(open(out2))
    assert res2["metrics"]["auroc"] == pytest.approx(res["metrics"]["auroc"])
    assert not os.path.exists(str(d / "m2.png"))
    assert "auroc" in capsys.readouterr().out


def test_score_plain_series_file(trained, tmp_path):
    _, det = trained
    X = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    assert main(["score", det, str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.csv")]) == 0
    scores, _, labels = read_scores_csv(str(tmp_path / "s.csv"))
    assert scores.shape == (100,) and labels is None


def test_demo(tmp_path, capsys):
    out = str(tmp_path / "demo")
    assert main(["demo", "--out", out, "--data", DATA] + TINY) == 0
    assert sorted(os.listdir(out)) == ["detector.pt", "metrics.json", "scores.csv", "scores.png"]
    res = json.load(open(os.path.join(out, "metrics.json")))
    assert res["metrics"]["auroc"] is not None and "other_threshold" in res
    assert "pa_f1" in capsys.readouterr().out


def test_env(capsys):
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    assert "amad_fast" in text and "torch" in text and "reference: available" in text


def test_help_explains_every_option(capsys):
    for sub in ("train", "demo"):
        with pytest.raises(SystemExit) as e:
            main([sub, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        for name in DETECTOR_HELP:
            assert "--" + name.replace("_", "-") in text, (sub, name)
    for sub in ("score", "evaluate", "env", "bench"):
        with pytest.raises(SystemExit) as e:
            main([sub, "--help"])
        assert e.value.code == 0


def test_errors(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "d.pt")] + TINY) == 2
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", DATA, "--out", "x.pt", "--maxmin", "sometimes"])
    with pytest.raises(SystemExit):
        main([])


def test_python_dash_m():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "amad_fast", "--help"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and "train" in r.stdout and "bench" in r.stdout
