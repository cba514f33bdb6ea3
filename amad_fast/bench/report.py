"""Benchmark reports: tables, summaries, markdown and the plot."""
from __future__ import annotations

import math
from typing import List, Optional


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def format_attention_table(records: List[dict]) -> str:
    head = (f"{'dtype':>8} {'L':>5} {'D':>3} {'B':>4} {'mode':<6} {'label':<19} {'median ms':>10} {'IQR ms':>8} "
            f"{'min ms':>9} {'windows/s':>10} {'GB/s':>7} {'peak MB':>8} {'x sdpa':>7} {'ref/x':>6}")
    lines = [head, "-" * len(head)]
    for r in records:
        if r.get("part", "attention") != "attention":
            continue
        pre = f"{r['dtype']:>8} {r['L']:>5} {r['D']:>3} {r['B']:>4} {r['mode']:<6} {r['label']:<19}"
        if r["status"] != "ok":
            lines.append(f"{pre} {r['status']}: {r.get('error', '')[:60]}")
            continue
        peak = r.get("peak_bytes")
        lines.append(
            f"{pre} {r['median_s'] * 1e3:10.3f} {r['iqr_s'] * 1e3:8.3f} {r['min_s'] * 1e3:9.3f} {r['windows_per_s']:10.1f} "
            f"{r['gbps']:7.2f} "
            f"{_fmt(None if peak is None else peak / 2**20, '8.1f'):>8} {_fmt(r.get('x_sdpa'), '7.2f'):>7} "
            f"{_fmt(r.get('ref_over'), '6.2f'):>6}"
        )
    return "\n".join(lines)


def format_e2e_table(records: List[dict]) -> str:
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
        if label in ("reference", "sdpa"):
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


def compile_summary(records: List[dict]) -> List[str]:
    return [f"compile(reference) {r['dtype']} L={r['L']} D={r['D']} {r['mode']}: first call {r['compile_s']:.1f} s"
            for r in records if "compile_s" in r]


def write_markdown(path: str, result: dict) -> None:
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
    lines += ["", "## Attention (H = %d, S = %d)" % (result["config"]["heads"], result["config"]["scales"]), "",
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
