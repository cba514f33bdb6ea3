"""The end-to-end benchmark: the AMAD model's training step and scoring pass, per attention backend.

The attention sweep (:mod:`amad_fast.bench.cases`) times the op alone; this part shows what a
backend is worth to the detector: training steps/s and scoring windows/s of
:class:`amad_fast.detection.model.AMAD` at its default size. The training step is
:func:`amad_fast.detection.training.train_step` itself (one forward with branches, the Max-Min
gradients of the default :class:`~amad_fast.detection.training.TrainConfig`, Adam), so the
benchmark times exactly what ``train_model`` runs; scoring is a no-grad forward without branches.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from amad_fast.bench.cases import benchmark_backends, record_failure
from amad_fast.bench.timing import finite_checks_off, time_interleaved


def build_e2e_model(
    backend: str, channels: int, length: int, device: torch.device, overrides: Optional[dict] = None
) -> Tuple[nn.Module, Callable[[Tensor], object], Callable[[Tensor], object]]:
    """(model, train_step(x), score(x)) for one backend: AMAD at its default size but for
    ``overrides`` (e.g. d_model, n_layers), windows of ``length`` steps of ``channels`` channels."""
    from amad_fast.detection.model import AMAD
    from amad_fast.detection.training import TrainConfig, train_step

    model = AMAD(channels, window_size=length, backend=backend, **(overrides or {})).to(device)
    cfg = TrainConfig()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def step(x: Tensor) -> Tensor:
        return train_step(model, optimizer, x, cfg)

    def score(x: Tensor):
        with torch.no_grad():
            return model(x, need_branches=False)

    return model, step, score


def run_e2e(
    device: torch.device,
    *,
    batch: int,
    length: int = 100,
    channels: int = 25,
    backends: Optional[Sequence[str]] = None,
    timing: Optional[dict] = None,
    overrides: Optional[dict] = None,
    log=print,
) -> List[dict]:
    """Training steps/s and scoring windows/s of the model at its default size, per backend."""
    if backends is None:
        backends, _ = benchmark_backends(device)
    timing = timing or {}
    records, built = [], {}
    for name in backends:
        base = {"part": "e2e", "model": "amad", "label": name, "B": batch, "L": length, "C": channels,
                "dtype": "float32"}
        try:
            torch.manual_seed(0)
            m, train_step, score = build_e2e_model(name, channels, length, device, overrides)
            x = torch.randn(batch, length, channels, device=device)
            base["params"] = sum(p.numel() for p in m.parameters())
            built[name] = (base, m, train_step, score, x)
        except Exception as exc:  # noqa: BLE001
            records.append(record_failure({**base, "mode": "*"}, exc))
            log(f"  e2e {name}: failed: {records[-1]['error']}")
    for mode in ("train", "score"):
        fns = {}
        for name, (base, m, train_step, score, x) in built.items():
            m.train(mode == "train")
            fns[name] = (lambda ts=train_step, x=x: ts(x)) if mode == "train" else (lambda sc=score, x=x: sc(x))
        with finite_checks_off():
            stats, errors = time_interleaved(fns, device, **timing)
        for name, (base, *_rest) in built.items():
            rec = {**base, "mode": mode, "status": "ok"}
            if name in errors:
                record_failure(rec, errors[name])
            else:
                t = stats[name]
                rec.update(t)
                rec["windows_per_s"] = batch / t["median_s"]
                if mode == "train":
                    rec["steps_per_s"] = 1.0 / t["median_s"]
            records.append(rec)
            log(f"  e2e {name:<10} {mode:<5} " + (f"{rec['median_s'] * 1e3:9.2f} ms" if rec["status"] == "ok" else rec["error"]))
    ref = {r["mode"]: r for r in records if r.get("label") == "reference" and r.get("status") == "ok"}
    for r in records:
        if r.get("status") == "ok" and r["mode"] in ref:
            r["ref_over"] = ref[r["mode"]]["median_s"] / r["median_s"]
    return records
