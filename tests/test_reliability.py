"""Reliability cases: bad inputs, hostile and damaged files, faults, extreme values and
concurrency, each with the behaviour a user gets. Every test here is a row of docs/reliability.md
(see tests/reliability.py); the last test fails when that file is out of date."""
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

import reliability
from amad_fast.detection.registry import load_detector, make_detector
from amad_fast.cli import main
from amad_fast.data import load_csv
from amad_fast.detection.detector import AMADDetector

case = reliability.case
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMALL = dict(window_size=16, d_model=16, n_heads=2, n_layers=1, num_scales=2, d_ff=32, epochs=1, train_stride=8,
             batch_size=16, progress=False, threshold="train", contamination=0.05)
DATA = "synthetic:length=600,channels=3,seed=2,train_length=800"
TINY = ["--window-size", "16", "--d-model", "16", "--n-heads", "2", "--n-layers", "1", "--num-scales", "2",
        "--d-ff", "32", "--epochs", "1", "--train-stride", "8", "--batch-size", "16", "--no-progress",
        "--backend", "reference"]


# -- helpers -----------------------------------------------------------------------------------------------

@pytest.fixture
def shown(request):
    """``shown(text)`` checks that the case's registered message excerpt is in ``text`` (an error
    message, a warning, the CLI's stderr); the test fails if it never checks it."""
    reg = getattr(request.function, "reliability_case", None)
    calls = []

    def check(text):
        assert reg is not None, f"{request.function.__name__} is not a registered case"
        assert reg.shows, f"{reg.test}: the case registers no message excerpt to check"
        text = str(text)
        assert reg.shows in text, f"expected the message to contain {reg.shows!r}, got {text!r}"
        calls.append(text)
        return text

    yield check
    passed = getattr(getattr(request.node, "rep_call", None), "passed", False)
    if passed and reg is not None and reg.shows:
        assert calls, f"{reg.test}: the registered message {reg.shows!r} was never checked"


def series(T=400, C=3, seed=0):
    t = np.arange(T)[:, None]
    rng = np.random.default_rng(seed)
    return (np.sin(2 * np.pi * t / (9 + 3 * np.arange(C))) + 0.1 * rng.standard_normal((T, C))).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(detector, path of its file) trained once on series()."""
    d = tmp_path_factory.mktemp("det")
    det = AMADDetector(**SMALL).fit(series())
    path = str(d / "det.pt")
    det.save(path)
    return det, path


def one_line_error(capsys, rc, sub):
    """The CLI's stderr after a failing command: exactly one line 'amad-fast SUB: error: ...', status 2."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"amad-fast {sub}: error: "), err
    return lines[0]


def argparse_error(capsys, argv):
    """argparse's refusal of an option: SystemExit(2) with 'error: argument ...' on stderr."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


class Evil:
    """Unpickling this creates the file ``path`` (builtins.open): what a hostile file would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_csv(path, header, rows):
    with open(path, "w") as fh:
        fh.write("\n".join([header] + rows) + "\n")
    return str(path)


def numeric_rows(n=200):
    return [f"{i},{0.5 * i:.1f},{i % 3}" for i in range(n)]


def unwritable_dir(tmp_path):
    """A directory nobody may create files in: a read-only directory, or where the tests run as root
    (which ignores permissions) a path below a regular file."""
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    try:
        probe = d / "probe"
        probe.write_text("")
        probe.unlink()
    except OSError:
        return str(d)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return str(blocker / "sub")


def tmp_files(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(".tmp-"))


def no_fit(monkeypatch):
    """Make any training fail the test: the command must stop before it."""
    def refuse(*a, **k):
        raise AssertionError("training started although the command should have stopped before it")

    monkeypatch.setattr(AMADDetector, "fit", refuse)


# -- input series ------------------------------------------------------------------------------------------

@case("Input series", "NaN / Inf in a series (default nan_policy='interpolate')",
      "filled by linear interpolation per channel, with a warning giving the count; scores finite",
      "were filled by linear interpolation")
def test_nan_in_series_is_interpolated(fitted, shown):
    det, _ = fitted
    X = series(120)
    X[30, 0], X[31, 2] = np.nan, np.inf
    with pytest.warns(RuntimeWarning) as rec:
        s = det.decision_function(X)
    shown(" ".join(str(w.message) for w in rec))
    assert np.isfinite(s).all() and s.shape == (120,)


@case("Input series", "NaN in a series with nan_policy='raise'", "ValueError naming the step and channel",
      "X: expected finite values, got 1 non-finite value(s)")
def test_nan_refused_under_raise(fitted, shown):
    det, path = fitted
    det = AMADDetector.load(path).set_params(nan_policy="raise")
    X = series(120)
    X[30, 1] = np.nan
    with pytest.raises(ValueError) as e:
        det.decision_function(X)
    shown(e.value)
    assert "step 30, channel 1" in str(e.value)


@case("Input series", "a channel with no finite value", "ValueError under either nan_policy",
      "contain no finite value, so they cannot be interpolated")
def test_all_nan_channel_refused(fitted, shown):
    det, _ = fitted
    X = series(120)
    X[:, 2] = np.nan
    with pytest.raises(ValueError) as e:
        det.decision_function(X)
    shown(e.value)


