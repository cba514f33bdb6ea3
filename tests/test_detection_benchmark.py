"""The per-entity detection benchmark (amad_fast.bench.detection and `amad-fast benchmark`)."""
import json
import os

import numpy as np
import pytest

from amad_fast.bench import detection as db
from amad_fast import metrics
from amad_fast.cli import main
from amad_fast.data import iter_entities

DATA = "synthetic:entities=2,length=600,train_length=500,channels=3,seed=5"
TINY_AMAD = dict(window_size=20, d_model=16, n_layers=1, n_heads=2, num_scales=2, epochs=1, train_stride=10)


def test_end_to_end_two_entities(tmp_path):
    out = tmp_path / "run"
    result = db.run_benchmark(DATA, "amad,l2,random", out_dir=str(out), params={"amad": TINY_AMAD}, progress=False,
                              log=lambda s: None)
    assert [r["entity"] for r in result.records] == ["synthetic-0", "synthetic-1"]
    # every number is the metric of the method's own scores: recompute l2 on entity 1 by hand
    ent = list(iter_entities(DATA))[1]
    mu, sd = ent.train.astype(np.float64).mean(0), ent.train.astype(np.float64).std(0)
    l2 = np.linalg.norm((ent.test - mu) / sd, axis=1)
    window = metrics.sliding_window_length(ent.test[:, 0])
    rec = result.records[1]
    assert rec["vus_window"] == window
    got = rec["methods"]["l2"]["metrics"]
    assert got["aupr"] == pytest.approx(metrics.aupr(l2, ent.test_labels), rel=1e-6)
    assert got["vus_pr"] == pytest.approx(metrics.vus_pr(l2, ent.test_labels, window), rel=1e-6)
    assert rec["methods"]["amad"]["params"]["epochs"] == 1 and rec["methods"]["amad"]["params"]["seed"] == 0
    # aggregates: the mean of the per-entity values; wins counted per entity
    for m in ("amad", "l2", "random"):
        vals = [r["methods"][m]["metrics"]["vus_pr"] for r in result.records]
        assert result.aggregates["methods"][m]["vus_pr"]["mean"] == pytest.approx(np.mean(vals))
        assert result.aggregates["methods"][m]["vus_pr"]["median"] == pytest.approx(np.median(vals))
    a = [r["methods"]["amad"]["metrics"]["aupr"] for r in result.records]
    b = [r["methods"]["l2"]["metrics"]["aupr"] for r in result.records]
    v = result.aggregates["versus"]["l2"]["aupr"]
    assert (v["wins"], v["losses"]) == (sum(x > y for x, y in zip(a, b)), sum(x < y for x, y in zip(a, b)))
    paths = db.write_reports(result, str(out))
    assert all(os.path.getsize(p) > 0 for p in paths)
    md = open(paths[0]).read()
    assert "| amad | " in md and "synthetic-1" in md and "wins / losses / ties" in md
    assert json.load(open(paths[1]))["entities"][0]["entity"] == "synthetic-0"
    assert sorted(os.listdir(out / "entities")) == ["synthetic-0.json", "synthetic-1.json"]


def test_resume_skips_finished_entities_and_methods(tmp_path, monkeypatch):
    calls = []
    real = db.evaluate_entity

    def counting(entity, methods, params, threads=None):
        calls.append((entity.info["entity"], tuple(methods)))
        return real(entity, methods, params, threads)

    monkeypatch.setattr(db, "evaluate_entity", counting)
    out = str(tmp_path)
    quiet = dict(out_dir=out, progress=False, log=lambda s: None)
    db.run_benchmark(DATA, ["l2"], entities=["synthetic-0"], **quiet)
    assert calls == [("synthetic-0", ("l2",))]
    first = json.load(open(tmp_path / "entities" / "synthetic-0.json"))
    calls.clear()
    r = db.run_benchmark(DATA, ["l2", "random"], **quiet)  # entity 0 only lacks 'random'; entity 1 is new
    assert calls == [("synthetic-0", ("random",)), ("synthetic-1", ("l2", "random"))]
    assert r.records[0]["methods"]["l2"] == first["methods"]["l2"]  # kept as stored, not recomputed
    calls.clear()
    db.run_benchmark(DATA, ["l2", "random"], **quiet)
    assert calls == []  # everything done
    db.run_benchmark(DATA, ["l2"], params={"l2": {"contamination": 0.02}}, **quiet)
    assert calls == [("synthetic-0", ("l2",)), ("synthetic-1", ("l2",))]  # other parameters: run again
    calls.clear()
    db.run_benchmark(DATA, ["random"], resume=False, **quiet)
    assert len(calls) == 2
    # a record stored under other defaults (here: as if 'random' had one parameter fewer then) runs again
    path = tmp_path / "entities" / "synthetic-0.json"
    rec = json.load(open(path))
    assert "threshold" in rec["methods"]["random"]["params"]  # defaults are stored, not only what was given
    del rec["methods"]["random"]["params"]["threshold"]
    json.dump(rec, open(path, "w"))
    calls.clear()
    db.run_benchmark(DATA, ["random"], **quiet)
    assert calls == [("synthetic-0", ("random",))]


