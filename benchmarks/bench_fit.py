"""How close ``AMADDetector.fit`` comes to the bare training step: windows/s of a whole fit, of its
training loop alone and of ``training.train_step`` on the same model and batch, measured side by
side in one run. Writes fit-<machine>.json / .md under --out-dir.

    python benchmarks/bench_fit.py --out-dir benchmarks/results

Each round fits a fresh detector (default model, synthetic series) and then times ``--steps`` bare
steps of a model built the same way on one batch of that series' windows, so load from other
processes falls on both alike; the figures are medians over the rounds (steps: over every timed
step). A fit's windows are the training windows its epochs went through (the epochs' histories),
so the three rates count the same work:

* ``step``: batch / median time of one ``train_step`` call (after one warm-up step);
* ``loop``: windows / time of ``training.train_model`` (steps, batching, validation loss after each
  epoch, early stopping bookkeeping);
* ``fit``: windows / time of ``AMADDetector.fit`` (the loop plus input checks, standardisation and
  the two scoring passes over the training series: position profile, then scores and threshold).

The JSON also splits each fit's time into its parts (steps inside the epochs, the rest of the
loop, what fit does outside the loop) to show where the time that is not steps goes.
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import numpy as np

# a source checkout that is not installed: use the tree beside this file
if importlib.util.find_spec("amad_fast") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from amad_fast import AMADDetector  # noqa: E402
from amad_fast.bench.timing import load_average, machine_info, machine_slug  # noqa: E402
from amad_fast.data import make_synthetic  # noqa: E402
from amad_fast.detection import detector as detector_module  # noqa: E402
from amad_fast.detection.training import SegmentWindows, train_step, validation_segments  # noqa: E402


def timed_fit(det: AMADDetector, X: np.ndarray) -> dict:
    """Fit ``det`` on X; the seconds of the whole fit and of its ``train_model`` call, and the
    training windows its epochs went through."""
    loop = {}
    train_model = detector_module.train_model

    def timed_train_model(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return train_model(*args, **kwargs)
        finally:
            loop["s"] = time.perf_counter() - t0

    detector_module.train_model = timed_train_model
    try:
        t0 = time.perf_counter()
        det.fit(X)
        fit_s = time.perf_counter() - t0
    finally:
        detector_module.train_model = train_model
    windows = sum(round(h["windows_per_s"] * h["seconds"]) for h in det.history_)
    epoch_s = sum(h["seconds"] for h in det.history_)
    return {"fit_s": fit_s, "loop_s": loop["s"], "epoch_steps_s": epoch_s, "windows": windows,
            "epochs": len(det.history_)}


def bare_steps(det: AMADDetector, X: np.ndarray, n_steps: int) -> list:
    """Seconds of ``n_steps`` calls of ``train_step`` on a model built as ``det.fit`` builds it,
    on the first batch of the standardised series' training windows (one warm-up step first)."""
    Z = det.standardizer_.transform(np.asarray(X, dtype=np.float64), name="X")
    torch.manual_seed(det.seed)
    model = det._build_model(Z.shape[1]).to("cpu")
    cfg = det._train_config()
    segments, _ = validation_segments(Z.shape[0], det.window_size, cfg.val_fraction, cfg.val_split)
    param = next(model.parameters())
    windows = SegmentWindows(torch.as_tensor(Z, dtype=param.dtype), segments, det.window_size, cfg.train_stride)
    x = windows[np.arange(min(cfg.batch_size, len(windows)))]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    train_step(model, optimizer, x, cfg)
    times = []
    for _ in range(n_steps):
        t0 = time.perf_counter()
        train_step(model, optimizer, x, cfg)
        times.append(time.perf_counter() - t0)
    return times


