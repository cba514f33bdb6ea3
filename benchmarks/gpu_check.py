"""One-shot GPU check of the fused backends: parity, peak memory, timings.

Meant for a short session on a GPU machine after ``pip install --no-build-isolation .``; it builds
nothing. In one call (a few minutes) it

1. parity: for the triton and cpp (CUDA) backends in float32, bfloat16 and float16, compares out,
   kl_local, kl_global, out_local, out_global and the six gradients (q, k, v, freqs, weights, mix)
   with the float64 reference under the parity rule of amad_fast.attention.testing (the tests' rule):
   a kernel may be at most twice as far from float64 as the reference run in the same dtype, plus a
   floor: err_kernel <= 2 * err_reference_same_dtype + floor, with the floor of the fused kernels
   (testing.fused_floor: an absolute term of the dtype, plus a relative one for the parameter grads,
   sums of B*L*P per-position terms added in another order);
2. memory: peak extra memory of forward and forward+backward at L = 4096; the fused kernel must
   run where the reference runs out of memory or needs at least 8x as much;
3. timing: forward and forward+backward of each backend, the reference, torch.compile of the
   reference and SDPA plain attention at (B=256, H=8, L=100, D=64, S=4) and
   (B=16, H=8, L=1024, D=64, S=4) in bfloat16 and float32, with achieved GB/s (byte model in
   amad_fast.bench.report.METHOD_NOTES).

Parity runs in a child process with AMAD_TRITON_AUTOTUNE=0 (one launch config, so each shape and
dtype compiles once instead of once per autotune config), then again in this process with the
autotuned configs on the shapes the timings use (their compiles are shared with the timings).
Each part runs under try/except and the JSON + markdown under $OUT (default ./gpu_out) are
rewritten after every part, so a failure or the time limit loses nothing already measured.
``--dry-run`` runs the same code on tiny CPU shapes (Triton via its interpreter) to catch errors
on a machine without a GPU. Exit status 0 when every parity and memory check passes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Optional

T0 = time.perf_counter()


def log(msg: str) -> None:
    child = "child " if "--child" in sys.argv else ""
    print(f"[{child}{time.perf_counter() - T0:7.1f} s] {msg}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (no GPU needed): checks the script runs")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_out", help="output folder (default $OUT, else ./gpu_out)")
    p.add_argument("--parts", default="parity,memory,timing", help="comma list among parity,memory,timing")
    p.add_argument("--backends", default="triton,cpp", help="kernel backends to check (default triton,cpp)")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile(reference) out of the timings")
    p.add_argument("--time-limit", type=float, default=420.0,
                   help="seconds; parts and shapes not started by then are skipped (default 420)")
    p.add_argument("--memory-batch", type=int, default=8, help="B of the L=4096 memory check (default 8)")
    p.add_argument("--parity-in-process", action="store_true",
                   help="run the whole parity sweep here, with autotuning (slow: every config compiles for "
                        "every shape and dtype); by default it runs in a child with AMAD_TRITON_AUTOTUNE=0")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


ARGS = parse_args()
if ARGS.dry_run and os.environ.get("TRITON_INTERPRET") is None:
    import torch as _torch

    if not _torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: Triton runs on CPU tensors

import torch  # noqa: E402

try:
    import amad_fast  # noqa: E402
except ImportError:  # a source checkout that is not installed (dry run): use the tree beside this file
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import amad_fast  # noqa: E402
from amad_fast.bench.cases import (  # noqa: E402
    Shape,
    add_ratios,
    automask_cases,
    error_text,
    measure_group,
    plain_cases,
    record_failure,
)
from amad_fast.bench.report import METHOD_NOTES, compile_summary, format_attention_table, progress_line  # noqa: E402
from amad_fast.bench.timing import finite_checks_off, machine_info, peak_memory  # noqa: E402
from amad_fast.attention import automask_attention, testing  # noqa: E402
from amad_fast.attention.dispatch import BACKENDS  # noqa: E402
from amad_fast.attention.validation import check_inputs, check_masks  # noqa: E402

if ARGS.dry_run:
    DEVICE = torch.device("cpu")
    PARITY_SHAPES = [(2, 2, 16, 16, 2), (1, 2, 33, 32, 3)]
    TIMING_SHAPES = [(4, 2, 32, 16, 2)]
    TUNED_PARITY = [((2, 2, 16, 16, 2), torch.float32)]
    MEMORY_SHAPE = (1, 2, 128, 16, 2)
    TIMING = {"warmup": 1, "repeats": 3, "min_sample_s": 1e-4, "budget_s": 0.05}
else:
    if not torch.cuda.is_available():
        sys.exit("gpu_check: expected a CUDA device, got none (torch.cuda.is_available() is False); use --dry-run on CPU")
    DEVICE = torch.device("cuda")
    # (B, H, L, D, S): the model size, a multi-block L that is no multiple of a block, a small head dim, L = 1
    PARITY_SHAPES = [(4, 8, 100, 64, 4), (2, 4, 300, 64, 4), (3, 2, 77, 32, 2), (2, 2, 1, 64, 4)]
    TIMING_SHAPES = [(256, 8, 100, 64, 4), (16, 8, 1024, 64, 4)]
    # parity with the autotuned configs, on the autotune keys (L bucket, D, S, dtypes) the timings use anyway
    TUNED_PARITY = [((4, 8, 100, 64, 4), torch.bfloat16), ((4, 8, 100, 64, 4), torch.float32),
                    ((2, 8, 1024, 64, 4), torch.bfloat16), ((2, 8, 1024, 64, 4), torch.float32)]
    MEMORY_SHAPE = (ARGS.memory_batch, 8, 4096, 64, 4)
    TIMING = {"warmup": 3, "repeats": 15, "min_sample_s": 0.005, "budget_s": 1.0}

PARITY_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
#: masked parity: each mask kind on the first two parity shapes, float32 and bfloat16 ("attn": an
#: additive float attn_mask of shape (B·H, L, L), N(0, 1) biases with about a fifth of them −inf)
MASK_KINDS = ("padding", "causal", "padding+causal", "attn", "attn+padding+causal")
MASKED_PARITY = [(shape, dtype, kind) for shape in PARITY_SHAPES[:2] for dtype in (torch.float32, torch.bfloat16)
                 for kind in MASK_KINDS]
TIMING_DTYPES = [torch.bfloat16, torch.float32]


RESULT: dict = {}  # everything measured so far; rewritten to $OUT as it grows


def checkpoint(part: str, value: dict) -> None:
    """Keep a part's partial results and rewrite the output files (a kill loses nothing done)."""
    RESULT[part] = value
    RESULT["wall_s"] = time.perf_counter() - T0
    try:
        write_outputs(RESULT)
    except Exception as exc:  # noqa: BLE001 - writing must never stop the measuring
        log(f"could not write outputs: {exc}")