def test_entity_without_anomaly_is_reported_not_zero(tmp_path):
    rng = np.random.default_rng(0)
    for name, labels in (("a", [0] * 30 + [1] * 5 + [0] * 25), ("b", [0] * 60)):
        for part, n in (("train", 80), ("test", 60)):
            lab = labels if part == "test" else [0] * n
            rows = "".join(f"{i},{rng.normal():.4f},{rng.normal():.4f},{lab[i]}\n" for i in range(n))
            (tmp_path / f"{name}_{part}.csv").write_text("t,x,y,label\n" + rows)
    r = db.run_benchmark(str(tmp_path), ["l2", "random"], progress=False, log=lambda s: None)
    b = r.records[1]["methods"]["l2"]["metrics"]
    assert b["aupr"] is None and b["vus_pr"] is None and b["auroc"] is None and b["best_f1"] is None
    assert "anomalous" in b["undefined"]["aupr"]
    assert r.aggregates["methods"]["l2"]["aupr"]["n"] == 1  # the mean is over the entity that defines it
    assert r.aggregates["methods"]["l2"]["aupr"]["mean"] == r.records[0]["methods"]["l2"]["metrics"]["aupr"]
    assert "b: labels: AUPR needs at least one anomalous step" in db.markdown_report(r)


def test_failing_method_is_recorded_and_the_run_goes_on(tmp_path):
    r = db.run_benchmark(DATA, ["amad", "l2"], params={"amad": {**TINY_AMAD, "window_size": 1000}},
                         progress=False, log=lambda s: None)
    for rec in r.records:
        assert "window_size=1000" in rec["methods"]["amad"]["error"] and "metrics" in rec["methods"]["l2"]
    assert r.aggregates["methods"]["amad"]["errors"] == 2 and r.aggregates["methods"]["amad"]["vus_pr"]["mean"] is None
    assert "error" in db.markdown_report(r)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"methods: expected .*unknown: \['lstm'\]"):
        db.run_benchmark(DATA, "amad,lstm", progress=False)
    with pytest.raises(ValueError, match=r"entities: expected entities of .*got unknown \['synthetic-7'\]"):
        db.run_benchmark(DATA, "l2", entities=["synthetic-7"], progress=False)
    with pytest.raises(ValueError, match=r"params: expected parameters for the chosen methods"):
        db.run_benchmark(DATA, "l2", params={"knn": {}}, progress=False)
    with pytest.raises(ValueError, match="workers: expected a positive integer"):
        db.run_benchmark(DATA, "l2", workers=0, progress=False)


def test_workers_give_the_same_numbers(tmp_path):
    one = db.run_benchmark(DATA, ["l2", "knn"], progress=False, log=lambda s: None)
    two = db.run_benchmark(DATA, ["l2", "knn"], workers=2, progress=False, log=lambda s: None)
    for a, b in zip(one.records, two.records):
        for m in ("l2", "knn"):
            assert a["methods"][m]["metrics"] == b["methods"][m]["metrics"]


def test_cli_benchmark(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["benchmark", DATA, "--methods", "l2,random", "--out", str(out), "--param", "l2.contamination=0.02"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "2 entities" in text and "VUS-PR" in text
    assert (out / "benchmark.png").is_file()
    rec = json.load(open(out / "entities" / "synthetic-1.json"))
    assert rec["methods"]["l2"]["params"]["contamination"] == 0.02
    assert main(["benchmark", DATA, "--methods", "l2,nope", "--out", str(out)]) == 2
    assert "unknown: ['nope']" in capsys.readouterr().err
    assert main(["benchmark", DATA, "--methods", "l2", "--param", "l2contamination", "--out", str(out)]) == 2
    assert "METHOD.KEY=VALUE" in capsys.readouterr().err
