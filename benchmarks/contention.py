"""How the cpp backend's training-step-like call degrades beside other work (issue 18, item 3).

Times one forward+backward of the cpp backend (all five outputs in the loss, gradients to all six
inputs; default shape B=16, H=8, L=100, D=32, S=4, float32) and, as a control, plain SDPA's
forward+backward of the same q, k, v, first on the machine as it is ("quiet") and then with
`--busy` (default 2) busy-looping processes beside it, which this script starts and stops itself
(by their process ids). Phases alternate quiet, loaded, quiet, loaded, ... (`--rounds`), each
taking `--repeats` calls of every candidate interleaved, so slow drift from other jobs on a
shared machine falls on both; the factor is the median (and minimum) of the loaded phases over the
quiet ones. The measuring process runs with `--threads` torch threads (default 2, the training
default on a 2-core box); each configuration in `--env` (e.g. OMP_WAIT_POLICY=passive) runs in a
fresh child process so that the OpenMP runtime reads it at start.

Writes JSON and Markdown (`--out`, default benchmarks/results/cpu-contention-<machine>.json/.md)
with the CPU model, the load average around each phase and the method.

Usage: python benchmarks/contention.py [--threads 2] [--busy 2] [--rounds 3] [--repeats 15]
                                       [--env "" "OMP_WAIT_POLICY=passive"] [--isa brgemm avx512]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUSY_LOOP = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nwhile True:\n    pass\n"


def child(args):
    """Runs in a subprocess: waits for phase commands on stdin, times, prints one JSON line each."""
    import torch

    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import amad_fast
    from bench_cpp_cpu import fwd_bwd, make_inputs, sdpa_fwd_bwd

    torch.set_num_threads(args.threads)
    amad_fast.set_finite_checks(False)
    B, H, L, D, S = args.shape
    inputs = make_inputs(B, H, L, D, S)
    qkv = [x.detach().clone().requires_grad_() for x in inputs[:3]]
    grad = torch.randn(B, H, L, D)
    fns = {"cpp": lambda: fwd_bwd("cpp", inputs), "sdpa": lambda: sdpa_fwd_bwd(qkv, grad)}
    for fn in fns.values():
        for _ in range(3):
            fn()
    print(json.dumps({"ready": True, "isa": torch.ops.amad_fast.automask_cpu_isa()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            return
        samples = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
        print(json.dumps(samples), flush=True)


def start_busy(n):
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]


def stop_busy(procs):
    for p in procs:
        os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def summarise(phases):
    out = {}
    for name in phases[0]["samples"]:
        per = {}
        for kind in ("quiet", "loaded"):
            xs = [x for ph in phases if ph["kind"] == kind for x in ph["samples"][name]]
            per[kind] = {"median_ms": round(statistics.median(xs), 3), "min_ms": round(min(xs), 3), "n": len(xs)}
        per["factor_median"] = round(per["loaded"]["median_ms"] / per["quiet"]["median_ms"], 2)
        per["factor_min"] = round(per["loaded"]["min_ms"] / per["quiet"]["min_ms"], 2)
        out[name] = per
    return out


def run_config(args, env_spec, isa):
    env = dict(os.environ)
    for kv in env_spec.split():
        k, v = kv.split("=", 1)
        env[k] = v
    if isa:
        env["AMAD_FAST_CPU_ISA"] = isa
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--shape", *map(str, args.shape)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    ready = json.loads(proc.stdout.readline())
    phases = []
    try:
        for _ in range(args.rounds):
            for kind in ("quiet", "loaded"):
                busy = start_busy(args.busy) if kind == "loaded" else []
                try:
                    if busy:
                        time.sleep(0.5)  # let the busy processes get going
                    load_before = os.getloadavg()
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    samples = json.loads(proc.stdout.readline())
                finally:
                    stop_busy(busy)
                phases.append({"kind": kind, "samples": samples, "load_before": [round(x, 2) for x in load_before],
                               "load_after": [round(x, 2) for x in os.getloadavg()]})
                time.sleep(0.5)
    finally:
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
    return {"env": env_spec, "isa": ready["isa"], "summary": summarise(phases),
            "phase_loads": [(p["kind"], p["load_before"], p["load_after"]) for p in phases]}


def markdown(result):
    m = result["machine"]
    lines = [f"# cpp under contention: {m['cpu_model']}", "",
             f"CPU {m['cpu_model']} ({m['cpu_count']} logical CPUs), torch {m['torch']}, {result['threads']} torch threads, "
             f"{result['busy']} busy processes in the loaded phases, shape (B, H, L, D, S) = {tuple(result['shape'])} "
             f"float32; load average at start {result['load_start']}, at end {result['load_end']}.", "",
             result["method"], "",
             "| config | ISA | call | quiet median ms | loaded median ms | factor (median) | factor (min) |",
             "|---|---|---|---|---|---|---|"]
    for r in result["configs"]:
        for name, s in r["summary"].items():
            lines.append(f"| {r['env'] or '(as is)'} | {r['isa']} | {name} fwd+bwd | {s['quiet']['median_ms']} "
                         f"| {s['loaded']['median_ms']} | {s['factor_median']} | {s['factor_min']} |")
    lines += ["", "Target (issue 18): the cpp factor at most 3."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--busy", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--shape", type=int, nargs=5, default=[16, 8, 100, 32, 4], metavar=("B", "H", "L", "D", "S"))
    ap.add_argument("--env", nargs="+", default=[""], help="configurations: space-separated VAR=value lists")
    ap.add_argument("--isa", nargs="+", default=[""], help="AMAD_FAST_CPU_ISA values to compare ('' = default)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, ROOT)
    import torch

    from amad_fast.bench.timing import machine_info, machine_slug

    info = machine_info(torch.device("cpu"))
    load_start = [round(x, 2) for x in os.getloadavg()]
    configs = [run_config(args, env, isa) for env in args.env for isa in args.isa]
    result = {
        "machine": info,
        "threads": args.threads,
        "busy": args.busy,
        "shape": args.shape,
        "load_start": load_start,
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "method": f"{args.rounds} rounds of a quiet then a loaded phase; each phase {args.repeats} calls of each "
        "candidate, interleaved; factor = loaded / quiet of the medians (and of the minima) over all phases of a "
        "kind. 'Quiet' is the machine as it is (other users' jobs included, see the load averages per phase in "
        "the JSON).",
        "configs": configs,
    }
    out = args.out or os.path.join(ROOT, "benchmarks", "results",
                                   f"cpu-contention-{machine_slug(info).replace('cpu-', '', 1)}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(result, fh, indent=2)
    with open(out[: -len(".json")] + ".md", "w") as fh:
        fh.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
