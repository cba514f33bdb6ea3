"""What the benchmarks report and how: the method notes every result carries, the progress line and
tables printed while and after measuring, the summary of ratios, the markdown report and the plot.

Everything here reads result records (plain dicts) and measures nothing, so ``amad-fast bench``
and ``benchmarks/gpu_check.py`` format their results the same way."""
from __future__ import annotations

import math
from typing import List, Optional

# The method of every figure, written into each JSON result and markdown report.
METHOD_NOTES = {
    "timing": (
        "time.perf_counter around a sample of n_inner back-to-back calls (torch.cuda.synchronize before "
        "and after each sample on GPU), after warm-up calls (the last one's time chooses n_inner so one "
        "sample lasts at least min_sample_s); samples of all cases of one shape are taken round-robin "
        "so that load from other processes hits them alike; median and interquartile range (q75 - q25) over the samples, per call. "
        "Forward is timed under torch.no_grad() (inference/scoring); fwd+bwd runs the forward with all "
        "inputs requiring grad, then one backward with fixed random upstream gradients into every "
        "output that was computed (grads reset to None before each call). The finite-value scan of "
        "the inputs (amad_fast.set_finite_checks) is off while timing."
    ),
    "windows_per_s": "B / median time of one call.",
    "bytes": (
        "Minimum bytes a fused kernel must move, with N = B*H*L*D and e = element size: AutoMask "
        "forward reads q, k, v once and writes out: 4*N*e, plus 2*B*H*L*e for kl_local and kl_global "
        "(need_divergence) and 2*N*e for out_local and out_global (need_branches). fwd+bwd adds the "
        "backward's minimum: read dout (N*e) and the upstream grads of the other outputs, write dq, dk, "
        "dv (3*N*e); the backward's re-read of q, k, v (and any saved statistics) is not counted, so "
        "the GB/s of fwd+bwd is a lower bound of the traffic. The parameters (freqs, weights, mix) are "
        "negligible and not counted. SDPA and nn.MultiheadAttention are charged the same q, k, v, out "
        "(and dout, dq, dk, dv) bytes of their attention core: their GB/s is an effective figure "
        "proportional to 1/time, comparable across rows of one shape. achieved GB/s = bytes / time."
    ),
    "flops": (
        "FLOPs of the matrix products only, with F = 2*B*H*L*L*D (one product of an L x D by a D x L "
        "matrix, or of an L x L by an L x D one, per batch and head): plain attention (sdpa, and the core "
        "of mha) forward 2F (q k^T, p v); fwd+bwd 6F (plus dv = p^T dout, dp = dout v^T, dq = ds k, "
        "dk = ds^T q; no recomputation counted). AutoMask attention (its backends, compile(reference)) "
        "has two maps (modulated P^M and plain P^G), each with those products: forward 4F, fwd+bwd 12F. "
        "mha and amad-module add their input and output projections (four E x E, E = H*D): "
        "8*B*L*E*E forward, three times that fwd+bwd. Softmax, exponentials, the divergence terms and "
        "the rotation are not counted, so the figure understates the work, AutoMask's more than "
        "plain attention's. GFLOP/s = FLOPs / median time."
    ),
    "gemm": (
        "The machine's GEMM rate, measured in the same run just before the attention sweep and timed "
        "the same way: torch.matmul of two n x n matrices (n = 1024 on CPU, 4096 on GPU; 2*n^3 FLOPs) "
        "in float32 and in each swept dtype. gemm_fraction = a case's GFLOP/s / the GEMM GFLOP/s in the "
        "case's dtype (the table's %GEMM column); gemm_fraction_float32 = the same against float32's "
        "GEMM. The load on a shared machine can change between the GEMM's and a case's samples."
    ),
    "peak_memory": (
        "Extra memory one call allocates beyond what existed before it (inputs, parameters and "
        "upstream grads are allocated beforehand and not counted). GPU: torch.cuda.max_memory_allocated "
        "after reset_peak_memory_stats, minus memory_allocated before the call. CPU: one call under "
        "torch.profiler with profile_memory=True; the allocator's alloc/free events are summed in time "
        "order and the maximum of the running sum is the peak. Limits on CPU: it sees only allocations "
        "through torch's CPU allocator (not a backend's own malloc/stack or a library's scratch "
        "buffers such as oneDNN's), and profiling perturbs nothing but time."
    ),
    "baselines": (
        "reference: the plain-PyTorch source of truth (materialises both L x L maps). "
        "compile(reference): torch.compile of the reference with default options, compiled afresh for "
        "each shape (torch._dynamo.reset()); compile_s is the first call's time, apart from the timings "
        "(inductor's on-disk cache can shorten it on a repeat run). "
        "sdpa: torch.nn.functional.scaled_dot_product_attention of the same q, k, v (plain attention, "
        "one map, no divergence). mha: nn.MultiheadAttention(E=H*D, H, batch_first=True) on x (B, L, E) "
        "with need_weights=False; it includes the input projection (3 E x E) and output projection, "
        "and in no-grad eval it may take torch's fused native fast path. amad-module: AutoMaskAttention "
        "(same projections as mha, backend auto: the first usable of triton (GPU only), cpp, reference) for an "
        "apples-to-apples comparison with mha."
    ),
    "batch": (
        "B is chosen per L to keep B*L (so the elements of q, k, v) roughly constant: "
        "B = max(1, round(B0 * 100 / L)), B0 the batch at L = 100; attention work grows as B*L^2, i.e. "
        "linearly in L along the sweep."
    ),
    "ratios": (
        "x_sdpa = time / sdpa time (unmasked sdpa); ref_over = reference time / time (the reference with the "
        "same mask); x_unmasked = a masked case's time / its backend's unmasked time; all within one run and shape."
    ),
    "masks": (
        "Every AutoMask backend is timed unmasked and, beside it in the same interleaved rounds, with "
        "is_causal=True (label 'BACKEND causal') and with a key_padding_mask that pads the last quarter of "
        "every sequence (at least one key; label 'BACKEND padded'). A backend whose declaration does not "
        "take the mask is listed with status 'unsupported' and dispatch's reason, not timed. Masked cases "
        "are charged the unmasked byte and FLOP models, so their GB/s and GFLOP/s are effective figures "
        "(proportional to 1/time): a kernel that skips masked tiles shows as a higher figure and an "
        "x_unmasked below 1 (causal does about half the products)."
    ),
}


