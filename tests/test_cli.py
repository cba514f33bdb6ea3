"""amad-fast command line: train → score → evaluate, demo, env, help, errors (tiny data)."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from amad_fast.cli.options import DETECTOR_HELP
from amad_fast.cli import main
from amad_fast.cli.outputs import read_scores_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "synthetic:length=600,channels=3,seed=2,train_length=800"
TINY = ["--window-size", "16", "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--num-scales", "2",
        "--epochs", "1", "--train-stride", "8", "--batch-size", "16", "--lr", "1e-3", "--no-progress",
        "--backend", "reference"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    det = str(d / "det.pt")
    assert main(["train", DATA, "--out", det, "--threshold", "train", "--contamination", "0.05"] + TINY) == 0
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


# ---------------------------------------------------------------------------------------------
# A newcomer's first hour
# ---------------------------------------------------------------------------------------------
def _plain_csv(path, rows=400, seed=0):
    """One CSV of normal operation: a time column, four value columns a..d, a text column; no labels."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        fh.write("time,a,b,c,d,site\n")
        for i in range(rows):
            fh.write(f"2024-03-01 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d},{np.sin(i / 9):.4f},"
                     f"{np.cos(i / 13):.4f},{rng.normal():.4f},{(i % 17) / 17:.4f},plant-{i % 2}\n")


def test_train_and_score_one_plain_csv(tmp_path, capsys):
    """'amad-fast train my.csv' works without labels and without my_test.csv; every value column,
    the first included, is a channel; the ignored columns are said with why; scoring the same file
    keeps the same columns; the run prints its plan, a time estimate and progress lines first."""
    data, det = str(tmp_path / "my.csv"), str(tmp_path / "my.pt")
    _plain_csv(data)
    assert main(["train", data, "--out", det] + [a for a in TINY if a != "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert ("columns: my.csv: using 4 columns 'a', 'b', 'c', 'd'; ignoring 'time' (timestamp), "
            "'site' (text, not a number)") in cap.out
    assert "best epoch 1," in cap.out and "best epoch 0" not in cap.out  # 1-based for people
    assert "threshold (train)" in cap.out
    assert cap.err.index("plan: ") < cap.err.index("estimate: ") < cap.err.index("epoch 1/1 done")
    assert "parameters" in cap.err and "training windows" in cap.err
    from amad_fast.detection.detector import AMADDetector

    assert AMADDetector.load(det).n_channels_ == 4
    out = str(tmp_path / "s.csv")
    assert main(["score", det, data, "--out", out]) == 0
    scores, threshold, labels = read_scores_csv(out)
    assert scores.shape == (400,) and labels is None and threshold is not None


def test_defaults_are_for_users(capsys):
    """The CLI's default threshold is fixed from training data ('train'); 'paper' is an option
    named for the papers' protocol. Every option's help says its default once, and env has help."""
    from amad_fast.cli import build_parser

    p = build_parser()
    assert p.parse_args(["train", "x.csv", "--out", "d.pt"]).threshold == "train"
    assert p.parse_args(["demo"]).threshold == "train"
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("train", "demo"):
        for action in sub.choices[name]._actions:
            if action.help and action.help != argparse.SUPPRESS:
                text = action.help.replace("%(default)s", str(action.default))
                assert text.count("default") <= 1, (name, action.dest, text)
                assert "(default: None)" not in text, (name, action.dest)
    threshold_help = next(a.help for a in sub.choices["train"]._actions if a.dest == "threshold")
    assert "paper" in threshold_help and "published" in threshold_help
    with pytest.raises(SystemExit):
        main(["env", "--help"])
    assert "backend" in capsys.readouterr().out.split("options:")[0]


def test_plot_title_and_short_anomaly_bands():
    from amad_fast.cli.outputs import anomaly_bands, plot_title

    y = np.zeros(5000, dtype=np.int8)
    y[100:105] = 1    # 5 steps of 5000
    y[2000:2600] = 1  # long: drawn as it is
    bands = anomaly_bands(y)
    assert len(bands) == 2
    (a, b), (c, d) = bands
    assert b - a >= 0.004 * 5000 and a < 100 and b > 104  # widened about its centre, still covers it
    assert (c, d) == (1999.5, 2599.5)
    title = plot_title("omi-1 test", "det.pt (AMAD d_model 64 x 3 blocks)", "train",
                       {"f1": 0.5, "pa_f1": 0.75, "auroc": 0.9, "aupr": 0.4, "vus_pr": None})
    for part in ("omi-1 test", "det.pt", "threshold train", "F1 0.500", "AUROC 0.900", "VUS-PR n/a"):
        assert part in title


def test_choices_and_contamination_come_from_the_package(capsys):
    """The options' choices are the package's constants, and --contamination takes a fraction:
    a percentage (5 for 5 %) is refused by the parser instead of flagging everything."""
    from amad_fast.attention.dispatch import BACKENDS
    from amad_fast.cli import build_parser
    from amad_fast.data.series import NAN_POLICIES
    from amad_fast.detection.registry import METHODS
    from amad_fast.detection.thresholds import DEFAULT_CONTAMINATION, THRESHOLDS

    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    train = {a.dest: a for a in sub.choices["train"]._actions}
    assert tuple(train["nan_policy"].choices) == NAN_POLICIES
    assert tuple(train["threshold"].choices) == THRESHOLDS
    assert tuple(train["backend"].choices) == ("auto", *BACKENDS)
    assert {a.dest: a for a in sub.choices["score"]._actions}["backend"].choices == ("auto", *BACKENDS)
    assert all(m in {a.dest: a for a in sub.choices["benchmark"]._actions}["methods"].help for m in METHODS)
    assert train["contamination"].default == DEFAULT_CONTAMINATION
    assert p.parse_args(["train", "x.csv", "--out", "d.pt", "--contamination", "0.05"]).contamination == 0.05
    for bad in ("5", "1", "0", "x"):
        with pytest.raises(SystemExit):
            p.parse_args(["train", "x.csv", "--out", "d.pt", "--contamination", bad])
        assert "expected a fraction in (0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        p.parse_args(["evaluate", "--scores", "s.csv", "--contamination", "1.5"])
