"""Training throughput (windows/s) and time to score the whole SMAP test set, per available backend.

Model: the CPU-sized AMAD of the evaluations (C = 25, L = 100, d_model 32, 4 heads, 6 layers,
4 scales; chosen in model_size.md; --d-model and --n-layers change it), batch 32.
Training = one optimiser step of the training loop (amad_fast.detection.training.train_step: one
forward, the Max-Min gradient routes with k = 3, Adam), timed over --steps steps after 2 warm-up
steps, for the exact and joint modes. Scoring = AMADDetector's scorer (batch 128, no_grad) over all
427,617 SMAP test steps, timed once with the default windows every L // 10 = 10 steps and once with
spec §4's non-overlapping windows (stride L). Weights are the random initialisation (timing does not
depend on them). Triton runs only on CUDA (on CPU only its interpreter exists), so it is listed as
skipped.

    python experiments/throughput.py [--steps 10]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import command_line, DATA, machine, table, write_results  # noqa: E402

import amad_fast  # noqa: E402
from amad_fast.data import Standardizer, load_anomaly_transformer  # noqa: E402
from amad_fast.detection.scoring import score_series  # noqa: E402
from amad_fast.detection.model import AMAD  # noqa: E402
from amad_fast.detection.training import TrainConfig, train_step  # noqa: E402

SIZE = dict(window_size=100, d_model=32, n_heads=4, n_layers=6, num_scales=4, d_ff=64)  # model_size.md's choice


def train_rate(backend: str, maxmin: str, windows: torch.Tensor, steps: int) -> float:
    """Training windows/s of the training loop's own step (amad_fast.detection.training.train_step)."""
    torch.manual_seed(0)
    m = AMAD(windows.shape[-1], backend=backend, **SIZE)
    cfg = TrainConfig(maxmin=maxmin, k=3.0, mu=0.1, tau=0.1, lr=1e-3)
    opt = torch.optim.Adam(m.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(0)

    def step():
        x = windows[torch.as_tensor(rng.choice(len(windows), 32, replace=False))]
        train_step(m, opt, x, cfg)

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * 32 / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--name", default="throughput_smap_cpu")
    ap.add_argument("--d-model", type=int, default=SIZE["d_model"])
    ap.add_argument("--n-layers", type=int, default=SIZE["n_layers"])
    args = ap.parse_args(argv)
    SIZE.update(d_model=args.d_model, d_ff=2 * args.d_model, n_layers=args.n_layers)
    ds = load_anomaly_transformer(os.path.join(DATA, "SMAP"), "SMAP")
    st = Standardizer().fit(ds.train, warn=False)
    Ztr, Zte = st.transform(ds.train), st.transform(ds.test)
    windows = torch.as_tensor(Ztr).unfold(0, 100, 100).transpose(1, 2)
    amad_fast.set_finite_checks(False)
    rows = []
    for name, status in amad_fast.available_backends().items():
        row = {"backend": name}
        if not status.available or (name == "triton" and not torch.cuda.is_available()):
            row["note"] = "skipped: " + (status.reason or "CPU only has the Triton interpreter")
            rows.append(row)
            print(row, flush=True)
            continue
        try:
            for mode in ("exact", "joint"):
                row[f"train windows/s ({mode})"] = train_rate(name, mode, windows, args.steps)
            torch.manual_seed(0)
            m = AMAD(25, backend=name, **SIZE).eval()
            for stride, label in ((SIZE["window_size"] // 10, "score SMAP test (s)"),
                                  (SIZE["window_size"], "score SMAP test, stride L (s)")):
                t0 = time.perf_counter()
                s = score_series(m, Zte, "recon_js", 50.0, 128, stride=stride)
                row[label] = time.perf_counter() - t0
                assert np.isfinite(s).all()
            row["score windows/s"] = int(np.ceil(len(Zte) / 100)) / row["score SMAP test, stride L (s)"]
        except Exception as exc:  # noqa: BLE001
            row["note"] = f"failed: {type(exc).__name__}: {exc}"[:200]
        rows.append(row)
        print(row, flush=True)
    cols = ["backend", "train windows/s (exact)", "train windows/s (joint)", "score SMAP test (s)",
            "score SMAP test, stride L (s)", "score windows/s", "note"]
    cmd = command_line(__file__, argv)
    md = (f"# Throughput on this machine (CPU), SMAP-sized model\n\nCommand: `{cmd}`\n\n"
          f"Model {SIZE}, C = 25, batch 32; scoring covers all {len(Zte)} SMAP test steps "
          f"(the default stride L // 10 runs ~10x the {int(np.ceil(len(Zte) / 100))} windows of stride L; "
          "`score windows/s` is measured at stride L). 2 cores shared with other jobs: indicative only "
          "(the load average is recorded below).\n\n" + table(rows, cols) + f"\nMachine: {machine()}\n")
    write_results(args.name, {"rows": rows, "size": SIZE, "machine": machine(), "steps": args.steps}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