@case("Input series", "scoring a series with another channel count than at fit",
      "ValueError with both counts", "expected 3 channel(s) (the count the model was fitted with), got 4")
def test_wrong_channel_count(fitted, shown):
    det, _ = fitted
    with pytest.raises(ValueError) as e:
        det.decision_function(series(120, C=4))
    shown(e.value)


@case("Input series", "fitting a series shorter than one window", "ValueError before any training",
      "X: expected at least window_size=16 time steps, got 10")
def test_series_shorter_than_window(shown):
    with pytest.raises(ValueError) as e:
        AMADDetector(**SMALL).fit(series(10))
    shown(e.value)


@case("Input series", "a series of text (non-numeric dtype)", "TypeError naming the dtype",
      "X: expected a numeric (integer or floating) array, got dtype <U")
def test_non_numeric_series(shown):
    with pytest.raises(TypeError) as e:
        AMADDetector(**SMALL).fit(np.full((100, 2), "a"))
    shown(e.value)


@case("Input series", "a constant channel in the training series", "kept, only centred (std 1), with a warning",
      "1 constant channel(s) [1] are only centred (std set to 1)")
def test_constant_channel(shown):
    X = series()
    X[:, 1] = 5.0
    with pytest.warns(RuntimeWarning) as rec:
        det = AMADDetector(**SMALL).fit(X)
    shown(" ".join(str(w.message) for w in rec))
    assert np.isfinite(det.decision_function(X[:100])).all()


@case("Input series", "decision_function before fit", "RuntimeError saying to fit or load first",
      "not fitted yet; call fit(X) or AMADDetector.load(path) first")
def test_score_before_fit(shown):
    with pytest.raises(RuntimeError) as e:
        AMADDetector(**SMALL).decision_function(series(50))
    shown(e.value)


@case("Input series", "`amad-fast train` on a data set that does not exist", "one line naming the path, exit 2",
      "a data directory or file, or a name under data_root")
def test_cli_missing_data(tmp_path, capsys, shown):
    rc = main(["train", str(tmp_path / "no-such-data"), "--out", str(tmp_path / "d.pt")] + TINY)
    assert str(tmp_path / "no-such-data") in shown(one_line_error(capsys, rc, "train"))


# -- extreme values ----------------------------------------------------------------------------------------

@case("Extreme values", "a finite test value of 1e20 (AMAD)",
      "clipped to 1e6 training standard deviations with a warning; scores finite, the step scores highest",
      "lie more than 1e+06 training standard deviations from the training mean")
def test_huge_finite_value_is_clipped(fitted, shown):
    det, _ = fitted
    X = series(160)
    X[80, 1] = 1e20
    with pytest.warns(RuntimeWarning) as rec:
        s = det.decision_function(X)
    shown(" ".join(str(w.message) for w in rec))
    assert np.isfinite(s).all()
    assert abs(int(np.argmax(s)) - 80) <= det.window_size


@case("Extreme values", "a finite value of 1e20 with nan_policy='raise'", "ValueError naming step and channel",
      "expected values within 1e+06 training standard deviations of the training mean")
def test_huge_finite_value_refused_under_raise(fitted, shown):
    _, path = fitted
    det = AMADDetector.load(path).set_params(nan_policy="raise")
    X = series(160)
    X[80, 1] = -1e20
    with pytest.raises(ValueError) as e:
        det.decision_function(X)
    shown(e.value)
    assert "first at step 80, channel 1" in str(e.value)


@case("Extreme values", "a finite test value of 1e20 (the baselines l2, maxz, pca, knn)",
      "clipped like AMAD, with the same warning; scores finite",
      "they are clipped to ±1e+06 (still the most anomalous values)")
def test_huge_finite_value_baselines(shown):
    X = series().astype(np.float64)
    X = np.hstack([X, X + 0.01 * np.random.default_rng(1).standard_normal(X.shape)])  # PCA keeps 3 of 6 axes
    T = X[:100].copy()
    T[50, 0] = 1e20
    for method in ("l2", "maxz", "pca", "knn"):
        det = make_detector(method).fit(X)
        with pytest.warns(RuntimeWarning) as rec:
            s = det.decision_function(T)
        shown(" ".join(str(w.message) for w in rec))
        assert np.isfinite(s).all() and int(np.argmax(s)) == 50, method


@case("Extreme values", "a value beyond float32's range (1e200)",
      "treated as non-finite: interpolated with a warning (or refused under nan_policy='raise')",
      "(NaN, ±Inf, or beyond the float32 range)")
def test_value_beyond_float32(fitted, shown):
    det, _ = fitted
    X = series(120).astype(np.float64)
    X[60, 0] = 1e200
    with pytest.warns(RuntimeWarning) as rec:
        s = det.decision_function(X)
    shown(" ".join(str(w.message) for w in rec))
    assert np.isfinite(s).all()


@case("Extreme values", "scores that come out NaN/Inf anyway (a model whose output layer holds NaN)",
      "FloatingPointError instead of NaN scores", "scores of X are NaN/Inf")
def test_nonfinite_scores_are_refused(fitted, shown):
    _, path = fitted
    det = AMADDetector.load(path)
    with torch.no_grad():
        det.model_.head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError) as e:
        det.decision_function(series(120))
    shown(e.value)


# -- CSV files ---------------------------------------------------------------------------------------------

