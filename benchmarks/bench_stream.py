"""Live scoring: latency of AMADDetector.stream().update per row and throughput per chunk size,
beside the causal batch score of the same series (target: under 5 ms per step for the default
model on one thread). Writes stream-<machine>.json / .md under --out-dir.

    python benchmarks/bench_stream.py --out-dir benchmarks/results
"""
import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

# a source checkout that is not installed: use the tree beside this file
if importlib.util.find_spec("amad_fast") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from amad_fast import AMADDetector  # noqa: E402
from amad_fast.bench.timing import machine_info, machine_slug  # noqa: E402
from amad_fast.data import make_synthetic  # noqa: E402


def _pcts(ts):
    a = np.asarray(ts) * 1e3
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "n": len(a)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--rows", type=int, default=600, help="single-row updates timed per thread count")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out-dir", default="bench_results")
    args = ap.parse_args(argv)
    data = make_synthetic(length=4000, channels=args.channels, seed=0, train_length=4000)
    det = AMADDetector(epochs=1, progress=False, device="cpu")  # the default model; one epoch: speed only
    det.fit(data.train)
    X = data.test
    L = det.window_size
    res = {"model": {k: det.get_params()[k] for k in ("window_size", "d_model", "n_heads", "n_layers", "num_scales",
                                                      "smooth", "score")},
           "channels": args.channels, "backend": det.backend, "machine": machine_info(torch.device("cpu")),
           "load_at_start": os.getloadavg(), "per_row": {}, "chunks": {}, "causal_batch": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        st = det.stream()
        st.update(X[:L])
        ts = []
        for i in range(L, L + args.rows):
            t0 = time.perf_counter()
            st.update(X[i])
            ts.append(time.perf_counter() - t0)
        res["per_row"][threads] = _pcts(ts[20:])  # the first updates warm up
        for chunk in (10, 100):
            st = det.stream()
            st.update(X[:L])
            t0 = time.perf_counter()
            n = 0
            for i in range(L, len(X) - chunk + 1, chunk):
                n += len(st.update(X[i : i + chunk]))
            res["chunks"].setdefault(threads, {})[chunk] = {"rows_per_s": n / (time.perf_counter() - t0)}
        t0 = time.perf_counter()
        det.decision_function(X, causal=True)
        res["causal_batch"][threads] = {"rows_per_s": len(X) / (time.perf_counter() - t0)}
    res["load_at_end"] = os.getloadavg()
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, "stream-" + machine_slug(res["machine"]))
    with open(stem + ".json", "w") as fh:
        json.dump(res, fh, indent=2, default=float)
    lines = ["# Live scoring: AMADDetector.stream()", "",
             f"Machine: {res['machine'].get('cpu_model')} ({res['machine'].get('cpu_features')}, "
             f"{res['machine'].get('cpu_count')} CPUs), torch {res['machine'].get('torch')}; model {res['model']}, "
             f"{args.channels} channels, "
             f"backend {res['backend']}; load average at start {res['load_at_start'][0]:.1f}, end "
             f"{res['load_at_end'][0]:.1f}.", "",
             "| torch threads | per-row update: median / p90 / p99 (ms) | rows/s, chunks of 10 | rows/s, chunks of 100 "
             "| rows/s, causal batch (decision_function) |", "|---|---|---|---|---|"]
    for t in args.threads:
        p = res["per_row"][t]
        lines.append(f"| {t} | {p['median_ms']:.2f} / {p['p90_ms']:.2f} / {p['p99_ms']:.2f} | "
                     f"{res['chunks'][t][10]['rows_per_s']:.0f} | {res['chunks'][t][100]['rows_per_s']:.0f} | "
                     f"{res['causal_batch'][t]['rows_per_s']:.0f} |")
    with open(stem + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