def summarise(rounds: list, step_times: list, batch: int) -> dict:
    """Medians over the rounds and the three rates with their ratios to the bare step."""
    med = {k: statistics.median(r[k] for r in rounds) for k in ("fit_s", "loop_s", "epoch_steps_s")}
    windows = statistics.median(r["windows"] for r in rounds)
    step_s = statistics.median(step_times)
    rates = {
        "step": batch / step_s,
        "epoch_steps": statistics.median(r["windows"] / r["epoch_steps_s"] for r in rounds),
        "loop": statistics.median(r["windows"] / r["loop_s"] for r in rounds),
        "fit": statistics.median(r["windows"] / r["fit_s"] for r in rounds),
    }
    return {
        "median_step_s": step_s,
        "step_iqr_s": (np.percentile(step_times, 75) - np.percentile(step_times, 25)).item(),
        "median_seconds": med,
        "windows_per_fit": windows,
        "windows_per_s": rates,
        "ratio_to_step": {k: v / rates["step"] for k, v in rates.items() if k != "step"},
        "fit_time_parts": {
            "epoch_steps": statistics.median(r["epoch_steps_s"] / r["fit_s"] for r in rounds),
            "loop_outside_steps": statistics.median((r["loop_s"] - r["epoch_steps_s"]) / r["fit_s"] for r in rounds),
            "fit_outside_loop": statistics.median((r["fit_s"] - r["loop_s"]) / r["fit_s"] for r in rounds),
        },
    }


def markdown(res: dict) -> str:
    s, m = res["summary"], res["machine"]
    rates, ratios, parts = s["windows_per_s"], s["ratio_to_step"], s["fit_time_parts"]
    return "\n".join([
        "# AMADDetector.fit against the bare training step",
        "",
        f"Machine: {m['cpu_model']} ({m['cpu_features']}, {m['cpu_count']} CPUs), torch {m['torch']}, "
        f"{res['threads']} torch thread(s); load average (1/5/15 min) at start {res['load_at_start']}, "
        f"at end {res['load_at_end']}.",
        f"Model: {res['model']}; series {res['rows']} rows x {res['channels']} channels, "
        f"{s['windows_per_fit']:.0f} training windows per fit; {res['rounds']} rounds of one fit and "
        f"{res['steps_per_round']} bare steps, interleaved; medians.",
        "",
        "| what | windows/s | / bare step |",
        "|---|---|---|",
        f"| bare `train_step` (batch {res['batch']}) | {rates['step']:.1f} | 1.00 |",
        f"| steps inside fit's epochs | {rates['epoch_steps']:.1f} | {ratios['epoch_steps']:.2f} |",
        f"| training loop (`train_model`) | {rates['loop']:.1f} | {ratios['loop']:.2f} |",
        f"| whole `AMADDetector.fit` | {rates['fit']:.1f} | {ratios['fit']:.2f} |",
        "",
        f"Where a fit's time goes: steps {parts['epoch_steps']:.0%}, the rest of the loop (validation, "
        f"bookkeeping) {parts['loop_outside_steps']:.0%}, outside the loop (checks, standardisation, "
        f"scoring the training series) {parts['fit_outside_loop']:.0%}.",
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2000, help="training series length (default 2000)")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2, help="the detector's default")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="bare steps timed per round")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: medians stay meaningful "
                                                           "on a loaded machine)")
    ap.add_argument("--out-dir", default="bench_results")
    ap.add_argument("--no-files", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    X = make_synthetic(length=args.rows, channels=args.channels, seed=0, train_length=args.rows).train
    make = lambda: AMADDetector(epochs=args.epochs, progress=False, device="cpu")  # noqa: E731
    res = {"machine": machine_info(torch.device("cpu")), "threads": args.threads, "rows": args.rows,
           "channels": args.channels, "rounds": args.rounds, "steps_per_round": args.steps,
           "load_at_start": load_average(), "fits": [], "step_times_s": []}
    probe = make()
    res["model"] = {k: probe.get_params()[k] for k in ("window_size", "d_model", "n_heads", "n_layers", "num_scales",
                                                       "batch_size", "train_stride", "epochs", "backend")}
    res["batch"] = probe.batch_size
    for r in range(args.rounds):
        det = make()
        res["fits"].append(timed_fit(det, X))
        res["step_times_s"] += bare_steps(det, X, args.steps)
        print(f"round {r + 1}/{args.rounds}: fit {res['fits'][-1]['fit_s']:.2f} s, load {load_average()}",
              flush=True)
    res["load_at_end"] = load_average()
    res["summary"] = summarise(res["fits"], res["step_times_s"], res["batch"])
    text = markdown(res)
    print(text)
    if not args.no_files:
        os.makedirs(args.out_dir, exist_ok=True)
        stem = os.path.join(args.out_dir, "fit-" + machine_slug(res["machine"]))
        with open(stem + ".json", "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=1)
        with open(stem + ".md", "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