@case("CSV files", "text in a numeric column after the first 64 lines",
      "ValueError naming file, line and column (was: silently NaN, then interpolated)",
      "line 102, column 'b': expected a number (or an empty field for a missing value), got 'abc'")
def test_csv_text_after_line_64(tmp_path, shown):
    rows = numeric_rows()
    rows[100] = "100,abc,1"
    path = write_csv(tmp_path / "t.csv", "a,b,c", rows)
    with pytest.raises(ValueError) as e:
        load_csv(path)
    assert str(e.value).startswith(path)
    shown(e.value)


@case("CSV files", "a row with an extra field after the first 64 lines",
      "ValueError naming file and line (was: the field silently ignored)",
      "line 152: expected 3 fields (as many as line 1, the first of the table), got 4 (an extra field)")
def test_csv_extra_field_after_line_64(tmp_path, shown):
    rows = numeric_rows()
    rows[150] = "150,1,2,3"
    path = write_csv(tmp_path / "t.csv", "a,b,c", rows)
    with pytest.raises(ValueError) as e:
        load_csv(path)
    assert str(e.value).startswith(path)
    shown(e.value)


@case("CSV files", "a short (ragged) row among the first lines",
      "ValueError naming file and line (was: numpy's message without the file)",
      "line 5: expected 3 fields (as many as line 1, the first of the table), got 2")
def test_csv_ragged_row_in_head(tmp_path, shown):
    rows = numeric_rows()
    rows[3] = "3,1"
    path = write_csv(tmp_path / "t.csv", "a,b,c", rows)
    with pytest.raises(ValueError) as e:
        load_csv(path)
    assert str(e.value).startswith(path)
    shown(e.value)


@case("CSV files", "a label column with a word it does not know", "ValueError naming file, column and first line",
      "expected 0/1 or one of")
def test_csv_unknown_label(tmp_path, shown):
    rows = [f"{i},{i % 5},{'Normal' if i != 120 else 'Broken'}" for i in range(200)]
    path = write_csv(tmp_path / "t.csv", "a,b,label", rows)
    with pytest.raises(ValueError) as e:
        load_csv(path, label_column="label")
    shown(e.value)
    assert "column 'label'" in str(e.value) and "first on line 122: 'Broken'" in str(e.value)


@case("CSV files", "an empty field (missing value)", "NaN, then the NaN policy: interpolated with a warning",
      "1 non-finite value(s)")
def test_csv_empty_field(tmp_path, shown):
    rows = numeric_rows()
    rows[100] = "100,,1"
    path = write_csv(tmp_path / "t.csv", "a,b,c", rows)
    with pytest.warns(RuntimeWarning) as rec:
        d = load_csv(path)
    shown(" ".join(str(w.message) for w in rec))
    assert d.values[100, 1] == pytest.approx(50.0)  # between 49.5 and 50.5


