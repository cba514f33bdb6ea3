"""`amad-fast watch`: rows in, one flushed 'step,score,alarm' line per scored row."""
import io
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from amad_fast import AMADDetector
from amad_fast.cli import main
from amad_fast.data import make_synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(window_size=20, d_model=16, n_heads=2, n_layers=1, num_scales=2, epochs=1, train_stride=5,
            progress=False, smooth=5)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = make_synthetic(length=600, channels=3, seed=6, train_length=500)
    det = AMADDetector(**TINY).fit(d.train)
    path = tmp_path_factory.mktemp("watch") / "det.pt"
    det.save(path)
    return det, d.test, str(path)


def _csv(rows):
    return "".join(",".join(f"{v:.9g}" for v in r) + "\n" for r in rows)


def _parse(out):
    lines = out.strip().splitlines()
    assert lines[0] == "step,score,alarm"
    return np.array([[float(v) for v in line.split(",")] for line in lines[1:]])


def test_watch_scores_stdin_rows_and_skips_malformed_lines(saved, monkeypatch, capsys):
    det, X, path = saved
    rows = X[:60]
    text = "a,b,c\n" + _csv(rows[:30]) + "1,2\nx,1,2\nnan,1,2\n\n" + _csv(rows[30:])
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["watch", path]) == 0
    out, err = capsys.readouterr()
    got = _parse(out)
    want = det.decision_function(rows, causal=True)
    np.testing.assert_array_equal(got[:, 0], np.arange(60))
    np.testing.assert_allclose(got[:, 1], want, rtol=1e-5)
    np.testing.assert_array_equal(got[:, 2], (got[:, 1] > det.threshold_).astype(float))
    assert "<stdin> line 32: expected 3 numbers, got 2; skipped" in err
    assert "<stdin> line 33: expected 3 numbers, got 'x,1,2'; skipped" in err
    assert "<stdin> line 34: expected finite numbers, got NaN/Inf" in err
    assert "60 rows, 60 scored" in err and "3 lines skipped" in err


def test_watch_refuses_a_paper_threshold_without_a_value(saved, tmp_path, monkeypatch, capsys):
    det, X, _ = saved
    det.set_params(threshold="paper")
    try:
        det.save(tmp_path / "paper.pt")
    finally:
        det.set_params(threshold="train")
    monkeypatch.setattr(sys, "stdin", io.StringIO(_csv(X[:30])))
    assert main(["watch", str(tmp_path / "paper.pt")]) == 2
    assert "--threshold-value: expected a number" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(_csv(X[:30])))
    assert main(["watch", str(tmp_path / "paper.pt"), "--threshold-value", "1e9"]) == 0
    assert (_parse(capsys.readouterr().out)[:, 2] == 0).all()


def test_watch_follows_a_growing_file_flushing_each_line_and_stops_on_ctrl_c(saved, tmp_path):
    det, X, path = saved
    feed = tmp_path / "feed.csv"
    feed.write_text(_csv(X[:25]))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "amad_fast", "watch", path, "--input", str(feed), "--follow"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    try:
        lines = [proc.stdout.readline() for _ in range(1 + 25)]  # header, then the first window at once
        assert lines[-1].startswith("24,")
        with open(feed, "a") as fh:  # the file grows while watch runs
            fh.write(_csv(X[25:28]))
        got = [proc.stdout.readline() for _ in range(3)]  # each row's line arrives without waiting for more
        assert [g.split(",")[0] for g in got] == ["25", "26", "27"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "28 rows, 28 scored" in err and "(interrupted)" in err
