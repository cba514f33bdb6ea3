"""``amad-fast bench``: AutoMask attention per backend against baselines, and AMAD end to end.

``amad-fast bench`` (or ``python -m amad_fast.bench``) measures, on the auto-picked device (cuda
if present, else cpu), every backend that :func:`amad_fast.available_backends` reports usable
(Triton is skipped on CPU, where only its slow interpreter runs), and in the same run the
baselines: torch.compile of the reference, ``scaled_dot_product_attention`` doing plain attention
of the same shape, ``nn.MultiheadAttention`` and ``AutoMaskAttention`` (both with projections).
Each backend is timed unmasked and, beside it, with a causal mask and with padded keys
(``--masks``; a backend that cannot take a mask is listed with dispatch's reason), the masked
time given as a ratio to the unmasked one. Every comparison is a ratio of two figures from one run. It prints a table and writes JSON,
markdown and a PNG plot. The methods are spelled out in
:data:`amad_fast.bench.report.METHOD_NOTES` (also in the JSON). This module holds the options,
their defaults and the assembly of one result from the parts."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from typing import List, Optional, Sequence

import torch

from amad_fast.bench.cases import (
    MASK_KINDS,
    PLAIN_BASELINES,
    add_gemm_fractions,
    benchmark_backends,
    gemm_rate,
    run_attention_sweep,
)
from amad_fast.bench.e2e import run_e2e
from amad_fast.bench.report import (
    METHOD_NOTES,
    compile_summary,
    format_attention_table,
    format_e2e_table,
    format_gemm_line,
    mask_summary,
    plot,
    summarize,
    write_markdown,
)
from amad_fast.bench.timing import load_average, machine_info, machine_slug

# The layout of the JSON result; changes when its fields do.
SCHEMA = "amad_fast.bench/1"
# The sweep's window lengths L: the full run, and --quick.
DEFAULT_LENGTHS = (64, 100, 256, 512, 1024, 2048)
QUICK_LENGTHS = (64, 256)
# The dtype names --dtypes accepts.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _int_list(text: str) -> List[int]:
    """argparse type: ``"64,256"`` -> [64, 256]."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _dtype_list(text: str) -> List[str]:
    """argparse type: a comma list of names among :data:`DTYPES`."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in DTYPES]
    if bad:
        raise argparse.ArgumentTypeError(f"expected dtypes among {sorted(DTYPES)}, got {bad}")
    return names


def _mask_list(text: str) -> List[str]:
    """argparse type: a comma list of names among :data:`~amad_fast.bench.cases.MASK_KINDS`, or
    ``none`` for unmasked cases only."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in MASK_KINDS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected 'none' or names among {list(MASK_KINDS)}, got {text!r}")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``amad-fast bench`` / ``python -m amad_fast.bench``."""
    parser.add_argument("--quick", action="store_true",
                        help="small sweep (L 64,256; D 64; few repeats; small B; no compile): well under 2 minutes on CPU")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available, else cpu")
    parser.add_argument("--parts", default="attention,e2e", help="comma list among attention,e2e (default both)")
    parser.add_argument("--lengths", type=_int_list, help=f"window lengths L (default {','.join(map(str, DEFAULT_LENGTHS))})")
    parser.add_argument("--head-dims", type=_int_list, help="head dims D (default 32,64)")
    parser.add_argument("--dtypes", type=_dtype_list, help="default float32 on CPU, bfloat16,float32 on GPU")
    parser.add_argument("--batch", type=int, help="batch B0 at L=100; B = round(B0*100/L) (default CPU 8, GPU 512; quick 4)")
    parser.add_argument("--heads", type=int, default=8, help="H (default 8)")
    parser.add_argument("--scales", type=int, default=4, help="S (default 4)")
    parser.add_argument("--backends", help="comma list of backends to measure (default: every usable one)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="include torch.compile(reference) (default on, off with --quick)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--branches", action="store_true", help="also return out_local/out_global (need_branches)")
    parser.add_argument("--no-divergence", action="store_true", help="skip kl_local/kl_global (need_divergence=False)")
    parser.add_argument("--masks", type=_mask_list, default=list(MASK_KINDS),
                        help="masked cases timed beside each backend's unmasked one: a comma list among "
                             f"{','.join(MASK_KINDS)}, or none (default {','.join(MASK_KINDS)})")
    parser.add_argument("--repeats", type=int, help="timed samples per case (default 15; quick 5)")
    parser.add_argument("--warmup", type=int, help="warm-up calls per case, the last also calibrates (default 3; quick 1)")
    parser.add_argument("--min-sample-ms", type=float, help="shortest sample; calls are repeated within it (default 10; quick 2)")
    parser.add_argument("--budget-s", type=float, help="rough time budget per case and mode (default 4; quick 0.4)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for CPU runs (default: torch's own choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--e2e-batch", type=int, help="windows per batch in the end-to-end benchmark (default CPU 32, GPU 256; quick 4)")
    parser.add_argument("--e2e-d-model", type=int, help="override the model's d_model (default: the model's own default)")
    parser.add_argument("--e2e-layers", type=int, help="override the model's number of blocks (default: the model's own)")
    parser.add_argument("--out-dir", default="bench_results", help="where the JSON, markdown and PNG go (default ./bench_results)")
    parser.add_argument("--name", help="file stem (default <device>-<processor>[-quick], e.g. cpu-amd-epyc)")
    parser.add_argument("--no-files", action="store_true", help="print the table only")


def resolve_config(args) -> dict:
    """Defaults filled in from --quick and the device."""
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: expected a CUDA device, got none (torch.cuda.is_available() is False)")
    gpu, quick = device.type == "cuda", args.quick
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("attention", "e2e")]
    if bad:
        raise SystemExit(f"--parts: expected names among attention,e2e, got {bad}")
    pick = lambda given, q, full: given if given is not None else (q if quick else full)  # noqa: E731
    return {
        "device": device,
        "parts": parts,
        "lengths": args.lengths or list(QUICK_LENGTHS if quick else DEFAULT_LENGTHS),
        "head_dims": args.head_dims or ([64] if quick else [32, 64]),
        "dtypes": args.dtypes or (["bfloat16", "float32"] if gpu and not quick else (["bfloat16"] if gpu else ["float32"])),
        "batch100": pick(args.batch, 64 if gpu else 4, 512 if gpu else 8),
        "heads": args.heads,
        "scales": args.scales,
        "compile": pick(args.compile, False, True),
        "divergence": not args.no_divergence,
        "branches": args.branches,
        "masks": list(args.masks),
        "timing": {
            "repeats": pick(args.repeats, 5, 15),
            "warmup": pick(args.warmup, 1, 3),
            "min_sample_s": pick(args.min_sample_ms, 2.0, 10.0) / 1e3,
            "budget_s": pick(args.budget_s, 0.4, 4.0),
        },
        "memory": not args.no_memory,
        "e2e_batch": pick(args.e2e_batch, 4, 256 if gpu else 32),
        "e2e_overrides": {k: v for k, v in (("d_model", args.e2e_d_model), ("n_layers", args.e2e_layers)) if v},
        "backends": [b.strip() for b in args.backends.split(",")] if args.backends else None,
        "quick": quick,
    }


def _command_line() -> str:
    """How this run was started, e.g. ``python -m amad_fast.bench --quick`` or ``amad-fast bench --quick``."""
    if not sys.argv:
        return "?"
    prog = sys.argv[0] or "python"
    if prog.endswith(os.path.join("amad_fast", "bench", "__main__.py")):
        prog = "python -m amad_fast.bench"
    elif prog.endswith(".py"):
        prog = "python " + os.path.relpath(prog)
    else:
        prog = os.path.basename(prog)
    return " ".join([prog] + sys.argv[1:])


def run(args) -> int:
    """Run the benchmark described by parsed ``args``; print the tables; write the files."""
    threads_before = torch.get_num_threads()
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads_before)  # --threads must not leak into a caller (tests, CLI)


def _run(args) -> int:
    cfg = resolve_config(args)
    device = cfg["device"]
    if args.threads:
        torch.set_num_threads(args.threads)
    backends, skipped = benchmark_backends(device)
    if cfg["backends"] is not None:
        unknown = [b for b in cfg["backends"] if b not in backends]
        if unknown:
            raise SystemExit(f"--backends: expected usable backends among {backends}, got {unknown} "
                             f"(unusable: {skipped})")
        backends = cfg["backends"]
    info = machine_info(device)
    log = lambda s: print(s, flush=True)  # noqa: E731
    log(f"amad_fast bench on {info.get('gpu_name') or info['cpu_model']} ({device}); backends {backends}; "
        f"skipped {sorted(skipped)}")
    baselines = (["compile(reference)"] if cfg["compile"] else []) + list(PLAIN_BASELINES)
    result = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": _command_line(),
        "machine": info,
        "config": {
            "device": str(device), "quick": cfg["quick"], "parts": cfg["parts"], "lengths": cfg["lengths"],
            "head_dims": cfg["head_dims"], "dtypes": cfg["dtypes"], "batch_at_L100": cfg["batch100"],
            "heads": cfg["heads"], "scales": cfg["scales"], "need_divergence": cfg["divergence"],
            "need_branches": cfg["branches"], "masks": cfg["masks"], "timing": cfg["timing"], "backends": backends,
            "skipped_backends": skipped, "baselines": baselines, "e2e_batch": cfg["e2e_batch"],
            "e2e_overrides": cfg["e2e_overrides"],
        },
        "notes": dict(METHOD_NOTES),
        "gemm": [],
        "attention": [],
        "e2e": [],
    }
    t_start = time.perf_counter()
    if "attention" in cfg["parts"]:
        log("attention:")
        for name in dict.fromkeys(["float32"] + cfg["dtypes"]):
            result["gemm"].append(gemm_rate(device, DTYPES[name], cfg["timing"]))
        log(format_gemm_line(result["gemm"]))
        result["attention"] = run_attention_sweep(
            device, cfg["lengths"], cfg["head_dims"], [DTYPES[d] for d in cfg["dtypes"]],
            batch100=cfg["batch100"], heads=cfg["heads"], scales=cfg["scales"], backends=backends,
            compile_reference=cfg["compile"], divergence=cfg["divergence"], branches=cfg["branches"],
            timing=cfg["timing"], memory=cfg["memory"], masks=cfg["masks"], log=log,
        )
        add_gemm_fractions(result["attention"], result["gemm"])
    if "e2e" in cfg["parts"]:
        result["e2e_note"] = (
            f"AMAD (amad_fast.detection.model.AMAD) at its default size{' but ' + str(cfg['e2e_overrides']) if cfg['e2e_overrides'] else ''}, "
            f"C = 25 channels, L = 100, batch {cfg['e2e_batch']}; "
            "train = one optimiser step as amad_fast.detection.training takes it (train_step: one forward with "
            "branches, the Max-Min gradient routes of TrainConfig's defaults, Adam); score = no-grad forward "
            "without branches."
        )
        log("end to end (amad):")
        result["e2e"] = run_e2e(device, batch=cfg["e2e_batch"], backends=backends, timing=cfg["timing"],
                                overrides=cfg["e2e_overrides"], log=log)
    result["wall_s"] = time.perf_counter() - t_start
    result["machine"]["load_average_at_end"] = load_average()

    print()
    if result["attention"]:
        print(format_gemm_line(result["gemm"]))
        print(format_attention_table(result["attention"]))
        for line in compile_summary(result["attention"]):
            print(line)
        print()
        for line in summarize(result["attention"]) + mask_summary(result["attention"]):
            print(line)
        print()
    if result["e2e"]:
        print(result["e2e_note"])
        print(format_e2e_table(result["e2e"]))
        print()
    if not args.no_files:
        os.makedirs(args.out_dir, exist_ok=True)
        stem = os.path.join(args.out_dir, args.name or (machine_slug(info) + ("-quick" if cfg["quick"] else "")))
        with open(stem + ".json", "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
        write_markdown(stem + ".md", result)
        err = plot(stem + ".png", result["attention"]) if result["attention"] else "no attention results"
        print(f"wrote {stem}.json, {stem}.md" + (f", {stem}.png" if err is None else f" (no plot: {err})"))
    print(f"total {result['wall_s']:.1f} s")
    failed = [r for r in result["attention"] + result["e2e"] if r.get("status") == "failed"]
    return 0 if not failed or all(r.get("label") == "compile(reference)" for r in failed) else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="amad-fast bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