@case("CSV files", "quoted numbers and Windows (CRLF) line endings", "read as numbers, no warning")
def test_csv_quotes_and_crlf(tmp_path):
    rows = numeric_rows()
    rows[100] = '100,"50.0",1'
    path = tmp_path / "t.csv"
    path.write_bytes(("\r\n".join(["a,b,c"] + rows) + "\r\n").encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_csv(str(path))
    assert d.values.shape == (200, 3) and d.values[100, 1] == 50.0


@case("CSV files", "an empty CSV file", "ValueError naming the file", "expected a non-empty CSV file, got an empty one")
def test_csv_empty_file(tmp_path, shown):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(ValueError) as e:
        load_csv(str(tmp_path / "e.csv"))
    shown(e.value)


@case("CSV files", "a CSV with a header and no rows", "ValueError naming the file",
      "expected data rows after the header")
def test_csv_header_only(tmp_path, shown):
    path = write_csv(tmp_path / "h.csv", "a,b,c", [])
    with pytest.raises(ValueError) as e:
        load_csv(path)
    shown(e.value)


@case("CSV files", "`amad-fast score` of a CSV series with a bad value",
      "one line naming file, line and column; exit 2", "line 52, column 'b': expected a number")
def test_cli_csv_error_is_one_line(fitted, tmp_path, capsys, shown):
    _, det = fitted
    rows = [f"{i},{i % 7},{i % 3}" for i in range(100)]
    rows[50] = "50,x,1"
    path = write_csv(tmp_path / "series.csv", "a,b,c", rows)
    rc = main(["score", det, path, "--out", str(tmp_path / "s.csv")])
    assert path in shown(one_line_error(capsys, rc, "score"))


# -- other data files --------------------------------------------------------------------------------------

@case("Other data files", "a truncated .npy series (`amad-fast score`)", "one line naming the file; exit 2",
      "not a valid .npy array (a (T, C) series)")
def test_truncated_npy(fitted, tmp_path, capsys, shown):
    _, det = fitted
    np.save(tmp_path / "x.npy", series(100))
    raw = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(raw[: len(raw) // 2])
    rc = main(["score", det, str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.csv")])
    assert str(tmp_path / "x.npy") in shown(one_line_error(capsys, rc, "score"))


@case("Other data files", "a .npy holding a pickled object array", "refused without unpickling; one line, exit 2",
      "Object arrays cannot be loaded when allow_pickle=False")
def test_pickled_npy(fitted, tmp_path, capsys, shown):
    _, det = fitted
    np.save(tmp_path / "x.npy", np.array([Evil(str(tmp_path / "created"))], dtype=object), allow_pickle=True)
    rc = main(["score", det, str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.csv")])
    shown(one_line_error(capsys, rc, "score"))
    assert not (tmp_path / "created").exists()


@case("Other data files", "a .npy of text, or an .npz archive, given as a series", "one line naming the file, exit 2",
      "expected a numeric .npy array (a (T, C) series), got dtype <U1")
def test_npy_of_text(fitted, tmp_path, capsys, shown):
    _, det = fitted
    np.save(tmp_path / "text.npy", np.full((100, 3), "a"))
    rc = main(["score", det, str(tmp_path / "text.npy"), "--out", str(tmp_path / "s.csv")])
    shown(one_line_error(capsys, rc, "score"))
    np.savez(tmp_path / "arrays.npz", x=series(100))
    os.rename(tmp_path / "arrays.npz", tmp_path / "arrays.npy")
    rc = main(["score", det, str(tmp_path / "arrays.npy"), "--out", str(tmp_path / "s.csv")])
    assert "expected a .npy array (a (T, C) series), got a NpzFile" in one_line_error(capsys, rc, "score")


@case("Other data files", "a scores CSV with a score that is not a number (`amad-fast evaluate`)",
      "one line naming file, line and column; exit 2", "line 4, column 'score': expected a finite number")
def test_scores_csv_with_text(tmp_path, capsys, shown):
    path = write_csv(tmp_path / "scores.csv", "t,score,label", ["0,0.1,0", "1,0.2,1", "2,oops,0", "3,0.3,1"])
    rc = main(["evaluate", "--scores", path, "--out", str(tmp_path / "m.json")])
    shown(one_line_error(capsys, rc, "evaluate"))


# -- detector and checkpoint files -------------------------------------------------------------------------

@case("Detector and checkpoint files", "a detector file whose pickle would create a file when loaded",
      "refused, nothing from the file runs (the file is not created); one line in the CLI",
      "not a valid detector file: unpickling it would import or call")
def test_hostile_detector_file(tmp_path, capsys, shown):
    created = tmp_path / "created-by-the-file"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "amad_fast.detector/1", "params": Evil(str(created))}, evil)
    for load in (AMADDetector.load, load_detector):
        with pytest.raises(ValueError) as e:
            load(str(evil))
        shown(e.value)
        assert not created.exists()
    rc = main(["score", str(evil), DATA, "--out", str(tmp_path / "s.csv")])
    shown(one_line_error(capsys, rc, "score"))
    assert not created.exists()


@case("Detector and checkpoint files", "a training checkpoint whose pickle would create a file (`--resume`)",
      "refused before anything from it runs (the file is not created); one line, exit 2",
      "last.pt: not a valid checkpoint: unpickling it would import or call")
def test_hostile_checkpoint(tmp_path, capsys, shown):
    created = tmp_path / "created-by-the-file"
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save({"model": Evil(str(created)), "epoch": 0}, ck / "last.pt")
    rc = main(["train", DATA, "--out", str(tmp_path / "d.pt"), "--checkpoint-dir", str(ck), "--resume"] + TINY)
    shown(one_line_error(capsys, rc, "train"))
    assert not created.exists() and not (tmp_path / "d.pt").exists()


@case("Detector and checkpoint files", "a baseline detector file whose pickle would create a file",
      "refused, nothing runs", "not a valid detector file: unpickling it would import or call")
def test_hostile_baseline_file(tmp_path, shown):
    created = tmp_path / "created-by-the-file"
    torch.save({"format": "amad_fast.baseline/1", "state": Evil(str(created))}, tmp_path / "b.pt")
    with pytest.raises(ValueError) as e:
        load_detector(str(tmp_path / "b.pt"))
    shown(e.value)
    assert not created.exists()


@case("Detector and checkpoint files", "every load in the package's source (static check)",
      "torch.load only in amad_fast/files.py, with weights_only=True; np.load only with allow_pickle=False; "
      "no pickle.load")
def test_every_load_is_safe():
    import ast

    def keyword(call, name):
        kw = [k.value for k in call.keywords if k.arg == name]
        return kw[0].value if kw and isinstance(kw[0], ast.Constant) else ("absent" if not kw else "not a constant")

    torch_loads, problems = [], []
    for root, _, names in os.walk(os.path.join(REPO, "amad_fast")):
        for name in sorted(n for n in names if n.endswith(".py")):
            rel = os.path.relpath(os.path.join(root, name), REPO)
            tree = ast.parse(open(os.path.join(root, name), encoding="utf-8").read())
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                where = f"{rel}:{node.lineno}"
                if (owner, node.func.attr) == ("torch", "load"):
                    torch_loads.append(rel)
                    if keyword(node, "weights_only") is not True:
                        problems.append(f"{where}: torch.load without weights_only=True")
                elif (owner, node.func.attr) == ("np", "load") and keyword(node, "allow_pickle") is not False:
                    problems.append(f"{where}: np.load without allow_pickle=False")
                elif owner == "pickle" and node.func.attr in ("load", "loads", "Unpickler"):
                    problems.append(f"{where}: pickle.{node.func.attr}")
    assert problems == []
    assert torch_loads == [os.path.join("amad_fast", "files.py")]


def _flip_offsets(size, n=28):
    return sorted({int(v) for v in np.linspace(0, size - 1, n)})


@case("Detector and checkpoint files", "28 single-bit flips spread over a detector file",
      "every flip that changes the content is refused (checksum or unreadable); none changes scores silently",
      "not a valid detector file")
def test_bit_flips_are_detected(fitted, tmp_path, shown):
    det, path = fitted
    X = series(120)
    reference = det.decision_function(X)
    raw = open(path, "rb").read()
    refused = identical = 0
    for off in _flip_offsets(len(raw)):
        bad = bytearray(raw)
        bad[off] ^= 1 << (off % 8)
        p = tmp_path / f"flip{off}.pt"
        p.write_bytes(bytes(bad))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = AMADDetector.load(str(p))
        except ValueError as exc:
            shown(exc)
            assert str(exc).startswith(str(p))
            refused += 1
            continue
        s = loaded.decision_function(X)  # a flip the file format does not care about (zip metadata)
        np.testing.assert_array_equal(s, reference, err_msg=f"a bit flip at byte {off} changed the scores silently")
        assert loaded.threshold_ == det.threshold_
        identical += 1
    assert refused >= len(_flip_offsets(len(raw))) // 2, (refused, identical)  # most bytes are tensor content


@case("Detector and checkpoint files", "a truncated detector file (`amad-fast score`)", "one line naming it, exit 2",
      "not a valid detector file: unreadable, truncated or not a torch file")
def test_truncated_detector_file(fitted, tmp_path, capsys, shown):
    _, path = fitted
    raw = open(path, "rb").read()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    rc = main(["score", str(cut), DATA, "--out", str(tmp_path / "s.csv")])
    assert str(cut) in shown(one_line_error(capsys, rc, "score"))


@case("Detector and checkpoint files", "an empty detector file", "one line naming it, exit 2",
      "not a valid detector file: the file is empty")
def test_empty_detector_file(tmp_path, capsys, shown):
    (tmp_path / "empty.pt").write_bytes(b"")
    rc = main(["score", str(tmp_path / "empty.pt"), DATA, "--out", str(tmp_path / "s.csv")])
    shown(one_line_error(capsys, rc, "score"))


@case("Detector and checkpoint files", "a foreign file: a checkpoint, a text file, a directory given as detector",
      "one line naming it and the format expected and found, exit 2",
      "expected an AMAD detector file of format 'amad_fast.detector/1', got format 'amad_fast.checkpoint/1'")
def test_foreign_files(tmp_path, capsys, shown):
    ck = tmp_path / "ck"
    AMADDetector(**SMALL, checkpoint_dir=str(ck)).fit(series())
    rc = main(["score", str(ck / "last.pt"), DATA, "--out", str(tmp_path / "s.csv")])
    shown(one_line_error(capsys, rc, "score"))
    (tmp_path / "notes.txt").write_text("not a detector\n")
    rc = main(["score", str(tmp_path / "notes.txt"), DATA, "--out", str(tmp_path / "s.csv")])
    assert "notes.txt: not a valid detector file: unreadable" in one_line_error(capsys, rc, "score")
    rc = main(["score", str(ck), DATA, "--out", str(tmp_path / "s.csv")])
    assert "not a valid detector file: it is a directory" in one_line_error(capsys, rc, "score")


@case("Detector and checkpoint files", "a detector file edited after writing (threshold changed, re-saved)",
      "refused: the content does not match its checksum", "its content does not match its checksum")
def test_edited_detector_file(fitted, tmp_path, shown):
    _, path = fitted
    state = torch.load(path, weights_only=True)
    state["threshold"] = 0.0
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(ValueError) as e:
        AMADDetector.load(str(tmp_path / "edited.pt"))
    shown(e.value)


@case("Detector and checkpoint files", "a detector file of a newer format version",
      "refused, naming the format expected and found", "got format 'amad_fast.detector/2'")
def test_newer_format(fitted, tmp_path, shown):
    from amad_fast.files import write_file

    _, path = fitted
    state = torch.load(path, weights_only=True)
    write_file(tmp_path / "v2.pt", "amad_fast.detector/2", state)
    with pytest.raises(ValueError) as e:
        AMADDetector.load(str(tmp_path / "v2.pt"))
    shown(e.value)


@case("Detector and checkpoint files", "a detector file written before files had checksums",
      "loads, with a warning that its integrity cannot be verified", "has no checksum")
def test_file_without_checksum(fitted, tmp_path, shown):
    det, path = fitted
    state = torch.load(path, weights_only=True)
    del state["checksum"], state["package_version"]
    torch.save(state, tmp_path / "old.pt")
    with pytest.warns(RuntimeWarning) as rec:
        old = AMADDetector.load(str(tmp_path / "old.pt"))
    shown(" ".join(str(w.message) for w in rec))
    X = series(100)
    np.testing.assert_array_equal(old.decision_function(X), det.decision_function(X))


@case("Detector and checkpoint files", "an I/O error while reading a detector file (simulated EIO)",
      "one line naming the path, exit 2", "Input/output error")
def test_io_error_reading(fitted, tmp_path, capsys, monkeypatch, shown):
    _, path = fitted

    def failing_load(f, *a, **k):
        raise OSError(errno.EIO, "Input/output error", os.fspath(f))

    monkeypatch.setattr(torch, "load", failing_load)
    rc = main(["score", path, DATA, "--out", str(tmp_path / "s.csv")])
    assert path in shown(one_line_error(capsys, rc, "score"))


@case("Detector and checkpoint files", "a damaged checkpoint on `--resume` (one bit flipped)",
      "one line: not a valid checkpoint; nothing trained", "last.pt: not a valid checkpoint")
def test_damaged_checkpoint(tmp_path, capsys, monkeypatch, shown):
    ck = tmp_path / "ck"
    det = AMADDetector(**SMALL, checkpoint_dir=str(ck)).fit(series())  # one epoch: the checkpoint's weights
    raw = bytearray((ck / "last.pt").read_bytes())
    weights = max(det.model_.state_dict().values(), key=lambda t: t.numel())
    at = raw.find(weights.numpy().tobytes()[:64])  # the largest weight's bytes (stored uncompressed)
    assert at > 0
    raw[at + 20] ^= 0x10
    (ck / "last.pt").write_bytes(bytes(raw))
    rc = main(["train", DATA, "--out", str(tmp_path / "d.pt"), "--checkpoint-dir", str(ck), "--resume"] + TINY)
    shown(one_line_error(capsys, rc, "train"))
    assert not (tmp_path / "d.pt").exists()


# -- resume ------------------------------------------------------------------------------------------------

def _checkpointed(tmp_path, **over):
    ck = tmp_path / "ck"
    AMADDetector(**{**SMALL, **over}, checkpoint_dir=str(ck)).fit(series())
    return ck


@case("Resume", "resuming a checkpoint with other training data",
      "ValueError before training: the data's fingerprint differs", "was written for other training data")
def test_resume_other_data(tmp_path, shown):
    ck = _checkpointed(tmp_path)
    det = AMADDetector(**{**SMALL, "epochs": 2}, checkpoint_dir=str(ck), resume=True)
    with pytest.raises(ValueError) as e:
        det.fit(series(seed=1))
    shown(e.value)


@case("Resume", "resuming a checkpoint with other settings (lr)", "ValueError listing what differs",
      "was written with other settings (lr: checkpoint 0.001, now 0.01)")
def test_resume_other_settings(tmp_path, shown):
    ck = _checkpointed(tmp_path)
    det = AMADDetector(**{**SMALL, "epochs": 2, "lr": 0.01}, checkpoint_dir=str(ck), resume=True)
    with pytest.raises(ValueError) as e:
        det.fit(series())
    shown(e.value)


@case("Resume", "resuming a checkpoint written by another amad_fast version (major.minor)",
      "ValueError naming both versions", "was written by amad_fast 0.0.9")
def test_resume_other_version(tmp_path, shown):
    from amad_fast.files import payload_digest

    ck = _checkpointed(tmp_path)
    state = torch.load(ck / "last.pt", weights_only=True)
    state["package_version"] = "0.0.9"  # as that version would have written it, checksum included
    state["checksum"] = payload_digest(state)
    torch.save(state, ck / "last.pt")
    det = AMADDetector(**{**SMALL, "epochs": 2}, checkpoint_dir=str(ck), resume=True)
    with pytest.raises(ValueError) as e:
        det.fit(series())
    shown(e.value)


@case("Resume", "`--resume` before any checkpoint exists", "trains from the start, with a warning",
      "yet; training from the start")
def test_resume_without_checkpoint(tmp_path, shown):
    det = AMADDetector(**SMALL, checkpoint_dir=str(tmp_path / "ck"), resume=True)
    with pytest.warns(RuntimeWarning) as rec:
        det.fit(series())
    shown(" ".join(str(w.message) for w in rec))
    assert (tmp_path / "ck" / "last.pt").exists()


@case("Resume", "`--resume` without `--checkpoint-dir`", "refused at once (was: silently trained from the start)",
      "resume: expected a checkpoint_dir to resume from, got none")
def test_resume_needs_checkpoint_dir(tmp_path, capsys, monkeypatch, shown):
    with pytest.raises(ValueError) as e:
        AMADDetector(**SMALL, resume=True)
    shown(e.value)
    no_fit(monkeypatch)
    rc = main(["train", DATA, "--out", str(tmp_path / "d.pt"), "--resume"] + TINY)
    shown(one_line_error(capsys, rc, "train"))


@case("Resume", "a run stopped after its first epoch, resumed for the second",
      "the same model as an uninterrupted run, bit for bit")
def test_resume_continues_exactly(tmp_path):
    X = series()
    whole = AMADDetector(**{**SMALL, "epochs": 2}).fit(X)
    ck = tmp_path / "ck"
    AMADDetector(**SMALL, checkpoint_dir=str(ck)).fit(X)  # the run that stopped after epoch 1
    resumed = AMADDetector(**{**SMALL, "epochs": 2}, checkpoint_dir=str(ck), resume=True).fit(X)
    for (name, a), b in zip(whole.model_.state_dict().items(), resumed.model_.state_dict().values()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(whole.train_scores_, resumed.train_scores_)


# -- output locations and write faults ---------------------------------------------------------------------

@case("Output locations and write faults", "`amad-fast train --out` in a directory that cannot be written",
      "one line at once, before loading data or training (was: after the whole run)", "cannot write there")
def test_unwritable_out(tmp_path, capsys, monkeypatch, shown):
    no_fit(monkeypatch)
    out = os.path.join(unwritable_dir(tmp_path), "det.pt")
    rc = main(["train", DATA, "--out", out] + TINY)
    assert "--out" in shown(one_line_error(capsys, rc, "train"))


@case("Output locations and write faults", "`--checkpoint-dir` that cannot be written",
      "one line at once, before training", "cannot write there")
def test_unwritable_checkpoint_dir(tmp_path, capsys, monkeypatch, shown):
    ck = os.path.join(unwritable_dir(tmp_path), "ck")
    with pytest.raises(ValueError) as e:  # the API, before its first step
        AMADDetector(**SMALL, checkpoint_dir=ck).fit(series())
    shown(e.value)
    no_fit(monkeypatch)
    rc = main(["train", DATA, "--out", str(tmp_path / "d.pt"), "--checkpoint-dir", ck] + TINY)
    assert "--checkpoint-dir" in shown(one_line_error(capsys, rc, "train"))


@case("Output locations and write faults", "`--out` that is an existing directory",
      "one line at once, before training", "expected a file path, got a directory")
def test_out_is_directory(tmp_path, capsys, monkeypatch, shown):
    no_fit(monkeypatch)
    rc = main(["train", DATA, "--out", str(tmp_path)] + TINY)
    shown(one_line_error(capsys, rc, "train"))


@case("Output locations and write faults", "`amad-fast score --out` / `evaluate --out` that cannot be written",
      "one line before the detector is loaded or anything is scored", "cannot write there")
def test_unwritable_score_out(fitted, tmp_path, capsys, monkeypatch, shown):
    _, det = fitted
    monkeypatch.setattr(AMADDetector, "decision_function",
                        lambda *a, **k: pytest.fail("scored although --out cannot be written"))
    bad = unwritable_dir(tmp_path)
    rc = main(["score", det, DATA, "--out", os.path.join(bad, "s.csv")])
    shown(one_line_error(capsys, rc, "score"))
    rc = main(["evaluate", "--detector", det, "--data", DATA, "--out", os.path.join(bad, "m.json")])
    shown(one_line_error(capsys, rc, "evaluate"))


@case("Output locations and write faults", "the disk fills up while the detector is saved (simulated ENOSPC)",
      "one line naming the file, exit 2; an existing file there is unchanged, no temporary file left",
      "No space left on device")
def test_disk_full_while_saving(tmp_path, capsys, monkeypatch, shown):
    out = tmp_path / "det.pt"
    out.write_bytes(b"the previous detector")

    def full(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    rc = main(["train", DATA, "--out", str(out)] + TINY)
    assert str(out) in shown(one_line_error(capsys, rc, "train"))
    assert out.read_bytes() == b"the previous detector" and tmp_files(tmp_path) == []


# -- concurrency and interruption --------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from amad_fast.detection.model import AMAD
    from amad_fast.detection.training import TrainConfig, train_model

    ck, ready = sys.argv[1], sys.argv[2]

    def hold(info):  # a long run: after its first step it signals and then waits to be killed
        open(ready, "w").close()
        time.sleep(600)

    X = np.random.default_rng(0).standard_normal((200, 3)).astype(np.float32)
    model = AMAD(3, window_size=16, d_model=16, n_heads=2, n_layers=1, num_scales=2)
    train_model(model, X, TrainConfig(epochs=1, batch_size=8, train_stride=4, progress=False, checkpoint_dir=ck),
                callback=hold)
    """
)


def _start_holder(tmp_path, ck):
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(ck), str(ready)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not ready.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the holding run ended: {proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the holding run did not start within 120 s")
        time.sleep(0.05)
    return proc


@case("Concurrency and interruption", "a second run on a checkpoint directory another run is writing",
      "refused at once with the other run's pid (was: both wrote the same last.pt)",
      "is in use by another run (pid")
def test_second_run_on_checkpoint_dir(tmp_path, capsys, shown):
    ck = tmp_path / "ck"
    holder = _start_holder(tmp_path, ck)
    try:
        with pytest.raises(RuntimeError) as e:
            AMADDetector(**SMALL, checkpoint_dir=str(ck)).fit(series())
        assert f"pid {holder.pid}" in shown(e.value)
        rc = main(["train", DATA, "--out", str(tmp_path / "d.pt"), "--checkpoint-dir", str(ck)] + TINY)
        shown(one_line_error(capsys, rc, "train"))
    finally:
        holder.kill()
        holder.wait()


@case("Concurrency and interruption", "a run on a checkpoint directory whose previous run was killed (kill -9)",
      "runs: the kernel released the lock; a warning names the dead holder", "taking over the lock left by pid")
def test_lock_of_killed_run(tmp_path, shown):
    ck = tmp_path / "ck"
    holder = _start_holder(tmp_path, ck)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with pytest.warns(RuntimeWarning) as rec:
        AMADDetector(**SMALL, checkpoint_dir=str(ck)).fit(series())
    shown(" ".join(str(w.message) for w in rec))
    assert (ck / "last.pt").exists() and not (ck / ".amad_fast.lock").exists()


KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from amad_fast.detection.detector import AMADDetector

    def die(src, dst):  # killed between writing the temporary file and renaming it
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = die
    X = np.random.default_rng(0).standard_normal((200, 3)).astype(np.float32)
    AMADDetector(window_size=16, d_model=16, n_heads=2, n_layers=1, num_scales=2, epochs=1, train_stride=8,
                 progress=False, checkpoint_dir=sys.argv[1]).fit(X)
    """
)


@case("Concurrency and interruption", "a run killed while writing its checkpoint (between write and rename)",
      "the next run on the directory removes the leftover .tmp-* file, with a warning",
      "temporary file(s) left by an interrupted write")
def test_killed_write_leftover_is_removed(tmp_path, shown):
    ck = tmp_path / "ck"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(script), str(ck)], env=env, capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-2000:]
    assert len(tmp_files(ck)) == 1 and not (ck / "last.pt").exists()
    with pytest.warns(RuntimeWarning) as rec:
        AMADDetector(**SMALL, checkpoint_dir=str(ck)).fit(series())
    shown(" ".join(str(w.message) for w in rec))
    assert tmp_files(ck) == [] and (ck / "last.pt").exists()


@case("Concurrency and interruption", "power loss right after a save", "the directory is fsynced after the rename, "
      "so the new file survives (the file itself is fsynced before it)")
def test_directory_fsynced_after_rename(fitted, tmp_path, monkeypatch):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to name the synced descriptors")
    det, _ = fitted
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        events.append(("replace", os.fspath(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    where = os.path.realpath(tmp_path)
    det.save(os.path.join(where, "det.pt"))
    i = events.index(("replace", os.path.join(where, "det.pt")))
    assert any(e[0] == "fsync" and e[1].startswith(os.path.join(where, ".tmp-")) for e in events[:i]), events
    assert ("fsync", where) in events[i + 1:], events


# -- parameters --------------------------------------------------------------------------------------------

@case("Parameters", "fit() again on a detector loaded from a file",
      "trains without touching the checkpoints of the run that made the file (its checkpoint_dir is not inherited)")
def test_refit_of_loaded_detector_keeps_checkpoints(tmp_path):
    ck = tmp_path / "ck"
    det = AMADDetector(**SMALL, checkpoint_dir=str(ck)).fit(series())
    det.save(str(tmp_path / "det.pt"))
    before = (ck / "last.pt").read_bytes()
    loaded = AMADDetector.load(str(tmp_path / "det.pt"))
    assert loaded.checkpoint_dir is None and loaded.fit_checkpoint_dir_ == str(ck)
    loaded.fit(series(seed=5))
    assert (ck / "last.pt").read_bytes() == before and sorted(os.listdir(ck)) == ["last.pt"]


@case("Parameters", "`--max-train 0` or `--max-train -5`",
      "refused by the option parser (was: -5 silently dropped the last 5 steps)",
      "argument --max-train: expected a positive integer")
def test_max_train_refused(tmp_path, capsys, monkeypatch, shown):
    no_fit(monkeypatch)
    for n in ("0", "-5"):
        shown(argparse_error(capsys, ["train", DATA, "--out", str(tmp_path / "d.pt"), "--max-train", n] + TINY))


@case("Parameters", "a negative seed (`--seed -1`, `seed=-1`)", "refused when given, before data is loaded",
      "expected an integer seed in [0, 2**63), got '-1'")
def test_negative_seed_refused(tmp_path, capsys, monkeypatch, shown):
    no_fit(monkeypatch)
    shown(argparse_error(capsys, ["train", DATA, "--out", str(tmp_path / "d.pt"), "--seed", "-1"] + TINY))
    shown(argparse_error(capsys, ["benchmark", DATA, "--out", str(tmp_path / "b"), "--seed", "-1"]))
    with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*63\), got -1"):
        AMADDetector(seed=-1)
    with pytest.raises(ValueError, match="seed"):
        make_detector("random", seed=-1)


@case("Parameters", "`--epochs 0` (and other counts below 1)", "refused by the option parser, before data is loaded",
      "argument --epochs: expected a positive integer (at least 1), got '0'")
def test_zero_epochs_refused(tmp_path, capsys, monkeypatch, shown):
    import amad_fast.cli.commands as cli

    monkeypatch.setattr(cli, "_load_split", lambda *a, **k: pytest.fail("data loaded although --epochs is invalid"))
    no_fit(monkeypatch)
    shown(argparse_error(capsys, ["train", DATA, "--out", str(tmp_path / "d.pt")] + TINY + ["--epochs", "0"]))
    with pytest.raises(ValueError, match="epochs: expected a positive int, got 0"):
        AMADDetector(epochs=0)


# -- the table ---------------------------------------------------------------------------------------------

def test_reliability_doc_is_current():
    """docs/reliability.md is the rendering of this registry (regenerate: python tests/reliability.py --write)."""
    cases = reliability.load_all()
    assert len(cases) >= 30
    here = [c for c in cases if c.module == __name__.rsplit(".", 1)[-1]]
    assert all(c.test.startswith("test_") and callable(globals().get(c.test)) for c in here)
    expected = reliability.render(cases)
    try:
        current = open(reliability.DOC, encoding="utf-8").read()
    except FileNotFoundError:
        current = None
    assert current == expected, f"docs/reliability.md is out of date; run: {reliability.COMMAND}"
