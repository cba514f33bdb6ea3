"""Data loading, the synthetic generator, input hygiene and windowing (amad_fast.data)."""
import json
import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amad_fast.data import (
    ANOMALY_KINDS, Standardizer, check_labels, check_series, iter_entities, list_entities,
    load_anomaly_transformer, load_csv, load_dataset, load_omi, load_psm, load_smd, load_swat, make_synthetic,
    sliding_windows, window_starts, windows_to_series,
)


def _runs(y):
    d = np.diff(np.concatenate(([0], np.asarray(y, dtype=np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


# ---------------------------------------------------------------------------------------------
# Real development data (skips without ../shared/data)
# ---------------------------------------------------------------------------------------------
def test_smap_anomaly_transformer_layout(shared_data):
    root = shared_data / "SMAP"
    if not root.is_dir():
        pytest.skip(f"SMAP not found under {shared_data}")
    d = load_anomaly_transformer(root, "SMAP")
    assert d.train.shape == (135183, 25) and d.test.shape == (427617, 25)
    assert d.train.dtype == np.float32 and d.test.dtype == np.float32
    assert d.test_labels.dtype == np.int8 and d.test_labels.shape == (427617,)
    assert set(np.unique(d.test_labels)) == {0, 1}
    assert d.anomaly_ratio_percent == pytest.approx(12.79, abs=0.01)  # data README: 12.8 %
    # the name is inferred from the single NAME_train.npy; load_dataset reaches the same loader
    assert load_anomaly_transformer(root).name == "SMAP"
    assert load_dataset(str(root)).test.shape == d.test.shape


def test_omi_csv(shared_data):
    root = shared_data / "omi-1"
    if not root.is_dir():
        pytest.skip(f"omi-1 not found under {shared_data}")
    d = load_omi(root)
    assert d.train.shape == (8640, 19) and d.test.shape == (4320, 19)      # spec §6
    assert int(d.test_labels.sum()) == 441 and len(_runs(d.test_labels)) == 7
    assert int(d.train_labels.sum()) == 0
    assert d.channel_names == [f"A{i}" for i in range(19)]
    # the generic CSV reader gives the same arrays
    raw = load_csv(root / "omi-1_test.csv", label_column="label", index_column=0)
    np.testing.assert_array_equal(raw.values, d.test)
    np.testing.assert_array_equal(raw.labels, d.test_labels)
    assert raw.values[0, 0] == np.float32(np.loadtxt(root / "omi-1_test.csv", delimiter=",", skiprows=1, max_rows=1)[1])
    for spec in (root, root / "omi-1_train.csv"):
        np.testing.assert_array_equal(load_dataset(spec).test, d.test)


# ---------------------------------------------------------------------------------------------
# Published layouts on small hand-made fixtures
# ---------------------------------------------------------------------------------------------
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _smd_fixture(root):
    rng = np.random.default_rng(1)
    machines = {"machine-1-2": (5, 4), "machine-1-10": (3, 6)}  # natural order: 1-2 before 1-10
    for m, (ntr, nte) in machines.items():
        for sub, n in (("train", ntr), ("test", nte)):
            rows = rng.integers(0, 100, size=(n, 3)) / 100
            _write(root / sub / f"{m}.txt", "\n".join(",".join(f"{v:.2f}" for v in r) for r in rows) + "\n")
        _write(root / "test_label" / f"{m}.txt", "\n".join("1" if i == 1 else "0" for i in range(nte)) + "\n")
    return machines


def test_smd_layout(tmp_path):
    _smd_fixture(tmp_path)
    one = load_smd(tmp_path, "machine-1-10")
    assert one.train.shape == (3, 3) and one.test.shape == (6, 3) and one.name == "SMD/machine-1-10"
    np.testing.assert_array_equal(one.test_labels, [0, 1, 0, 0, 0, 0])
    expect = np.loadtxt(tmp_path / "test" / "machine-1-10.txt", delimiter=",").astype(np.float32)
    np.testing.assert_array_equal(one.test, expect)
    both = load_smd(tmp_path, machine=None)
    assert both.info["machines"] == ["machine-1-2", "machine-1-10"]
    assert both.train.shape == (8, 3) and both.test.shape == (10, 3)
    np.testing.assert_array_equal(both.test[4:], one.test)
    assert load_dataset(tmp_path, machine="machine-1-2").test.shape == (4, 3)
    with pytest.raises(FileNotFoundError, match="machine-9-9"):
        load_smd(tmp_path, "machine-9-9")


# ---------------------------------------------------------------------------------------------
# Entities: each its own train, test and labels
# ---------------------------------------------------------------------------------------------
def test_smap_entities(shared_data):
    root = shared_data / "SMAP"
    if not (root / "SMAP_entities.csv").is_file():
        pytest.skip(f"SMAP_entities.csv not found under {root}")
    names = list_entities(root)
    assert len(names) == 53 and names[:3] == ["P-1", "S-1", "E-1"] and names[-1] == "F-3"
    whole = load_anomaly_transformer(root)
    a5 = load_dataset(root, entity="A-5")  # rows 125023:125728 and 376992:381685 in the table
    assert a5.name == "SMAP/A-5" and a5.train.shape == (705, 25) and a5.test.shape == (4693, 25)
    np.testing.assert_array_equal(a5.train, whole.train[125023:125728])
    np.testing.assert_array_equal(a5.test_labels, whole.test_labels[376992:381685])
    assert int(a5.test_labels.sum()) == 51  # anomalous_steps column
    # the entities tile the concatenated arrays in order
    parts = list(iter_entities(root))
    assert sum(p.train.shape[0] for p in parts) == whole.train.shape[0]
    np.testing.assert_array_equal(np.concatenate([p.test_labels for p in parts]), whole.test_labels)


def _entity_npy_fixture(root, table):
    rng = np.random.default_rng(3)
    np.save(root / "X_train.npy", rng.normal(size=(10, 2)).astype(np.float32))
    np.save(root / "X_test.npy", rng.normal(size=(12, 2)).astype(np.float32))
    np.save(root / "X_test_label.npy", (np.arange(12) % 5 == 0).astype(np.float32))
    _write(root / "X_entities.csv", table)


def test_entity_table_fixture(tmp_path):
    _entity_npy_fixture(tmp_path, "entity,train_start,train_end,test_start,test_end,extra\n"
                                  "b,0,4,0,5,x\na,4,10,5,12,y\n")
    assert list_entities(tmp_path) == ["b", "a"]  # table order, not sorted
    a = load_dataset(tmp_path, entity="a")
    whole = load_dataset(tmp_path)  # without entity=: the concatenated set, as papers use it
    assert whole.train.shape == (10, 2) and a.name == "X/a"
    np.testing.assert_array_equal(a.train, whole.train[4:10])
    np.testing.assert_array_equal(a.test, whole.test[5:12])
    np.testing.assert_array_equal(a.test_labels, whole.test_labels[5:12])
    assert [e.name for e in iter_entities(tmp_path, entities=["a", "b"])] == ["X/a", "X/b"]
    with pytest.raises(ValueError, match=r"entity: expected one of the entities .*\(b, a\), got 'c'"):
        load_dataset(tmp_path, entity="c")
    with pytest.raises(ValueError, match="got 'c'"):
        iter_entities(tmp_path, entities=["a", "c"])  # refused before anything loads


@pytest.mark.parametrize("table, message", [
    ("entity,train_start,train_end,test_start\na,0,4,0\n", r"missing \['test_end'\]"),
    ("entity,train_start,train_end,test_start,test_end\na,0,4,0,5\nb,4,x,5,12\n", r"line 3, column 'train_end'.*'x'"),
    ("entity,train_start,train_end,test_start,test_end\na,0,4,0,5\na,4,10,5,12\n", r"line 3.*already named on line 2"),
    ("entity,train_start,train_end,test_start,test_end\na,0,4,0,13\n", r"line 2: expected 0 <= test_start < test_end <= 12"),
    ("entity,train_start,train_end,test_start,test_end\na,4,4,0,5\n", r"line 2: expected 0 <= train_start < train_end"),
    ("entity,train_start,train_end,test_start,test_end\n", "at least one entity row"),
])
def test_entity_table_errors_name_file_line_and_column(tmp_path, table, message):
    _entity_npy_fixture(tmp_path, table)
    with pytest.raises(ValueError, match=message) as info:
        list(iter_entities(tmp_path))
    assert "X_entities.csv" in str(info.value)


def test_smd_machines_are_entities(tmp_path):
    _smd_fixture(tmp_path)
    assert list_entities(tmp_path) == ["machine-1-2", "machine-1-10"]
    one = load_dataset(tmp_path, entity="machine-1-10")
    np.testing.assert_array_equal(one.test, load_smd(tmp_path, "machine-1-10").test)
    assert [e.test.shape for e in iter_entities(tmp_path)] == [(4, 3), (6, 3)]
    with pytest.raises(ValueError, match="got 'machine-9-9'"):
        load_dataset(tmp_path, entity="machine-9-9")


def test_folder_of_entity_csvs(tmp_path):
    for name, shift in (("srv-2", 0.0), ("srv-10", 5.0)):
        _write(tmp_path / f"{name}_train.csv", "t,a,b,label\n" + "".join(f"{i},{i + shift},{2 * i},0\n" for i in range(6)))
        _write(tmp_path / f"{name}_test.csv", "t,a,b,label\n" + "".join(f"{i},{i + shift},{i},{int(i == 2)}\n" for i in range(4)))
    assert list_entities(tmp_path) == ["srv-2", "srv-10"]
    e = load_dataset(tmp_path, entity="srv-10")
    assert e.name == "srv-10" and e.train[0, 0] == 5.0
    np.testing.assert_array_equal(e.test_labels, [0, 0, 1, 0])
    with pytest.raises(ValueError, match="several NAME_train.csv"):
        load_dataset(tmp_path)


def test_single_entity_sets_and_synthetic_entities(tmp_path):
    assert list_entities("synthetic:length=500,train_length=300") == ["synthetic"]
    names = list_entities("synthetic:entities=3,length=500,train_length=300,seed=7")
    assert names == ["synthetic-0", "synthetic-1", "synthetic-2"]
    e1 = load_dataset("synthetic:entities=3,length=500,train_length=300,seed=7", entity="synthetic-1")
    np.testing.assert_array_equal(e1.test, make_synthetic(length=500, train_length=300, seed=8).test)
    assert e1.name == "synthetic-1"
    with pytest.raises(ValueError, match="entities=K has no single series"):
        load_dataset("synthetic:entities=3,length=500")
    np.save(tmp_path / "Y_train.npy", np.ones((4, 2), np.float32))
    np.save(tmp_path / "Y_test.npy", np.ones((3, 2), np.float32))
    assert list_entities(tmp_path) == ["Y"] and load_dataset(tmp_path, entity="Y").test.shape == (3, 2)


def test_psm_layout_with_missing_values(tmp_path):
    _write(tmp_path / "train.csv", "timestamp_(min),feature_0,feature_1\n0,1.0,5\n1,,6\n2,3.0,7\n3,4.0,\n")
    _write(tmp_path / "test.csv", "timestamp_(min),feature_0,feature_1\n4,1.5,2\n5,2.5,3\n6,3.5,4\n")
    _write(tmp_path / "test_label.csv", "timestamp_(min),label\n4,0.0\n5,1.0\n6,0.0\n")
    with pytest.warns(RuntimeWarning, match="2 non-finite"):
        d = load_psm(tmp_path)
    assert d.channel_names == ["feature_0", "feature_1"]
    np.testing.assert_array_equal(d.train, [[1, 5], [2, 6], [3, 7], [4, 7]])  # interior linear, edge nearest
    np.testing.assert_array_equal(d.test_labels, [0, 1, 0])
    with pytest.raises(ValueError, match="non-finite"):
        load_psm(tmp_path, nan_policy="raise")
    with pytest.warns(RuntimeWarning):
        assert load_dataset(tmp_path).name == "PSM"


def test_swat_itrust_export(tmp_path):
    head = " Timestamp,FIT101, LIT101,Normal/Attack\n"
    _write(tmp_path / "SWaT_Dataset_Normal_v1.csv",
           ",,,\n" + head + "22/12/2015 4:00:00 PM,0.1,500,Normal\n22/12/2015 4:00:01 PM,0.2,501,Normal\n")
    _write(tmp_path / "SWaT_Dataset_Attack_v0.csv",
           head + "28/12/2015 10:00:00 AM,1.0,520,Normal\n28/12/2015 10:00:01 AM,2.0,530,Attack\n"
           "28/12/2015 10:00:02 AM,3.0,540,A ttack\n")
    d = load_swat(tmp_path)
    assert d.channel_names == ["FIT101", "LIT101"] and d.info["dropped_columns"] == ["Timestamp"]
    np.testing.assert_array_equal(d.train, np.float32([[0.1, 500], [0.2, 501]]))
    np.testing.assert_array_equal(d.test_labels, [0, 1, 1])
    np.testing.assert_array_equal(d.train_labels, [0, 0])
    assert load_dataset(tmp_path).name == "SWaT"


def test_swat_preprocessed_csv_and_missing(tmp_path):
    _write(tmp_path / "swat_train2.csv", "a,b,Normal/Attack\n1,2,0\n3,4,0\n")
    _write(tmp_path / "swat2.csv", "a,b,Normal/Attack\n5,6,0\n7,8,1\n")
    d = load_swat(tmp_path)
    np.testing.assert_array_equal(d.test, [[5, 6], [7, 8]])
    np.testing.assert_array_equal(d.test_labels, [0, 1])
    with pytest.raises(FileNotFoundError, match="SWaT_Dataset_Normal_v1.csv"):
        load_swat(tmp_path / "nowhere")


def test_anomaly_transformer_layout_checks(tmp_path):
    np.save(tmp_path / "X_train.npy", np.ones((10, 3)))
    np.save(tmp_path / "X_test.npy", np.zeros((6, 3)))
    d = load_anomaly_transformer(tmp_path)
    assert d.name == "X" and d.test_labels is None and d.train.dtype == np.float32
    np.save(tmp_path / "X_test_label.npy", np.array([0, 1, 1, 0, 0, 2]))
    with pytest.raises(ValueError, match=r"X test labels: expected values in \{0, 1\}.*2"):
        load_anomaly_transformer(tmp_path, "X")
    np.save(tmp_path / "X_test_label.npy", np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="expected length 6.*got 3"):
        load_anomaly_transformer(tmp_path, "X")
    np.save(tmp_path / "X_test.npy", np.zeros((6, 4)))
    with pytest.raises(ValueError, match="X test: expected 3 channel.*got 4"):
        load_anomaly_transformer(tmp_path, "X")
    with pytest.raises(FileNotFoundError, match="Y_train.npy"):
        load_anomaly_transformer(tmp_path, "Y")


def test_load_csv_variants(tmp_path):
    p = tmp_path / "plain.csv"
    _write(p, "1,2,0\n3,4,1\n5,6,0\n")                       # no header: inferred
    r = load_csv(p, label_column=-1)
    assert r.columns == ["c0", "c1"]
    np.testing.assert_array_equal(r.values, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(r.labels, [0, 1, 0])
    r = load_csv(p, drop_columns=[1])
    np.testing.assert_array_equal(r.values, [[1, 0], [3, 1], [5, 0]])
    assert r.labels is None
    q = tmp_path / "semi.csv"
    _write(q, "idx;x;status\n0;1.5;normal\n1;2.5;anomaly\n")
    r = load_csv(q, label_column="STATUS", index_column=0, delimiter=";")
    np.testing.assert_array_equal(r.labels, [0, 1])
    np.testing.assert_array_equal(r.values, [[1.5], [2.5]])
    with pytest.raises(ValueError, match="label_column: expected one of the columns"):
        load_csv(q, label_column="nope", delimiter=";")
    _write(q, "x,label\n1,0\n2,maybe\n")
    with pytest.raises(ValueError, match="maybe"):
        load_csv(q, label_column="label")
    with pytest.raises(FileNotFoundError):
        load_csv(tmp_path / "absent.csv")


def test_load_csv_reads_the_whole_file_strictly(tmp_path):
    """Every line is checked, also after the first 64 (the part sniffed for the header): each reader
    (all-numeric, with skipped columns, with missing values, quoted) names the line of a bad row,
    and labels are reported as the file writes them."""
    p = tmp_path / "t.csv"
    body = "".join(f"{i},{i % 2}\n" for i in range(100))
    _write(p, "x,label\n" + body + "5,2\n")
    with pytest.raises(ValueError, match=r"column 'label': expected 0/1 .* \['2'\] \(first on line 102: '2'\)"):
        load_csv(p, label_column="label")
    _write(p, "x,label\n\n" + body + "   \n" + "7,1")  # blank lines, a blank-looking one, no final newline
    r = load_csv(p, label_column="label")
    assert r.values.shape == (101, 1) and r.labels[-1] == 1
    for head in ("t,x,label\n", "x,label\n"):  # with a skipped (text) column, and without
        rows = "".join((f"2024-01-{i % 28 + 1:02d}," if head.startswith("t") else "") + f"{i},{i % 2}\n"
                       for i in range(100))
        for extra, message in ((",7", r"line 102: expected .* got 3 \(an extra field\)"),
                               ("", "line 102: expected .* got 1")):
            last = ("2024-02-01," if head.startswith("t") else "") + "5" + ("" if extra == "" else ",1" + extra)
            _write(p, head + rows + last + "\n")
            with pytest.raises(ValueError, match=rf"{p}, {message}" if head.startswith("x") else "line 102"):
                load_csv(p, label_column="label")
    _write(p, 'x,y\n' + "".join(f'"{i}",{i}\n' for i in range(100)) + '"5",oops\n')  # quoted: the csv module
    with pytest.raises(ValueError, match=r"line 102, column 'y': expected a number .* got 'oops'"):
        load_csv(p)


def test_load_dataset_specs(tmp_path, monkeypatch):
    d = load_dataset("synthetic:length=1500,channels=3,seed=4,kinds=point+trend")
    assert d.test.shape == (1500, 3) and set(d.segments_by_kind()) == {"point", "trend"}
    np.testing.assert_array_equal(d.test, make_synthetic(length=1500, channels=3, seed=4,
                                                         kinds=("point", "trend")).test)
    np.save(tmp_path / "Z_train.npy", np.ones((10, 2)))
    np.save(tmp_path / "Z_test.npy", np.ones((5, 2)))
    monkeypatch.setenv("AMAD_DATA", str(tmp_path.parent))
    assert load_dataset(tmp_path.name).name == "Z"
    assert load_dataset("Z_train.npy".join([str(tmp_path) + os.sep, ""])).name == "Z"
    with pytest.raises(FileNotFoundError, match="no-such-set"):
        load_dataset("no-such-set")
    with pytest.raises(ValueError, match="key=value"):
        load_dataset("synthetic:length")


# ---------------------------------------------------------------------------------------------
# Synthetic generator
# ---------------------------------------------------------------------------------------------
def test_synthetic_deterministic_and_seeded():
    a, b = make_synthetic(length=3000, channels=4, seed=7), make_synthetic(length=3000, channels=4, seed=7)
    for f in ("train", "test", "test_labels"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.segments == b.segments
    c = make_synthetic(length=3000, channels=4, seed=8)
    assert not np.array_equal(a.test, c.test)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_label_coverage(seed):
    d = make_synthetic(length=20000, channels=8, anomaly_ratio=0.05, seed=seed)
    assert d.train.shape == (20000, 8) and d.test.shape == (20000, 8) and d.test.dtype == np.float32
    assert d.train_labels is None and d.test_labels.dtype == np.int8
    kinds = d.segments_by_kind()
    assert set(kinds) == set(ANOMALY_KINDS)
    assert len({len(v) for v in kinds.values()}) == 1                     # same number of events per kind
    # labels are exactly the union of the segments, and each segment is its own labelled run
    assert _runs(d.test_labels) == [(g.start, g.end) for g in d.segments]
    assert 2.0 < d.anomaly_ratio_percent < 10.0                            # target 5 %, lengths random
    # train is a clean continuation of the same process: statistics match the test's normal part
    normal = d.test[d.test_labels == 0]
    np.testing.assert_allclose(normal.mean(0), d.train.mean(0), atol=0.15 * d.train.std(0).max())
    lo, hi = d.train.min(0), d.train.max(0)
    z = Standardizer().fit(d.train, warn=False)
    for g in d.segments:
        ch = list(g.channels)
        seg = d.test[g.start:g.end][:, ch]
        if g.kind == "point":       # global: outside the whole training range
            assert ((seg > hi[ch]) | (seg < lo[ch])).all()
        if g.kind == "contextual":  # inside the global range (up to noise) but far from its neighbours
            assert ((seg >= lo[ch] - 0.5 * z.std[ch]) & (seg <= hi[ch] + 0.5 * z.std[ch])).all()
            nb = np.r_[d.test[g.start - 3:g.start, ch], d.test[g.end:g.end + 3, ch]].mean(0)
            assert (np.abs(seg[0] - nb) > 1.0 * z.std[ch]).all()
    # channels are correlated (shared latent factors)
    corr = np.corrcoef(d.train.T)[np.triu_indices(8, 1)]
    assert np.abs(corr).max() > 0.5


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="kinds"):
        make_synthetic(length=2000, kinds=("point", "spike"))
    with pytest.raises(ValueError, match="anomaly_ratio"):
        make_synthetic(length=2000, anomaly_ratio=5)
    with pytest.raises(ValueError, match="length"):
        make_synthetic(length=50)
    with pytest.raises(ValueError, match="channels"):
        make_synthetic(length=2000, channels=0)


# ---------------------------------------------------------------------------------------------
# Input hygiene
# ---------------------------------------------------------------------------------------------
def test_check_series_shapes_and_types():
    x = check_series([1, 2, 3], "x")
    assert x.shape == (3, 1) and x.dtype == np.float32 and x.flags.c_contiguous
    assert check_series(np.arange(6, dtype=np.int64).reshape(3, 2)).dtype == np.float32
    with pytest.raises(ValueError, match=r"series: expected a 1-D \(T,\) or 2-D \(T, C\) array, got shape \(2, 3, 4\)"):
        check_series(np.zeros((2, 3, 4)), "series")
    with pytest.raises(TypeError, match="X: expected a numeric.*<U1"):
        check_series(np.array(["a", "b"]))
    with pytest.raises(TypeError, match="X: expected a numeric.*bool"):
        check_series(np.array([True, False]))
    with pytest.raises(ValueError, match=r"X: expected a non-empty.*\(0, 3\)"):
        check_series(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"test: expected 4 channel.*got 3"):
        check_series(np.zeros((5, 3)), "test", expected_channels=4)


def test_check_series_torch():
    torch = pytest.importorskip("torch")
    t = torch.arange(12, dtype=torch.bfloat16).reshape(6, 2).requires_grad_()
    x = check_series(t)
    assert x.dtype == np.float32 and x.shape == (6, 2)
    np.testing.assert_array_equal(x, np.arange(12).reshape(6, 2))
    assert check_series(torch.arange(4)).shape == (4, 1)


def test_check_series_nan_policy():
    X = np.array([[np.nan, 1.0], [2.0, np.inf], [np.nan, 3.0], [4.0, 4.0], [np.nan, 5.0]])
    with pytest.warns(RuntimeWarning, match=r"X: 4 non-finite value\(s\).*2 channel"):
        Y = check_series(X)
    np.testing.assert_array_equal(Y, [[2, 1], [2, 2], [3, 3], [4, 4], [4, 5]])
    with pytest.raises(ValueError, match="X: expected finite values, got 4 non-finite.*step 0, channel 0"):
        check_series(X, nan_policy="raise")
    with pytest.raises(ValueError, match=r"channel\(s\) \[1\] contain no finite value"):
        check_series(np.array([[1.0, np.nan], [2.0, np.nan]]))
    with pytest.raises(ValueError, match="nan_policy"):
        check_series(X, nan_policy="zero")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_series(np.ones((3, 2)))  # clean input: no warning


def test_check_labels():
    np.testing.assert_array_equal(check_labels([0.0, 1.0, True]), [0, 1, 1])
    with pytest.raises(ValueError, match=r"labels: expected values in \{0, 1\}.*0.5"):
        check_labels([0, 0.5])
    with pytest.raises(ValueError, match="expected length 3"):
        check_labels([0, 1], length=3)


def test_standardizer():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(500, 3)).astype(np.float32)
    X[:, 1] = 7.0
    with pytest.warns(RuntimeWarning, match=r"constant channel\(s\) \[1\]"):
        s = Standardizer().fit(X)
    assert s.constant_channels == [1] and s.std[1] == 1.0
    Z = s.transform(X)
    np.testing.assert_allclose(Z[:, [0, 2]].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(Z[:, [0, 2]].std(0), 1, atol=1e-5)
    np.testing.assert_array_equal(Z[:, 1], 0)
    np.testing.assert_allclose(s.inverse_transform(Z), X, rtol=1e-6, atol=1e-5)
    s2 = Standardizer.from_dict(json.loads(json.dumps(s.to_dict())))
    np.testing.assert_array_equal(s2.transform(X), Z)
    assert s2.constant_channels == [1]
    with pytest.raises(ValueError, match="expected 3 channel"):
        s.transform(X[:, :2])
    with pytest.raises(RuntimeError, match="fit"):
        Standardizer().transform(X)


# ---------------------------------------------------------------------------------------------
# Windowing
# ---------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 300), window=st.integers(1, 60))
def test_non_overlapping_windows_cover_each_step_once_except_tail(T, window):
    if T < window:
        with pytest.raises(ValueError, match=f"T={T}.*window={window}"):
            window_starts(T, window, window)
        return
    starts = window_starts(T, window, window, cover_tail=True)
    counts = np.zeros(T, int)
    for s in starts:
        counts[s:s + window] += 1
    assert (counts >= 1).all()
    regular_end = (T // window) * window
    twice = np.zeros(T, bool)
    if regular_end < T:
        assert starts[-1] == T - window
        twice[T - window:regular_end] = True
    assert (counts[~twice] == 1).all() and (counts[twice] == 2).all()
    # mapping per-window values back gives every step exactly one value, the tail's only where new
    X = np.arange(T, dtype=np.float64)[:, None] * np.array([1.0, -1.0])
    W = sliding_windows(X, window, window, cover_tail=True)
    np.testing.assert_array_equal(windows_to_series(W, starts, T), X)
    owner = windows_to_series(np.repeat(np.arange(len(starts))[:, None], window, 1), starts, T)
    assert (np.diff(owner) >= 0).all() and set(owner.tolist()) == set(range(len(starts)))


def test_sliding_windows_view_and_overlap():
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    W = sliding_windows(X, 5, 3)
    assert W.shape == (6, 5, 2) and np.shares_memory(W, X) and not W.flags.writeable
    for i, s in enumerate(window_starts(20, 5, 3, cover_tail=False)):
        np.testing.assert_array_equal(W[i], X[s:s + 5])
    starts = window_starts(20, 5, 3)
    assert starts.tolist() == [0, 3, 6, 9, 12, 15]      # 15 + 5 == 20: no tail needed
    starts = window_starts(21, 5, 3)
    assert starts[-1] == 16
    Wt = sliding_windows(np.arange(21.0), 5, 3, cover_tail=True)
    assert Wt.shape == (7, 5, 1) and Wt[-1, :, 0].tolist() == [16, 17, 18, 19, 20]
    np.testing.assert_allclose(windows_to_series(Wt, starts, 21, reduce="mean")[:, 0], np.arange(21.0))
    with pytest.raises(ValueError, match="stride: expected a positive integer"):
        window_starts(10, 2, 0)
    with pytest.raises(ValueError, match="covered by no window"):
        windows_to_series(np.zeros((2, 2)), [0, 4], 6)


# ---------------------------------------------------------------------------------------------
# Which CSV columns are values: by name and content, never by position
# ---------------------------------------------------------------------------------------------
def test_csv_first_column_is_data_unless_it_is_an_index(tmp_path):
    """A file a,b,c,d trains on all four columns (it lost 'a' as an 'index' before), an unnamed or
    index-named column of rising integers is an index, a time column a timestamp, a text column is
    ignored, and each ignored column is said with its reason."""
    body = "".join(f"{0.5 * i},{i % 3},{np.sin(i):.3f},{i * i % 7}\n" for i in range(30))
    _write(tmp_path / "m_train.csv", "a,b,c,d\n" + body)
    _write(tmp_path / "m_test.csv", "a,b,c,d\n" + body)
    d = load_dataset(tmp_path / "m_train.csv")
    assert d.channel_names == ["a", "b", "c", "d"] and d.train.shape == (30, 4) and d.test_labels is None
    p = tmp_path / "mixed.csv"
    _write(p, ",time,x,host,y,label\n" + "".join(
        f"{i},2024-01-01T00:{i:02d}:00,{np.cos(i):.3f},web-{i % 2},{i % 4},{int(i == 7)}\n" for i in range(30)))
    r = load_csv(p, label_column="label")
    assert r.columns == ["x", "y"] and r.values.shape == (30, 2) and r.labels.sum() == 1
    assert r.ignored == {"column 1": "index: unnamed, rising integers", "time": "timestamp",
                         "host": "text, not a number", "label": "labels"}
    line = r.describe()
    assert line.startswith("mixed.csv: using 2 columns 'x', 'y'; ignoring 'column 1' (index") and "\n" not in line
    assert "'host' (text, not a number)" in line and "'time' (timestamp)" in line
    # a column named like an index but not rising is data; a named measurement is never an index
    _write(p, "index,step_count,v\n" + "".join(f"{(i * 7) % 5},{i},{i % 3}\n" for i in range(10)))
    assert load_csv(p).columns == ["index", "step_count", "v"]
    # without a header only integers rising by exactly 1 are an index
    _write(p, "".join(f"{i + 1},{2 * i},{i % 3}\n" for i in range(10)))
    assert load_csv(p).columns == ["c1", "c2"] and load_csv(p, index_column=None).columns == ["c0", "c1", "c2"]


def test_one_csv_without_labels_or_test_file_is_a_data_set(tmp_path):
    """'my.csv' of normal operation (no label column, no NAME_test.csv) loads as a data set whose
    series is both the training and the scored one; NAME_train.csv alone does too."""
    p = tmp_path / "my.csv"
    _write(p, "timestamp,temp,pressure\n" + "".join(f"{1700000000 + 60 * i},{20 + i % 5},{1.0 + 0.1 * (i % 3)}\n"
                                                     for i in range(40)))
    d = load_dataset(p)
    assert d.train.shape == (40, 2) and d.test.shape == (40, 2) and d.test_labels is None and d.name == "my"
    assert d.info["columns"] == "my.csv: using 2 columns 'temp', 'pressure'; ignoring 'timestamp' " \
                                "(index: named so, rising integers)"
    q = tmp_path / "solo_train.csv"
    _write(q, "temp,pressure,label\n" + "".join(f"{20 + i % 5},{i % 3},0\n" for i in range(40)))
    d = load_dataset(q)
    assert d.train.shape == (40, 2) and d.train_labels is not None and d.info["layout"] == "csv_file"
    with pytest.raises(ValueError, match=r"spec: expected a \.csv series file.*got .*my\.txt"):
        _write(tmp_path / "my.txt", "a\n1\n")
        load_dataset(tmp_path / "my.txt")
