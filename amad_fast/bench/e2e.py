"""The end-to-end benchmark: a training step and a scoring pass of the AMAD model per backend."""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn

from amad_fast.bench.cases import _failure, _finite_checks_off, benchmark_backends
from amad_fast.bench.timing import time_interleaved


def e2e_model_kind() -> str:
    """"amad" when amad_fast.detection.model provides the AMAD model, else "encoder-stack"."""
    try:
        from amad_fast.detection import model  # noqa: F401

        return "amad" if hasattr(model, "AMAD") else "encoder-stack"
    except Exception:  # noqa: BLE001
        return "encoder-stack"


class _EncoderStack(nn.Module):
    """Fallback end-to-end model: embedding, N TransformerEncoderLayers with AutoMaskAttention, head."""

    def __init__(self, channels, d_model, n_heads, n_layers, d_ff, num_scales, backend):
        super().__init__()
        from amad_fast.attention.module import AutoMaskAttention

        self.embed = nn.Linear(channels, d_model)
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout=0.0, batch_first=True)
            layer.self_attn = AutoMaskAttention(d_model, n_heads, num_scales=num_scales, backend=backend)
            layer.self_attn.keep_terms = True
            self.layers.append(layer)
        self.head = nn.Linear(d_model, channels)

    def forward(self, x):
        h = self.embed(x)
        js = []
        for layer in self.layers:
            h = layer(h)
            js.append(layer.self_attn.last_terms.js)
        return self.head(h), torch.stack(js).mean()


def _e2e_build(backend: str, channels: int, device: torch.device, sizes: dict):
    """(model, train_step(x), score(x)) for one backend; uses the AMAD trainer when present."""
    kind = e2e_model_kind()
    if kind == "amad":
        from amad_fast.detection import model as amad_model

        m = amad_model.AMAD(channels, backend=backend, **sizes).to(device)
        train_step = _amad_train_step(m)

        def score(x):
            with torch.no_grad():
                return m(x, need_branches=False)

        return m, train_step, score
    m = _EncoderStack(channels, backend=backend, **sizes).to(device)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)

    def train_step(x):
        opt.zero_grad(set_to_none=True)
        recon, js = m(x)
        loss = ((recon - x) ** 2).mean() - 3.0 * js
        loss.backward()
        opt.step()

    def score(x):
        with torch.no_grad():
            return m(x)

    return m, train_step, score


def _amad_train_step(m: nn.Module):
    """One AMAD optimiser step as amad_fast.detection.training runs it (spec §3, default TrainConfig): one
    forward, the Max-Min gradient routes, Adam. Falls back to a reconstruction-only step when
    amad_fast.detection.training lacks those functions."""
    try:
        from amad_fast.detection.training import TrainConfig, compute_losses, maxmin_gradients

        cfg = TrainConfig()
    except Exception:  # noqa: BLE001
        compute_losses = None
        cfg = None
    params = list(m.parameters())
    opt = torch.optim.Adam(params, lr=1e-4 if cfg is None else cfg.lr)

    def step(x):
        if compute_losses is not None:
            losses = compute_losses(m, x, cfg.tau)
            grads = maxmin_gradients(m, losses, cfg.maxmin, cfg.k, cfg.mu)
            for p, g in zip(params, grads):
                p.grad = g
        else:
            out = m(x, need_branches=True)
            ((out[0] - x) ** 2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step.route = "amad_fast.detection.training (compute_losses + maxmin_gradients, TrainConfig defaults) + Adam" if cfg else "mse only"
    return step


def e2e_sizes(kind: str, overrides: Optional[dict] = None) -> dict:
    """Default model size (AMAD's own defaults, or the spec-sized encoder stack), with overrides."""
    sizes = {} if kind == "amad" else {"d_model": 512, "n_heads": 8, "n_layers": 3, "d_ff": 512, "num_scales": 4}
    sizes.update(overrides or {})
    if kind != "amad" and overrides and "d_model" in overrides:
        sizes["d_ff"] = overrides["d_model"]
    return sizes


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
    kind = e2e_model_kind()
    records, built = [], {}
    for name in backends:
        base = {"part": "e2e", "model": kind, "label": name, "B": batch, "L": length, "C": channels,
                "dtype": "float32"}
        try:
            torch.manual_seed(0)
            m, train_step, score = _e2e_build(name, channels, device, e2e_sizes(kind, overrides))
            x = torch.randn(batch, length, channels, device=device)
            base["params"] = sum(p.numel() for p in m.parameters())
            built[name] = (base, m, train_step, score, x)
        except Exception as exc:  # noqa: BLE001
            records.append(_failure({**base, "mode": "*"}, exc))
            log(f"  e2e {name}: failed: {records[-1]['error']}")
    for mode in ("train", "score"):
        fns = {}
        for name, (base, m, train_step, score, x) in built.items():
            m.train(mode == "train")
            fns[name] = (lambda ts=train_step, x=x: ts(x)) if mode == "train" else (lambda sc=score, x=x: sc(x))
        with _finite_checks_off():
            stats, errors = time_interleaved(fns, device, **timing)
        for name, (base, *_rest) in built.items():
            rec = {**base, "mode": mode, "status": "ok"}
            if name in errors:
                _failure(rec, errors[name])
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
