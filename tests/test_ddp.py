"""Data-parallel training: 2 CPU ranks (gloo, launched by torchrun) end with exactly the parameters
of single-process training on the same global batches, with the exact Max-Min routes."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from amad_fast.detection.model import AMAD
    from amad_fast.detection.training import TrainConfig, init_distributed_from_env, train_model

    def build():
        torch.manual_seed(0)
        return AMAD(3, window_size=16, d_model=16, n_heads=2, n_layers=2, num_scales=2).double()

    def config(maxmin):
        # batch 7 over 2 ranks: shards of 4 and 3, so the per-rank weighting is exercised
        return TrainConfig(epochs=2, batch_size=7, train_stride=5, lr=1e-3, maxmin=maxmin, progress=False, seed=3)

    def series():
        t = np.arange(400)[:, None]
        rng = np.random.default_rng(0)
        return np.sin(2 * np.pi * t / (7 + 2 * np.arange(3))) + 0.1 * rng.standard_normal((400, 3))

    if __name__ == "__main__":
        out, maxmin = sys.argv[1], sys.argv[2]
        distributed = init_distributed_from_env("cpu")
        model = build()
        result = train_model(model, series(), config(maxmin))
        rank = torch.distributed.get_rank() if distributed else 0
        torch.save({"state": model.state_dict(), "history": result.history}, f"{out}.{rank}")
        if distributed:
            torch.distributed.destroy_process_group()
    """
)


@pytest.mark.parametrize("maxmin", ["exact"])
def test_two_rank_ddp_matches_single_process(tmp_path, maxmin):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), maxmin],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path / "ddp"), maxmin],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    ref = torch.load(tmp_path / "single.0")
    for rank in (0, 1):
        got = torch.load(tmp_path / f"ddp.{rank}")
        for name, a in ref["state"].items():
            torch.testing.assert_close(got["state"][name], a, rtol=1e-9, atol=1e-10, msg=lambda m: f"rank {rank} {name}: {m}")
        for h_ref, h in zip(ref["history"], got["history"]):
            for key in ("rec", "con", "dm", "dg", "val_rec"):
                assert np.isclose(h[key], h_ref[key], rtol=1e-9), (key, h[key], h_ref[key])
