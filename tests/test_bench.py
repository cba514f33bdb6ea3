"""The benchmark harness runs and produces well-formed results (no timing assertions anywhere)."""
import argparse
import json
import math

import pytest
import torch

import amad_fast
from amad_fast.bench import cases, command, e2e, timing
from amad_fast.attention.reference import default_freqs

TINY = dict(B=2, H=2, L=16, D=8, S=2)


def _tiny_inputs():
    g = torch.Generator().manual_seed(0)
    B, H, L, D, S = (TINY[k] for k in "BHLDS")
    q, k, v = (torch.randn(B, H, L, D, generator=g) for _ in range(3))
    return q, k, v, default_freqs(H, S, D // 2), torch.full((H, S), 1.0 / S), torch.zeros(H)


def test_reference_forward_benchmark(benchmark):
    """pytest-benchmark on a tiny reference call: the fixture's harness path works."""
    args = _tiny_inputs()
    res = benchmark.pedantic(
        lambda: amad_fast.automask_attention(*args, need_divergence=True, backend="reference"), rounds=3, iterations=1
    )
    assert res.out.shape == args[0].shape and res.kl_local.shape == args[0].shape[:3]


def test_time_fn_fields_are_consistent():
    calls = []
    t = timing.time_fn(lambda: calls.append(1), torch.device("cpu"), warmup=1, repeats=4, min_sample_s=1e-4, budget_s=0.05)
    assert set(t) >= {"median_s", "q25_s", "q75_s", "iqr_s", "min_s", "samples", "n_inner"}
    assert 3 <= t["samples"] <= 4 and t["n_inner"] >= 1
    assert 0 <= t["min_s"] <= t["q25_s"] <= t["median_s"] <= t["q75_s"]
    assert t["iqr_s"] == pytest.approx(t["q75_s"] - t["q25_s"])
    # the warm-up call (which calibrates) + every sample's inner calls, nothing more
    assert len(calls) == 1 + t["samples"] * t["n_inner"]


def test_peak_memory_sees_a_known_allocation_on_cpu():
    n = 1 << 20  # 4 MiB of float32, alive at once with a second one of the same size

    def fn():
        a = torch.ones(n)
        b = a * 2
        return float(b[0])

    peak, method = timing.peak_memory(fn, torch.device("cpu"))
    assert isinstance(peak, int) and method
    assert peak >= 2 * 4 * n


def test_peak_memory_keeps_the_profilers_native_lines_out_of_the_output(capfd):
    # Kineto writes "USDT ... profiler_start/stop" to fd 2 for every profiled call
    n = 256
    timing.peak_memory(lambda: torch.ones(n, n) @ torch.ones(n, n), torch.device("cpu"))
    out, err = capfd.readouterr()
    assert "USDT" not in err and "profiler_st" not in err, err
    import sys
    print("still here", file=sys.stderr)  # fd 2 is restored afterwards
    assert "still here" in capfd.readouterr().err


def test_byte_model_matches_the_documented_formula():
    B, H, L, D, e = 3, 2, 5, 4, 2
    n, rows = B * H * L * D, B * H * L
    assert cases.automask_bytes(B, H, L, D, e, divergence=False, branches=False, backward=False) == 4 * n * e
    assert cases.automask_bytes(B, H, L, D, e, divergence=True, branches=False, backward=False) == (4 * n + 2 * rows) * e
    assert cases.automask_bytes(B, H, L, D, e, divergence=True, branches=True, backward=True) == 2 * (6 * n + 2 * rows) * e
    assert cases.plain_attention_bytes(B, H, L, D, e, backward=True) == 8 * n * e


def test_flop_model_matches_hand_counted_products():
    """FLOPs counted by hand on tiny shapes: an (m x k) by (k x n) product is m*n*k multiply-adds = 2*m*n*k FLOPs."""
    # one (batch, head), L = 2, D = 1: q k^T is (2x1)(1x2) = 8 FLOPs, p v is (2x2)(2x1) = 8 FLOPs
    assert cases.plain_attention_flops(1, 1, 2, 1, backward=False) == 16
    # backward: dv = p^T dout, dp = dout v^T, dq = ds k, dk = ds^T q, 8 FLOPs each
    assert cases.plain_attention_flops(1, 1, 2, 1, backward=True) == 16 + 32
    # two maps, each with plain attention's products
    assert cases.automask_flops(1, 1, 2, 1, backward=False) == 32
    assert cases.automask_flops(1, 1, 2, 1, backward=True) == 96
    # B=2, H=3, L=4, D=5: per (batch, head) two products of 2*4*4*5 = 160 FLOPs, six (batch, head) pairs
    assert cases.plain_attention_flops(2, 3, 4, 5, backward=False) == 6 * 2 * 160
    # four E x E projections of B*L tokens: L = 2 tokens, E = 3: 2*2*3*3 = 36 FLOPs each; backward:
    # the input's and the weight's gradient, 36 each
    assert cases.projection_flops(1, 2, 3, backward=False) == 4 * 36
    assert cases.projection_flops(1, 2, 3, backward=True) == 4 * 36 * 3


def test_gemm_fractions_divide_by_the_rate_of_the_records_dtype():
    gemm = [{"dtype": "float32", "status": "ok", "gflops": 100.0}, {"dtype": "bfloat16", "status": "ok", "gflops": 400.0},
            {"dtype": "float16", "status": "failed", "error": "no matmul"}]
    recs = [{"dtype": "bfloat16", "gflops": 50.0}, {"dtype": "float16", "gflops": 10.0}, {"dtype": "float32"}]
    cases.add_gemm_fractions(recs, gemm)
    assert recs[0]["gemm_fraction"] == 50.0 / 400.0 and recs[0]["gemm_fraction_float32"] == 50.0 / 100.0
    assert "gemm_fraction" not in recs[1] and recs[1]["gemm_fraction_float32"] == 0.1  # no float16 rate measured
    assert "gemm_fraction" not in recs[2] and "gemm_fraction_float32" not in recs[2]  # no GFLOP/s figure


def test_gemm_rate_times_a_square_matmul():
    rec = cases.gemm_rate(torch.device("cpu"), torch.float32, {"repeats": 3, "warmup": 1, "min_sample_s": 1e-4,
                                                                "budget_s": 0.05})
    n = cases.GEMM_SIZE["cpu"]
    assert rec["status"] == "ok" and rec["dtype"] == "float32" and rec["flops"] == 2 * n**3
    assert rec["gflops"] == pytest.approx(rec["flops"] / rec["median_s"] / 1e9)


def test_batch_keeps_elements_roughly_constant():
    assert cases.batch_for_length(100, 8) == 8
    assert cases.batch_for_length(2048, 8) == 1  # never below one window
    assert cases.batch_for_length(50, 8) == 16


def test_machine_slug_is_a_file_name():
    slug = timing.machine_slug({"device": "cpu", "cpu_model": "Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.0GHz"})
    assert slug == "cpu-intel-xeon-platinum-8480"
    assert timing.machine_slug({"device": "cuda:0", "gpu_name": "NVIDIA H200", "cpu_model": "x"}) == "cuda-nvidia-h200"


def test_bad_options_are_refused_with_the_argument_named():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtypes", "float8"])
    with pytest.raises(SystemExit, match="--parts"):
        command.resolve_config(parser.parse_args(["--parts", "attention,nope"]))


def _check_timed(rec):
    for key in ("median_s", "iqr_s", "windows_per_s"):
        assert isinstance(rec[key], float) and math.isfinite(rec[key]) and rec[key] > 0, (key, rec)


def test_quick_sweep_writes_well_formed_results(tmp_path, capsys):
    """The harness end to end on tiny shapes: table on stdout, JSON schema, markdown, plot."""
    threads = torch.get_num_threads()
    rc = command.main([
        "--quick", "--device", "cpu", "--lengths", "8,16", "--head-dims", "8", "--batch", "2", "--heads", "2",
        "--scales", "2", "--repeats", "3", "--warmup", "1", "--min-sample-ms", "0.1", "--budget-s", "0.02",
        "--threads", "1", "--e2e-batch", "2", "--e2e-d-model", "16", "--e2e-layers", "1", "--out-dir", str(tmp_path), "--name", "t",
    ])
    assert rc == 0
    assert torch.get_num_threads() == threads  # --threads is restored
    printed = capsys.readouterr().out
    assert "median ms" in printed and "windows/s" in printed

    data = json.loads((tmp_path / "t.json").read_text())
    assert data["schema"] == command.SCHEMA
    assert {"machine", "config", "notes", "attention", "e2e", "created", "wall_s"} <= set(data)
    m = data["machine"]
    for key in ("cpu_model", "python", "torch", "triton", "amad_fast", "extension_build", "backends"):
        assert key in m, key
    backends = data["config"]["backends"]
    assert "reference" in backends and "triton" not in backends  # triton is never timed on CPU

    gemm = {g["dtype"]: g for g in data["gemm"]}
    assert set(gemm) == {"float32"} and gemm["float32"]["status"] == "ok" and gemm["float32"]["gflops"] > 0
    assert "GFLOP/s" in printed and "%GEMM" in printed and "GEMM (" in printed

    att = data["attention"]
    labels = {r["label"] for r in att}
    masked_labels = {f"{b} {kind}" for b in backends for kind in cases.MASK_KINDS}
    assert set(backends) | {"sdpa", "mha", "amad-module"} | masked_labels == labels
    assert data["config"]["masks"] == list(cases.MASK_KINDS)
    assert {(r["L"], r["mode"]) for r in att} == {(L, mode) for L in (8, 16) for mode in ("fwd", "fwdbwd")}
    by_key = {(r["label"], r["L"], r["mode"]): r for r in att}
    # the reference takes every mask, so its masked cases are timed beside its unmasked one
    assert all(by_key[(f"reference {kind}", L, mode)]["status"] == "ok"
               for kind in cases.MASK_KINDS for L in (8, 16) for mode in ("fwd", "fwdbwd"))
    for r in att:
        if r["mask"] != "none":
            assert r["label"] == f"{r['unmasked_label']} {r['mask']}"
            if r["status"] == "unsupported":  # a backend that cannot take the mask: dispatch's reason, no time
                assert r["error"].startswith(f"backend {r['unmasked_label']!r} cannot run these inputs"), r
                assert "median_s" not in r and r["label"] in printed
                continue
            unmasked = by_key[(r["unmasked_label"], r["L"], r["mode"])]
            assert r["x_unmasked"] == pytest.approx(r["median_s"] / unmasked["median_s"])
            assert r["ref_over"] == pytest.approx(by_key[(f"reference {r['mask']}", r["L"], r["mode"])]["median_s"]
                                                  / r["median_s"])
        else:
            assert "x_unmasked" not in r
        assert r["status"] == "ok", r
        assert r["B"] == cases.batch_for_length(r["L"], 2) and (r["H"], r["D"], r["S"]) == (2, 8, 2)
        _check_timed(r)
        assert r["gbps"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9)
        B, H, L, D, E = r["B"], r["H"], r["L"], r["D"], r["H"] * r["D"]
        bw = r["mode"] == "fwdbwd"
        expected_flops = {
            "sdpa": cases.plain_attention_flops(B, H, L, D, backward=bw),
            "mha": cases.plain_attention_flops(B, H, L, D, backward=bw) + cases.projection_flops(B, L, E, backward=bw),
            "amad-module": cases.automask_flops(B, H, L, D, backward=bw) + cases.projection_flops(B, L, E, backward=bw),
        }.get(r["label"], cases.automask_flops(B, H, L, D, backward=bw))
        assert r["flops"] == expected_flops, r
        assert r["gflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)
        assert r["gemm_fraction"] == pytest.approx(r["gflops"] / gemm["float32"]["gflops"])
        assert r["gemm_fraction_float32"] == r["gemm_fraction"]  # the sweep's dtype is float32
        assert isinstance(r["peak_bytes"], int) and r["peak_bytes"] >= 0
        assert r["x_sdpa"] > 0 and r["ref_over"] > 0
    assert all(r["x_sdpa"] == 1.0 for r in att if r["label"] == "sdpa")

    e2e = data["e2e"]
    assert {(r["label"], r["mode"]) for r in e2e} == {(b, mode) for b in backends for mode in ("train", "score")}
    for r in e2e:
        assert r["status"] == "ok", r
        _check_timed(r)
    assert all(r["steps_per_s"] > 0 for r in e2e if r["mode"] == "train")

    md = (tmp_path / "t.md").read_text()
    assert "## Attention" in md and "## Method" in md and "## Masks" in md and "**masks**" in md
    assert "reference causal    fwdbwd time / unmasked time: L=8" in printed
    assert "GFLOP/s" in md and "GEMM (" in md and "**flops**" in md and "**gemm**" in md
    png = tmp_path / "t.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mask_arguments_pad_a_quarter_of_every_sequence_or_ask_for_causal():
    shape = cases.Shape(3, 2, 10, 4, 2, torch.float32, torch.device("cpu"))
    assert cases.mask_arguments("causal", shape) == {"is_causal": True}
    padded = cases.mask_arguments("padded", shape)["key_padding_mask"]
    assert padded.dtype == torch.bool and padded.shape == (3, 10)
    assert padded[:, :8].logical_not().all() and padded[:, 8:].all()  # round(0.25 * 10) = 2 padded keys
    tiny = cases.Shape(1, 1, 2, 4, 1, torch.float32, torch.device("cpu"))
    assert cases.mask_arguments("padded", tiny)["key_padding_mask"].tolist() == [[False, True]]  # at least one
    with pytest.raises(ValueError, match="mask"):
        cases.mask_arguments("sliding", shape)


def test_a_backend_that_cannot_take_a_mask_is_listed_with_dispatchs_reason(monkeypatch):
    """Masked cases of a backend whose declaration lacks the mask are records with dispatch's
    reason, not timed and not dropped; its unmasked case is timed as before."""
    import dataclasses

    from amad_fast.attention.backends.reference import ReferenceBackend

    declared = ReferenceBackend().support()
    monkeypatch.setattr(ReferenceBackend, "support", lambda self: dataclasses.replace(declared, masks=frozenset()))
    shape = cases.Shape(2, 2, 8, 4, 2, torch.float32, torch.device("cpu"))
    group = cases.automask_cases(shape, ["reference"], divergence=True, branches=False, compile_reference=False,
                                 masks=cases.MASK_KINDS)
    assert [c.label for c in group] == ["reference", "reference causal", "reference padded"]
    expected = "backend 'reference' cannot run these inputs: attention masks not supported yet"
    assert [c.refused for c in group] == [None, expected, expected]
    records = cases.measure_group(group, shape, "fwdbwd", {"repeats": 3, "min_sample_s": 1e-4, "budget_s": 0.02},
                                  memory=False)
    cases.add_ratios(records)
    plain, causal, padded = records
    assert plain["status"] == "ok" and plain["mask"] == "none"
    for rec, kind in ((causal, "causal"), (padded, "padded")):
        assert rec["status"] == "unsupported" and rec["error"] == expected and rec["mask"] == kind
        assert "median_s" not in rec and "x_unmasked" not in rec
    from amad_fast.bench import report

    assert f"reference causal    not measured: {expected}" in report.mask_summary(records)
    assert f"unsupported: {expected[:40]}" in report.format_attention_table(records)


def test_bad_mask_option_is_refused():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert parser.parse_args(["--masks", "none"]).masks == []
    assert parser.parse_args(["--masks", "padded"]).masks == ["padded"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--masks", "causal,diagonal"])


def test_a_failing_case_becomes_a_record_not_an_exception():
    shape = cases.Shape(1, 1, 4, 2, 1, torch.float32, torch.device("cpu"))

    def boom():
        raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")

    def fine():
        return torch.ones(4) * 2

    group = [cases.Case("x", "baseline", boom, boom, 1, 1),
             cases.Case("y", "baseline", fine, fine, 8, 16, flops_fwd=100, flops_fwdbwd=300)]
    bad, good = cases.measure_group(group, shape, "fwdbwd", {"repeats": 3, "min_sample_s": 1e-4})
    assert bad["status"] == "oom" and "out of memory" in bad["error"] and "median_s" not in bad
    assert good["status"] == "ok" and good["bytes"] == 16 and good["samples"] == 3
    assert good["flops"] == 300 and good["gflops"] == pytest.approx(300 / good["median_s"] / 1e9)


def test_e2e_times_the_training_loops_step():
    """The end-to-end train step is train_model's step: same losses, same optimiser, same parameters after."""
    from amad_fast.detection.model import AMAD
    from amad_fast.detection.training import TrainConfig, train_step

    sizes = dict(d_model=16, n_heads=2, n_layers=1, num_scales=2)
    torch.manual_seed(0)
    model, step, _ = e2e.build_e2e_model("reference", 3, 8, torch.device("cpu"), sizes)
    torch.manual_seed(0)
    expected_model = AMAD(3, window_size=8, backend="reference", **sizes)
    cfg = TrainConfig()
    optimizer = torch.optim.Adam(expected_model.parameters(), lr=cfg.lr)
    x = torch.randn(4, 8, 3, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        assert torch.equal(step(x), train_step(expected_model, optimizer, x, cfg))
    for (name, p), q in zip(model.named_parameters(), expected_model.parameters()):
        assert torch.equal(p, q), name


def _bench_cpp_cpu():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "bench_cpp_cpu.py"
    spec = importlib.util.spec_from_file_location("bench_cpp_cpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sweep_time_budget_accounts_products_and_rest():
    """The sweep's time budget: each case's products at torch.mm's rate, the rest, the kl cost, and the
    two estimates, from numbers chosen so each is known by hand."""
    b = _bench_cpp_cpu()
    shape = dict(B=1, H=1, L=1000, D=50, S=4)  # one product: 2·1000²·50 = 1e8 FLOPs
    gemm = {"float32": {"median": 100.0}, "bfloat16": {"median": 1000.0}}  # 1 ms, 0.1 ms per product
    f32 = {"cpp_fwd": 10.0, "cpp_fwd_nokl": 7.0, "sdpa_fwd": 4.0, "cpp_fwd_bwd": 30.0, "cpp_fwd_bwd_out": 20.0,
           "sdpa_fwd_bwd": 12.0}
    case = {"shape": shape, "dtype": "float32", "ms": {"median": f32},
            "cpp_over_sdpa": {"fwd": {"median": 2.5}}}
    t = b.time_budget(case, gemm)
    assert t["product_ms_at_mm_rate"] == {n: float(k) for n, k in b._PRODUCTS.items()}
    assert t["rest_ms"]["cpp_fwd_bwd"] == 30.0 - 14 and t["rest_ms"]["sdpa_fwd"] == 2.0
    assert t["kl_cost_over_sdpa_fwd"] == 0.75  # (10 − 7) / 4
    assert t["fwd_kl_estimate_over_sdpa"] == 2.5  # (3 products + 2·2 rest + 3 kl) / 4
    bf = dict(case, dtype="bfloat16", ms={"median": {n: v / 2 for n, v in f32.items()}})
    rows = [line for line in b.budget_markdown({"gemm_gflops": gemm, "cases": [case, bf]}) if line.startswith("| (1, 1")]
    # bfloat16 estimate, forward: 10 / (rest 7 + 0.3) = 1.37; forward+backward: 30 / (16 + 1.4) = 1.72
    assert len(rows) == 1 and rows[0].endswith("| 1.37, 1.72 / 2.00, 2.00 |"), rows