def progress_line(rec: dict) -> str:
    """One measured record as the log line printed while the sweep runs (time or failure)."""
    head = f"  {rec['dtype']:>8} L={rec['L']:<5} D={rec['D']:<3} B={rec['B']:<4} {rec['mode']:<6} {rec['label']:<20}"
    if rec["status"] != "ok":
        return f"{head} {rec['status']}: {rec.get('error', '')}"
    extra = f"  (compile {rec['compile_s']:.1f} s)" if "compile_s" in rec else ""
    return f"{head} {rec['median_s'] * 1e3:10.3f} ms{extra}"


def _fmt(x, spec: str, none: str = "-") -> str:
    """``x`` formatted with ``spec``, or ``none`` for a missing figure."""
    return none if x is None else format(x, spec)


def format_gemm_line(gemm: List[dict]) -> str:
    """The GEMM rates of the run, one line: ``GEMM (n x n matmul): float32 123.4 GFLOP/s, ...``."""
    parts = [f"{g['dtype']} {g['gflops']:.1f} GFLOP/s" if g.get("status") == "ok"
             else f"{g['dtype']} {g.get('status')}: {g.get('error', '')[:60]}" for g in gemm]
    size = gemm[0]["n"] if gemm else "?"
    return f"GEMM ({size} x {size} matmul, this run): " + (", ".join(parts) if parts else "not measured")


def format_attention_table(records: List[dict]) -> str:
    """The attention records as a fixed-width table, one row per label, shape and mode; %GEMM is the
    GFLOP/s as a percentage of the run's GEMM rate in the record's dtype."""
    head = (f"{'dtype':>8} {'L':>5} {'D':>3} {'B':>4} {'mode':<6} {'label':<19} {'median ms':>10} {'IQR ms':>8} "
            f"{'min ms':>9} {'windows/s':>10} {'GB/s':>7} {'GFLOP/s':>8} {'%GEMM':>6} {'peak MB':>8} {'x sdpa':>7} "
            f"{'ref/x':>6} {'x unmask':>8}")
    lines = [head, "-" * len(head)]
    for r in records:
        if r.get("part", "attention") != "attention":
            continue
        pre = f"{r['dtype']:>8} {r['L']:>5} {r['D']:>3} {r['B']:>4} {r['mode']:<6} {r['label']:<19}"
        if r["status"] != "ok":
            lines.append(f"{pre} {r['status']}: {r.get('error', '')[:100]}")
            continue
        peak = r.get("peak_bytes")
        lines.append(
            f"{pre} {r['median_s'] * 1e3:10.3f} {r['iqr_s'] * 1e3:8.3f} {r['min_s'] * 1e3:9.3f} {r['windows_per_s']:10.1f} "
            f"{r['gbps']:7.2f} {_fmt(r.get('gflops'), '8.2f'):>8} "
            f"{_fmt(None if 'gemm_fraction' not in r else 100 * r['gemm_fraction'], '6.1f'):>6} "
            f"{_fmt(None if peak is None else peak / 2**20, '8.1f'):>8} {_fmt(r.get('x_sdpa'), '7.2f'):>7} "
            f"{_fmt(r.get('ref_over'), '6.2f'):>6} {_fmt(r.get('x_unmasked'), '8.2f'):>8}"
        )
    return "\n".join(lines)