def time_left() -> float:
    return ARGS.time_limit - (time.perf_counter() - T0)


def dname(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ------------------------------------------------------------------------------------------ parity
def mask_arguments(kind: str, shape) -> dict:
    """The masks of a masked parity case: padding of the last quarter of every other sequence (and
    the whole last sequence when B > 2, so some rows have no allowed key under causal), causal, an
    additive attn_mask (blocking every future key when causal too, as is_causal requires), or a mix."""
    B, H, L = shape[0], shape[1], shape[2]
    masks = {}
    if "padding" in kind:
        kept = [L if b % 2 == 0 else max(1, L - L // 4) for b in range(B)]
        if B > 2:
            kept[-1] = 0
        masks["key_padding_mask"] = torch.arange(L)[None, :] >= torch.tensor(kept)[:, None]
    if "causal" in kind:
        masks["is_causal"] = True
    if "attn" in kind:
        g = torch.Generator().manual_seed(7)
        bias = torch.randn(B * H, L, L, generator=g).masked_fill(torch.rand(B * H, L, L, generator=g) < 0.2,
                                                                  float("-inf"))
        if "causal" in kind:
            bias = bias.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
        masks["attn_mask"] = bias
    return masks


def masked(backend: str, masks: dict):
    """A callable with automask_attention's signature running ``backend`` with ``masks``. The cpp
    backend's CUDA kernels are called through the backend itself: dispatch refuses masks on CUDA
    tensors until this check has passed on a GPU."""
    def call(q, k, v, freqs, weights, mix, need_divergence=True, need_branches=True):
        kw = {n: (t.to(q.device) if isinstance(t, torch.Tensor) else t) for n, t in masks.items()}
        if backend != "cpp" or q.device.type != "cuda":
            return automask_attention(q, k, v, freqs, weights, mix, need_divergence=need_divergence,
                                      need_branches=need_branches, backend=backend, **kw)
        dims = check_inputs(q, k, v, freqs, weights, mix, None)
        spec = check_masks(kw.get("key_padding_mask"), kw.get("attn_mask"), kw.get("is_causal", False), dims,
                           q.device)
        return BACKENDS["cpp"].forward(q, k, v, freqs, weights, mix, q.shape[-1] ** -0.5, need_divergence,
                                       need_branches, 0.0, spec)
    return call


def parity_one(backend: str, shape, dtype: torch.dtype, masks: Optional[dict] = None) -> list:
    """Rows of (quantity, errors, tolerance, pass) for one backend, shape and dtype: q, k, v in
    ``dtype`` and float32 parameters (as a model holds them), under testing's rule and fused_floor;
    ``masks`` (mask_arguments) for a masked case."""
    inputs = testing.make_inputs(*shape)
    reference, kernel = ("reference", backend) if not masks else (masked("reference", masks), masked(backend, masks))
    exact = testing.run(reference, inputs)
    ref_dt = testing.run(reference, inputs, dtype, torch.float32, device=DEVICE)
    got = testing.run(kernel, inputs, dtype, torch.float32, device=DEVICE)
    stats = testing.parity_stats([(got, ref_dt, exact)], testing.fused_floor(dtype))
    rows = []
    for name, (ratio, p) in stats.items():
        k = got[name]
        finite = bool(torch.isfinite(k).all())
        ok = finite and ratio <= 2.0 and k.dtype == ref_dt[name].dtype and k.shape == ref_dt[name].shape
        rows.append({
            "backend": backend, "dtype": dname(dtype), "shape": list(shape), "quantity": name,
            "err_kernel": p.error, "err_reference": p.reference_error, "floor": p.floor, "tol": p.tolerance,
            "scale": p.scale, "kernel_dtype": dname(k.dtype), "expected_dtype": dname(ref_dt[name].dtype),
            "finite": finite, "pass": ok,
        })
    return rows


def parity_cases(backends, cases, config: str, rows: list, skipped: list) -> None:
    """Run parity_one for every backend and (shape, dtype) in ``cases``; append rows tagged ``config``."""
    for backend in backends:
        for shape, dtype, *kind in cases:
            kind = kind[0] if kind else None
            tag = f"parity[{config}] {backend} {dname(dtype)} {shape}" + (f" {kind}" if kind else "")
            if time_left() < 0:
                skipped.append({"case": tag, "reason": "time limit"})
                continue
            try:
                new = parity_one(backend, shape, dtype, mask_arguments(kind, shape) if kind else None)
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, RuntimeError) and "cannot run these inputs" in str(exc):
                    skipped.append({"case": tag, "reason": error_text(exc)})
                    log(f"{tag}: skipped ({error_text(exc)})")
                    continue
                rows.append({"backend": backend, "dtype": dname(dtype), "shape": list(shape), "quantity": "*",
                             "config": config, "pass": False, "error": error_text(exc)})
                log(f"{tag}: ERROR {error_text(exc)}")
                traceback.print_exc()
                continue
            for r in new:
                r["config"] = config
                r["masks"] = kind or "none"
            rows.extend(new)
            checkpoint("parity", {"rows": rows, "skipped": skipped, "partial": True})
            bad = [r["quantity"] for r in new if not r["pass"]]
            worst = max(new, key=lambda r: r["err_kernel"] / r["tol"] if r["tol"] else 0.0)
            log(f"{tag}: {'ok' if not bad else 'FAIL ' + ','.join(bad)} "
                f"(worst {worst['quantity']}: {worst['err_kernel']:.2e} vs tol {worst['tol']:.2e})")


def parity_in_child(backends, rows: list, skipped: list) -> None:
    """The full parity sweep in a child process with AMAD_TRITON_AUTOTUNE=0 (one fixed Triton
    config: one compile per specialisation instead of one per autotune config), merged here."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--parts", "parity", "--out", tmp,
               "--backends", ",".join(backends), "--time-limit", str(max(30.0, min(300.0, time_left() - 60)))]
        if ARGS.dry_run:
            cmd.append("--dry-run")
        env = dict(os.environ, AMAD_TRITON_AUTOTUNE="0")
        log("parity sweep in a child with AMAD_TRITON_AUTOTUNE=0: " + " ".join(cmd[1:]))
        try:
            proc = subprocess.run(cmd, env=env, timeout=max(60.0, time_left()))
            log(f"child exited with {proc.returncode}")
        except subprocess.TimeoutExpired:
            log("child timed out; keeping what it wrote")
        path = os.path.join(tmp, "gpu_check.json")
        if not os.path.exists(path):
            skipped.append({"case": "parity[fixed] (child)", "reason": "the child wrote no results"})
            return
        with open(path, encoding="utf-8") as fh:
            child = json.load(fh)
    part = child.get("parity", {})
    rows.extend(part.get("rows", []))
    skipped.extend(part.get("skipped", []))
    for name, err in child.get("errors", {}).items():
        skipped.append({"case": f"child part {name}", "reason": err})


def part_parity(backends) -> dict:
    rows, skipped = [], []
    everything = [(shape, dtype) for shape in PARITY_SHAPES for dtype in PARITY_DTYPES]
    fixed = "fixed" if (ARGS.child or os.environ.get("AMAD_TRITON_AUTOTUNE") == "0") else "autotuned"
    if ARGS.child or ARGS.parity_in_process:
        parity_cases(backends, everything, fixed, rows, skipped)
    else:
        parity_in_child(backends, rows, skipped)
        parity_cases(backends, TUNED_PARITY, "autotuned", rows, skipped)
    if not ARGS.child:  # masked cases once, in this process (the child runs the unmasked sweep)
        parity_cases(backends, MASKED_PARITY, "masked", rows, skipped)
    return {"rows": rows, "skipped": skipped, "pass": bool(rows) and all(r["pass"] for r in rows)}


# ------------------------------------------------------------------------------------------ memory
def part_memory(backends) -> dict:
    """Peak extra memory at L = 4096 for each kernel backend against the reference, fwd and fwd+bwd."""
    B, H, L, D, S = MEMORY_SHAPE
    out = {"shape": list(MEMORY_SHAPE), "rows": [], "checks": []}
    for dtype in ([torch.bfloat16, torch.float32] if not ARGS.dry_run else [torch.float32]):
        shape = Shape(B, H, L, D, S, dtype, DEVICE)
        peaks = {}
        for label in dict.fromkeys([*backends, "reference"]):
            for mode in ("fwd", "fwdbwd"):
                rec = {"label": label, "mode": mode, "dtype": dname(dtype), "status": "ok"}
                try:
                    case = automask_cases(shape, [label], divergence=True, branches=True, compile_reference=False)[0]
                    fn = case.forward if mode == "fwd" else case.step
                    with finite_checks_off():
                        fn()  # first call: kernel compilation / autotuning outside the measurement
                        if DEVICE.type == "cuda":
                            torch.cuda.synchronize()
                        rec["peak_bytes"], rec["method"] = peak_memory(fn, DEVICE)
                    del case, fn
                except Exception as exc:  # noqa: BLE001
                    record_failure(rec, exc)
                if DEVICE.type == "cuda":
                    torch.cuda.empty_cache()
                peaks[(label, mode)] = rec
                out["rows"].append(rec)
                log(f"memory {dname(dtype)} L={L} {label} {mode}: "
                    + (f"{rec['peak_bytes'] / 2**20:.1f} MiB" if rec["status"] == "ok" else f"{rec['status']} {rec.get('error', '')}"))
        for label in backends:
            for mode in ("fwd", "fwdbwd"):
                k, r = peaks[(label, mode)], peaks[("reference", mode)]
                if k["status"] != "ok" and "cannot run these inputs" in k.get("error", ""):
                    out["checks"].append({"backend": label, "mode": mode, "dtype": dname(dtype), "pass": None,
                                          "note": "skipped: " + k["error"]})
                    continue
                ratio = (r["peak_bytes"] / max(k["peak_bytes"], 1)) if k["status"] == r["status"] == "ok" else None
                ok = k["status"] == "ok" and (r["status"] == "oom" or (ratio is not None and ratio >= 8.0))
                if ARGS.dry_run:
                    ok = k["status"] == "ok"  # tiny CPU shapes: the 8x criterion means nothing, only that it ran
                out["checks"].append({"backend": label, "mode": mode, "dtype": dname(dtype), "pass": ok,
                                      "reference_status": r["status"], "ratio_reference_over_kernel": ratio})
        checkpoint("memory", dict(out, partial=True))
    decided = [c["pass"] for c in out["checks"] if c["pass"] is not None]
    out["pass"] = bool(decided) and all(decided)
    return out


# ------------------------------------------------------------------------------------------ timing
def part_timing(backends) -> dict:
    records, skipped = [], []
    for dtype in TIMING_DTYPES if not ARGS.dry_run else [torch.float32]:
        for B, H, L, D, S in TIMING_SHAPES:
            tag = f"timing {dname(dtype)} B={B} L={L}"
            if time_left() < 60:
                skipped.append({"case": tag, "reason": "time limit"})
                log(f"{tag}: skipped (time limit)")
                continue
            shape = Shape(B, H, L, D, S, dtype, DEVICE)
            usable = []
            for name in backends:
                reason = backend_reason(name, shape)
                if reason:
                    skipped.append({"case": f"{tag} {name}", "reason": reason})
                else:
                    usable.append(name)
            torch._dynamo.reset()
            compile_ref = not ARGS.no_compile and time_left() > 150  # a compile takes tens of seconds
            if not ARGS.no_compile and not compile_ref:
                skipped.append({"case": f"{tag} compile(reference)", "reason": "time limit"})
            try:
                cases = automask_cases(shape, list(dict.fromkeys([*usable, "reference"])), divergence=True,
                                             branches=False, compile_reference=compile_ref)
                cases += plain_cases(shape, which=("sdpa",))
            except Exception as exc:  # noqa: BLE001
                skipped.append({"case": tag, "reason": error_text(exc)})
                log(f"{tag}: ERROR {error_text(exc)}")
                continue
            for mode in ("fwd", "fwdbwd"):
                for rec in measure_group(cases, shape, mode, TIMING, memory=True):
                    rec["part"] = "attention"
                    records.append(rec)
                    log(progress_line(rec) + (f"  {rec['gbps']:.3g} GB/s" if rec.get("gbps") else ""))
            del cases
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
            add_ratios(records)
            checkpoint("timing", {"records": records, "skipped": skipped, "partial": True})
    add_ratios(records)
    return {"records": records, "skipped": skipped}


def backend_reason(name: str, shape) -> str:
    """Why backend ``name`` cannot take inputs of ``shape`` here ("" when it can)."""
    from amad_fast.attention.validation import check_inputs
    from amad_fast.attention.dispatch import BACKENDS

    if name not in BACKENDS:
        return f"unknown backend {name!r}"
    tiny = torch.zeros(1, shape.H, 2, shape.D, device=shape.device, dtype=shape.dtype)
    freqs = torch.zeros(shape.H, shape.S, shape.D // 2, device=shape.device)
    weights, mix = torch.zeros(shape.H, shape.S, device=shape.device), torch.zeros(shape.H, device=shape.device)
    dims = check_inputs(tiny, tiny, tiny, freqs, weights, mix, None)
    backend = BACKENDS[name]
    return backend.availability() or backend.unsupported_reason(tiny, freqs, dims) or ""


# ------------------------------------------------------------------------------------------ output
def write_outputs(result: dict) -> None:
    os.makedirs(ARGS.out, exist_ok=True)
    with open(os.path.join(ARGS.out, "gpu_check.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, default=str)
    m = result["machine"]
    lines = [f"# gpu_check on {m.get('gpu_name') or m['cpu_model']} ({m['device']})", "",
             f"torch {m['torch']} (CUDA {m['torch_cuda']}), triton {m['triton']}, amad_fast {m['amad_fast']}, "
             f"extension {m['extension_build']}; {result.get('wall_s', 0):.0f} s", "",
             "- backends: " + "; ".join(m["backends"].values()), ""]
    par = result.get("parity")
    if par:
        lines += ["## Parity against float64 (tol = 2 x reference-in-dtype error + floor; floor = "
                  "amad_fast.attention.testing.fused_floor(dtype))", "",
                  f"all pass: **{par.get('pass')}**", "",
                  "Triton config: `fixed` = the one launch config (child run with AMAD_TRITON_AUTOTUNE=0), "
                  "`autotuned` = the configs autotuning picks (the ones the timings use).", "",
                  "| backend | config | dtype | shape (B,H,L,D,S) | quantity | kernel err | reference err | tol | pass |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in par.get("rows", []):
            pre = f"| {r['backend']} | {r.get('config', '')} | {r['dtype']} | {r['shape']} |"
            if "error" in r:
                lines.append(f"{pre} * | error: {r['error']} | | | False |")
            else:
                lines.append(f"{pre} {r['quantity']} | {r['err_kernel']:.2e} | "
                             f"{r['err_reference']:.2e} | {r['tol']:.2e} | {r['pass']} |")
        lines += [f"- skipped: {s['case']}: {s['reason']}" for s in par.get("skipped", [])] + [""]
    mem = result.get("memory")
    if mem:
        lines += [f"## Peak extra memory at (B,H,L,D,S) = {tuple(mem.get('shape', ()))}", "",
                  f"all pass: **{mem.get('pass')}**", "", "| dtype | label | mode | status | peak MiB |", "|---|---|---|---|---|"]
        for r in mem.get("rows", []):
            peak = f"{r['peak_bytes'] / 2**20:.1f}" if "peak_bytes" in r else r.get("error", "")
            lines.append(f"| {r['dtype']} | {r['label']} | {r['mode']} | {r['status']} | {peak} |")
        lines += [""] + [f"- {c['backend']} {c['dtype']} {c['mode']}: pass={c['pass']} "
                         f"(reference {c.get('reference_status', '')}, ratio {c.get('ratio_reference_over_kernel')}) {c.get('note', '')}"
                         for c in mem.get("checks", [])] + [""]
    tim = result.get("timing")
    if tim:
        lines += ["## Timings (median over interleaved samples; ratios within this run)", "", "```",
                  format_attention_table(tim.get("records", [])), "```"]
        lines += [f"- {c}" for c in compile_summary(tim.get("records", []))]
        lines += [f"- skipped: {s['case']}: {s['reason']}" for s in tim.get("skipped", [])] + [""]
    for part, err in result.get("errors", {}).items():
        lines.append(f"- part {part} failed: {err}")
    lines += ["", "## Method", ""] + [f"- **{k}**: {v}" for k, v in METHOD_NOTES.items()]
    with open(os.path.join(ARGS.out, "gpu_check.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def main() -> int:
    parts = [p.strip() for p in ARGS.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("parity", "memory", "timing")]
    if bad:
        sys.exit(f"--parts: expected names among parity,memory,timing, got {bad}")
    backends = [b.strip() for b in ARGS.backends.split(",") if b.strip()]
    result = RESULT
    result.update({"schema": "amad_fast.gpu_check/1", "dry_run": ARGS.dry_run, "argv": sys.argv[1:], "errors": {}})
    try:
        result["machine"] = machine_info(DEVICE)
    except Exception as exc:  # noqa: BLE001
        result["machine"] = {"device": str(DEVICE), "cpu_model": "?", "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                             "triton": "?", "amad_fast": "?", "extension_build": "?", "backends": {}, "error": str(exc)}
    log(f"gpu_check on {result['machine'].get('gpu_name') or result['machine']['cpu_model']}: "
        + "; ".join(result["machine"].get("backends", {}).values()))
    if ARGS.dry_run:
        # on CPU the fused CUDA paths cannot run: check whichever kernel backends work here, and the
        # reference against itself so every code path of the script runs at least once
        status = amad_fast.available_backends()
        backends = list(dict.fromkeys([b for b in backends if status.get(b) and status[b].available] + ["reference"]))
        log(f"dry run on CPU: checking {backends}")
    runners = {"parity": lambda: part_parity(backends), "memory": lambda: part_memory(backends),
               "timing": lambda: part_timing(backends)}
    for part in parts:
        if time_left() < 0:
            result["errors"][part] = "skipped: time limit reached"
            continue
        log(f"== {part}")
        try:
            result[part] = runners[part]()
        except Exception as exc:  # noqa: BLE001 - keep the other parts
            result["errors"][part] = error_text(exc)
            log(f"part {part} failed: {error_text(exc)}")
            traceback.print_exc()
        result["wall_s"] = time.perf_counter() - T0
        write_outputs(result)
    ok = all(result.get(p, {}).get("pass", True) for p in ("parity", "memory")) and not result["errors"]
    log(f"done: {'PASS' if ok else 'FAIL'}; wrote {os.path.join(ARGS.out, 'gpu_check.json')} and gpu_check.md")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