def format_e2e_table(records: List[dict]) -> str:
    """The end-to-end records as a fixed-width table, one row per backend and mode."""
    head = f"{'model':<14} {'label':<10} {'mode':<6} {'B':>4} {'median ms':>10} {'IQR ms':>8} {'steps/s':>8} {'windows/s':>10} {'ref/x':>6}"
    lines = [head, "-" * len(head)]
    for r in records:
        pre = f"{r['model']:<14} {r['label']:<10} {r['mode']:<6} {r['B']:>4}"
        if r["status"] != "ok":
            lines.append(f"{pre} {r['status']}: {r.get('error', '')[:60]}")
            continue
        lines.append(f"{pre} {r['median_s'] * 1e3:10.2f} {r['iqr_s'] * 1e3:8.2f} {_fmt(r.get('steps_per_s'), '8.2f'):>8} "
                     f"{r['windows_per_s']:10.1f} {_fmt(r.get('ref_over'), '6.2f'):>6}")
    return "\n".join(lines)


def _geomean(xs: List[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def summarize(records: List[dict]) -> List[str]:
    """Per measured label and mode: geometric means over the sweep's shapes of reference time / time
    and time / sdpa time, and the reference's peak memory over the label's at the largest L."""
    ok = [r for r in records if r.get("part", "attention") == "attention" and r.get("status") == "ok"]
    lines = []
    for label in dict.fromkeys(r["label"] for r in ok):
        if label in ("sdpa", "reference") or label.startswith("reference "):  # the reference's own masked cases
            continue
        for mode in ("fwd", "fwdbwd"):
            rows = [r for r in ok if r["label"] == label and r["mode"] == mode]
            ref_over = [r["ref_over"] for r in rows if "ref_over" in r]
            x_sdpa = [r["x_sdpa"] for r in rows if "x_sdpa" in r]
            if not rows or not ref_over:
                continue
            text = (f"{label:<19} {mode:<6} over {len(rows)} shapes: {_geomean(ref_over):5.2f}x the reference's speed "
                    f"(range {min(ref_over):.2f}-{max(ref_over):.2f})")
            if x_sdpa:
                text += f", {_geomean(x_sdpa):5.2f}x SDPA's time"
            big = max(r["L"] for r in rows)
            mems = [(r, next((x for x in ok if x["label"] == "reference" and x["mode"] == mode
                               and (x["dtype"], x["L"], x["D"], x["B"]) == (r["dtype"], r["L"], r["D"], r["B"])), None))
                    for r in rows if r["L"] == big]
            ratios = [m["peak_bytes"] / r["peak_bytes"] for r, m in mems if m and r.get("peak_bytes") and m.get("peak_bytes")]
            if ratios:
                text += f"; at L={big} the reference needs {_geomean(ratios):.1f}x its peak memory"
            lines.append(text)
    return lines


def mask_summary(records: List[dict]) -> List[str]:
    """Per masked label and mode, the masked time over the unmasked time of its backend at each L
    (x_unmasked; geometric mean over the other shape dimensions), and one line per masked label
    dispatch refused, with its reason."""
    att = [r for r in records if r.get("part", "attention") == "attention" and r.get("mask", "none") != "none"]
    lines = []
    for label in dict.fromkeys(r["label"] for r in att):
        rows = [r for r in att if r["label"] == label]
        for mode in ("fwd", "fwdbwd"):
            by_length: dict = {}
            for r in rows:
                if r["mode"] == mode and "x_unmasked" in r:
                    by_length.setdefault(r["L"], []).append(r["x_unmasked"])
            if by_length:
                lines.append(f"{label:<19} {mode:<6} time / unmasked time: " + ", ".join(
                    f"L={L} {_geomean(xs):.2f}" for L, xs in sorted(by_length.items())))
        refused = [r for r in rows if r["status"] == "unsupported"]
        if refused:
            lines.append(f"{label:<19} not measured: {refused[0].get('error', '')}")
    return lines


def compile_summary(records: List[dict]) -> List[str]:
    """One line per compiled case: how long its first call (the compilation) took."""
    return [f"compile(reference) {r['dtype']} L={r['L']} D={r['D']} {r['mode']}: first call {r['compile_s']:.1f} s"
            for r in records if "compile_s" in r]


def write_markdown(path: str, result: dict) -> None:
    """The markdown report of one ``amad-fast bench`` result: machine, summary, tables, method."""
    m = result["machine"]
    hw = m.get("gpu_name") or m["cpu_model"]
    lines = [
        f"# amad_fast benchmarks: {hw} ({m['device']})",
        "",
        f"Created {result['created']} with `{result['command']}`.",
        "",
        f"- machine: {hw} ({m.get('cpu_features', '')}); {m['cpu_count']} CPUs, torch threads {m['torch_threads']}; "
        f"{m['platform']}",
        f"- load average (1/5/15 min) at start {m.get('load_average_at_start')}, at end "
        f"{m.get('load_average_at_end')}: other work on the machine inflates and spreads CPU timings",
        f"- versions: python {m['python']}, torch {m['torch']}, triton {m['triton']}, amad_fast {m['amad_fast']}, "
        f"extension {m['extension_build']}",
        "- backends: " + "; ".join(m["backends"].values()),
        "- measured: " + ", ".join(result["config"]["backends"]) + " + baselines "
        + ", ".join(result["config"]["baselines"]),
    ]
    for name, why in result["config"].get("skipped_backends", {}).items():
        lines.append(f"- not measured: {name} ({why})")
    summary = summarize(result["attention"])
    if summary:
        lines += ["", "## Summary (geometric means over the sweep; ratios within this run)", "", "```"] + summary + ["```"]
    masked = mask_summary(result["attention"])
    if masked:
        lines += ["", "## Masks (masked time over the backend's unmasked time, this run)", "", "```"] + masked + ["```"]
    lines += ["", "## Attention (H = %d, S = %d)" % (result["config"]["heads"], result["config"]["scales"]), "",
              format_gemm_line(result.get("gemm", [])), "",
              "```", format_attention_table(result["attention"]), "```", ""]
    comp = compile_summary(result["attention"])
    if comp:
        lines += ["Compile time of torch.compile(reference) (first call, excluded from the timings):", ""]
        lines += [f"- {c}" for c in comp] + [""]
    if result.get("e2e"):
        lines += ["## End to end", "", result.get("e2e_note", ""), "", "```", format_e2e_table(result["e2e"]), "```", ""]
    lines += ["## Method", ""] + [f"- **{k}**: {v}" for k, v in result["notes"].items()] + [""]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


def plot(path: str, records: List[dict]) -> Optional[str]:
    """Time vs L per label, log-log, one panel per (dtype, D, mode); returns an error or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        return f"matplotlib unavailable: {exc}"
    ok = [r for r in records if r.get("part", "attention") == "attention" and r["status"] == "ok"]
    panels = sorted({(r["dtype"], r["D"], r["mode"]) for r in ok}, key=lambda p: (p[0], p[1], p[2] != "fwd"))
    if not panels:
        return "nothing to plot"
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    labels = list(dict.fromkeys(r["label"] for r in ok))
    for ax, (dt, D, mode) in zip(axes.flat, panels):
        for label in labels:
            pts = sorted((r["L"], r["median_s"] * 1e3, r["q25_s"] * 1e3, r["q75_s"] * 1e3) for r in ok
                         if (r["dtype"], r["D"], r["mode"], r["label"]) == (dt, D, mode, label))
            if pts:
                med = [p[1] for p in pts]
                spread = [[m - p[2] for m, p in zip(med, pts)], [p[3] - m for m, p in zip(med, pts)]]
                ax.errorbar([p[0] for p in pts], med, yerr=spread, marker="o", capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("L (B shrinks as L grows: B*L ~ const)")
        ax.set_ylabel("median ms per call (bars: IQR)")
        ax.set_title(f"{mode}, D={D}, {dt}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
