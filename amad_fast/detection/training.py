"""Unsupervised AMAD training (spec §3): losses, the Max-Min gradient routes, early stopping,
atomic resumable checkpoints and data-parallel training under ``torchrun``.

Gradients are formed by hand (``torch.autograd.grad``) and assigned to ``.grad``, because the exact
Max-Min strategy gives different parameter groups gradients of different losses from ONE forward.
For the same reason data parallelism does not use ``DistributedDataParallel``: its hooks all-reduce
whatever ``backward`` produces, but here there are three partial backwards whose results are
combined per parameter first. Instead every rank computes its combined gradients and one flat
``all_reduce`` averages them (plus the loss values, for logging) before the optimiser step, which
keeps every rank's parameters identical.

Batch composition under DDP: epoch e orders the training windows by a permutation seeded with
(seed, e); global batch b is the b-th slice of it and rank r takes the r-th of ``world`` near-equal
contiguous chunks. Per-rank means are weighted by ``world·n_r/N`` so that the averaged gradient
equals the single-process gradient of the global batch; the contrastive loss, whose negatives are
the other windows of the batch, is computed on the all-gathered global batch (see
:class:`_GatherLocalGrad`), so it too matches single-process training."""
from __future__ import annotations

import dataclasses
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from amad_fast.detection.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    _check_resumable,
    _rng_state,
    _set_rng_state,
    data_fingerprint,
    load_checkpoint,
)
from amad_fast.data.series import fill_missing_steps, missing_steps
from amad_fast.detection.model import AMAD, AMADOutput
from amad_fast.detection.progress import _Progress, _progress_enabled
from amad_fast.files import DirectoryLock, check_writable_dir, content_must_fit, write_file

MAXMIN_MODES = ("exact", "joint", "off")


@dataclass
class TrainConfig:
    """Training knobs (spec §3). ``epochs`` is a maximum: early stopping on the validation
    reconstruction loss (``patience`` epochs without improvement) may end sooner. The validation
    split (never test data) is the last ``val_fraction`` of the training series, or with
    ``val_split="blocks"`` the last ``val_fraction`` of each of many blocks (``validation_segments``).

    Defaults maxmin="exact", k=1, mu=0.1, lr=1e-3 come from the committed ablations
    (experiments/results/ablation_omi1.md on omi-1, ablation_synthetic.md on the synthetic
    benchmark): lr 1e-4 under-trains in a few epochs; on omi-1 k=1 and k=3 tie (AUROC 0.568 vs
    0.572, seed spread ~0.06) while on the synthetic benchmark k=3 hurts the recon_js score
    (AUROC 0.74 vs 0.87)."""

    epochs: int = 3
    batch_size: int = 32
    train_stride: int = 1
    lr: float = 1e-3  # spec starting value 1e-4; 1e-3 won the omi-1 ablation (experiments/results/ablation_omi1.md)
    k: float = 1.0  # spec starting value 3; see the class docstring
    mu: float = 0.1
    tau: float = 0.1
    maxmin: str = "exact"
    val_fraction: float = 0.2
    val_split: str = "tail"  # or "blocks": see validation_segments
    patience: int = 3
    seed: int = 0
    progress: bool = True
    checkpoint_dir: Optional[str] = None
    resume: bool = False
    checkpoint_every: int = 0  # also checkpoint every this many steps (0: only at epoch ends)
    max_steps_per_epoch: Optional[int] = None  # cap on steps per epoch (quick runs); None = all

    def validate(self) -> None:
        if self.maxmin not in MAXMIN_MODES:
            raise ValueError(f"maxmin: expected one of {MAXMIN_MODES}, got {self.maxmin!r}")
        for name in ("epochs", "batch_size", "train_stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a fraction in [0, 1), got {self.val_fraction}")
        if self.val_split not in VAL_SPLITS:
            raise ValueError(f"val_split: expected one of {VAL_SPLITS}, got {self.val_split!r}")
        if not (self.lr > 0 and self.tau > 0):
            raise ValueError(f"lr, tau: expected positive values, got lr={self.lr}, tau={self.tau}")
        if self.k < 0 or self.mu < 0:
            raise ValueError(f"k, mu: expected non-negative weights, got k={self.k}, mu={self.mu}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or not 0 <= self.seed < 2**63:
            raise ValueError(f"seed: expected an integer in [0, 2**63), got {self.seed!r}")
        if self.resume and not self.checkpoint_dir:
            raise ValueError("resume: expected a checkpoint_dir to resume from, got none (without one, training "
                             "would silently start from the beginning)")


@dataclass
class TrainResult:
    history: List[Dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = math.inf
    stopped_early: bool = False
    resumed_from: Optional[int] = None  # global step the run resumed at


# -- distributed helpers --------------------------------------------------------------------

def _dist():
    """(world, rank) of an initialised process group, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def init_distributed_from_env(device: Optional[str] = None) -> bool:
    """Join the process group ``torchrun`` describes in the environment (WORLD_SIZE > 1).

    nccl when the device is CUDA (each rank takes cuda:LOCAL_RANK), gloo otherwise. Returns True
    when running distributed. Does nothing when already initialised or not launched by torchrun.
    """
    if not torch.distributed.is_available() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if torch.distributed.is_initialized():
        return True
    cuda = device is not None and str(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return True


class _GatherLocalGrad(torch.autograd.Function):
    """All-gather rows of ``x`` from every rank (sizes known in advance); gradient = own slice.

    Every rank computes the same global loss from the gathered tensor, so the gradient of that
    loss with respect to this rank's rows is exactly the matching slice of the incoming gradient;
    no communication is needed in the backward. (The training loss weights this term by the world
    size so that the later gradient average leaves it intact.)
    """

    @staticmethod
    def forward(ctx, x: Tensor, sizes: Sequence[int], rank: int) -> Tensor:
        ctx.offset, ctx.n = sum(sizes[:rank]), sizes[rank]
        width = max(sizes)
        padded = x.new_zeros((width,) + tuple(x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        torch.distributed.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad[ctx.offset : ctx.offset + ctx.n], None, None


def contrastive_loss(us: List[Tensor], vs: List[Tensor], tau: float, sizes: Optional[Sequence[int]] = None) -> Tensor:
    """Symmetric InfoNCE between the two views of each window, mean over blocks (spec §3).

    us, vs: per block (B, P) normalised projections; row i of u and row i of v are the positive
    pair, all other rows of the (global) batch negatives. ``sizes`` (per-rank batch sizes) turns on
    the all-gather of the views across ranks.
    """
    world, rank = _dist()
    losses = []
    for u, v in zip(us, vs):
        if sizes is not None and world > 1:
            u = _GatherLocalGrad.apply(u, list(sizes), rank)
            v = _GatherLocalGrad.apply(v, list(sizes), rank)
        logits = u @ v.T / tau
        target = torch.arange(u.shape[0], device=u.device)
        losses.append(0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)))
    return torch.stack(losses).mean()


def compute_losses(model: AMAD, x: Tensor, tau: float, sizes: Optional[Sequence[int]] = None,
                   missing: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """One forward: L_rec, L_con, D^M (mean kl_local) and D^G (mean kl_global) for a batch x (B, L, C).
    ``missing`` (B, L) bool: missing steps (x holds fixed values there, ``fill_missing_steps``), masked
    keys of every block; L_rec, the views' time means, D^M and D^G average over observed steps only."""
    out: AMADOutput = model(x, need_branches=True, key_padding_mask=missing)
    if missing is None:
        us, vs = model.contrastive_views(out)
        return {"rec": ((x - out.recon) ** 2).mean(), "con": contrastive_loss(us, vs, tau, sizes),
                "dm": out.kl_local.mean(), "dg": out.kl_global.mean()}
    observed = ~missing
    us, vs = model.contrastive_views(out, observed)
    rows = observed[None, :, None, :].to(out.kl_local.dtype)  # (1, B, 1, L) over (N, B, H, L)
    n_rows = rows.sum() * out.kl_local.shape[0] * out.kl_local.shape[2]
    step_error = ((x - out.recon) ** 2).mean(dim=2)  # (B, L)
    return {"rec": (step_error * observed.to(step_error.dtype)).sum() / observed.sum(),
            "con": contrastive_loss(us, vs, tau, sizes),
            "dm": (out.kl_local * rows).sum() / n_rows, "dg": (out.kl_global * rows).sum() / n_rows}


def maxmin_gradients(model: AMAD, losses: Dict[str, Tensor], maxmin: str, k: float, mu: float,
                     weight: float = 1.0, con_weight: float = 1.0) -> List[Tensor]:
    """Gradients for ``list(model.parameters())`` under the chosen Max-Min mode (spec §3).

    exact: AutoMask params (freqs, weights) get ∇(L_rec + μL_con − k·D^M), W_Q/W_K rows and bias
    entries of every in_proj get ∇(L_rec + μL_con + k·D^G), everything else ∇(L_rec + μL_con).
    Three ``autograd.grad`` calls over one graph. W_V shares ``in_proj_weight`` with W_Q and W_K,
    so the +k·D^G term is added only on the Q/K rows (a row mask); D^G does not depend on W_V of
    its own layer (the anchor is detached and P^G has no v), but it does on earlier layers' W_V,
    which the mask keeps on the plain route as the spec asks.
    joint: one gradient of 2L_rec + 2μL_con − kD^M + kD^G into all parameters. off: L_rec + μL_con.

    ``weight`` scales the per-rank batch means and ``con_weight`` the (global) contrastive term;
    both are 1 in single-process training (see the module docstring for DDP).
    """
    params = list(model.parameters())
    base = weight * losses["rec"] + mu * con_weight * losses["con"]
    dm, dg = weight * losses["dm"], weight * losses["dg"]

    def grad(loss, ps, retain):
        gs = torch.autograd.grad(loss, ps, retain_graph=retain, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(ps, gs)]

    if maxmin == "off":
        return grad(base, params, False)
    if maxmin == "joint":
        return grad(2 * base - k * dm + k * dg, params, False)
    if maxmin != "exact":
        raise ValueError(f"maxmin: expected one of {MAXMIN_MODES}, got {maxmin!r}")
    routes = model.param_routes()
    grads = grad(base, params, True)
    index = {id(p): i for i, p in enumerate(params)}
    sa_params = [p for p, _ in routes.self_attention]
    for p, g in zip(routes.automask, grad(dm, routes.automask, True)):
        grads[index[id(p)]] = grads[index[id(p)]] - k * g
    for (p, mask), g in zip(routes.self_attention, grad(dg, sa_params, False)):
        m = mask.to(g.dtype).reshape((-1,) + (1,) * (g.dim() - 1))
        grads[index[id(p)]] = grads[index[id(p)]] + k * g * m
    return grads


def _assign_and_reduce(params: List[nn.Parameter], grads: List[Tensor], scalars: Tensor) -> Tensor:
    """Set ``p.grad``; under DDP average grads and ``scalars`` over ranks in one all_reduce."""
    world, _ = _dist()
    if world > 1:
        flat = torch.cat([g.reshape(-1) for g in grads] + [scalars.to(grads[0].dtype)])
        torch.distributed.all_reduce(flat)
        flat /= world
        offset = 0
        out = []
        for g in grads:
            out.append(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        grads, scalars = out, flat[offset:]
    for p, g in zip(params, grads):
        p.grad = g.to(p.dtype).clone()
    return scalars


def train_step(model: AMAD, optimizer: torch.optim.Optimizer, x: Tensor, cfg: TrainConfig,
               shard_sizes: Optional[Sequence[int]] = None, missing: Optional[Tensor] = None) -> Tensor:
    """One optimiser step on the batch ``x`` (B, L, C): the losses of one forward, the Max-Min
    gradients of ``cfg.maxmin`` (with ``cfg.k``, ``cfg.mu``, ``cfg.tau``), then ``optimizer.step()``.

    Returns the detached loss values (L_rec, L_con, D^M, D^G), averaged over ranks under DDP. This
    is the step :func:`train_model` takes; the throughput benchmarks time the same function.
    ``shard_sizes`` (the windows each rank holds of the global batch, ``x`` being this rank's) is
    needed only under an initialised process group: it weights the per-rank means and all-gathers
    the contrastive views (see the module docstring). ``missing`` (B, L): missing steps, as in
    :func:`compute_losses`.
    """
    world, rank = _dist()
    weight = world * shard_sizes[rank] / sum(shard_sizes) if shard_sizes is not None else 1.0
    losses = compute_losses(model, x, cfg.tau, shard_sizes if world > 1 else None, missing)
    grads = maxmin_gradients(model, losses, cfg.maxmin, cfg.k, cfg.mu, weight=weight, con_weight=world)
    scalars = torch.stack([weight * losses["rec"], losses["con"], weight * losses["dm"], weight * losses["dg"]]).detach()
    scalars = _assign_and_reduce(list(model.parameters()), grads, scalars)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return scalars


# -- data ------------------------------------------------------------------------------------

VAL_SPLITS = ("tail", "blocks")


def validation_segments(T: int, window: int, val_fraction: float,
                        layout: str = "tail") -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """(training segments, validation segments) of a training series of T steps, as [start, end).

    ``"tail"``: the validation split is the last ``val_fraction`` of the series. ``"blocks"``: the
    series is cut into T // (2·window / val_fraction) equal blocks and the last ``val_fraction`` of
    EACH block (about 2·window steps) is held out, so that a series made of several concatenated
    entities (the Anomaly-Transformer layout of SMAP, MSL, SMD) still trains on every entity; with
    one block it is ``"tail"``. No validation segment when a piece would be shorter than a window.
    """
    if layout not in VAL_SPLITS:
        raise ValueError(f"val_split: expected one of {VAL_SPLITS}, got {layout!r}")
    n_blocks = 1
    if layout == "blocks" and val_fraction > 0:
        n_blocks = max(1, T // max(1, int(round(2 * window / val_fraction))))
    edges = [int(round(i * T / n_blocks)) for i in range(n_blocks + 1)]
    n_val = [int(round((b - a) * val_fraction)) for a, b in zip(edges[:-1], edges[1:])]
    if min(n_val) < window:
        return [(0, T)], []
    train = [(a, b - v) for a, b, v in zip(edges[:-1], edges[1:], n_val)]
    if min(b - a for a, b in train) < window:
        raise ValueError(
            f"series: {T} steps leave fewer than window_size={window} for training after the "
            f"validation split (val_fraction={val_fraction}); lower val_fraction or give more data"
        )
    return train, [(b - v, b) for a, b, v in zip(edges[:-1], edges[1:], n_val)]


class SegmentWindows:
    """The windows of length ``window`` every ``stride`` steps inside each [start, end) segment of
    ``series`` (T, C); indexing with a batch of window numbers gathers just that batch (N, L, C).
    ``missing`` (T,) bool: windows with no observed step are left out; :meth:`missing_of` masks a batch."""

    def __init__(self, series: Tensor, segments: Sequence[Tuple[int, int]], window: int, stride: int,
                 missing: Optional[Tensor] = None) -> None:
        starts = [np.arange(a, b - window + 1, stride) for a, b in segments if b - a >= window]
        self.series = series
        self.missing = missing
        self.starts = torch.as_tensor(np.concatenate(starts) if starts else np.zeros(0, np.int64),
                                      dtype=torch.long, device=series.device)
        self.offsets = torch.arange(window, device=series.device)
        if missing is not None and len(self.starts):
            self.starts = self.starts[~missing[self.starts[:, None] + self.offsets].all(dim=1)]

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def _steps(self, idx: Any) -> Tensor:
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.starts.device)
        return self.starts[idx][:, None] + self.offsets

    def __getitem__(self, idx: Any) -> Tensor:
        return self.series[self._steps(idx)]

    def missing_of(self, idx: Any) -> Optional[Tensor]:
        """The (N, L) missing steps of the windows ``idx``; None when the series has none."""
        return None if self.missing is None else self.missing[self._steps(idx)]


def _epoch_batches(n: int, cfg: TrainConfig, epoch: int, world: int) -> List[np.ndarray]:
    """Deterministic global batches for ``epoch`` (seeded by (seed, epoch), same on every rank)."""
    order = np.random.default_rng([cfg.seed, epoch]).permutation(n)
    batches = [order[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size)]
    batches = [b for b in batches if len(b) >= max(world, 2)]  # InfoNCE needs ≥2; each rank ≥1
    if cfg.max_steps_per_epoch is not None:
        batches = batches[: cfg.max_steps_per_epoch]
    return batches


# -- checkpoints ------------------------------------------------------------------------------

def _clone_state(model: nn.Module) -> Dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- the loop ---------------------------------------------------------------------------------

@torch.inference_mode()
def _validation_loss(model: AMAD, windows: "SegmentWindows", batch_size: int) -> float:
    """Mean reconstruction error over the validation windows (sharded over ranks, then summed),
    under inference_mode: nothing of this pass is differentiated, so no autograd bookkeeping."""
    world, rank = _dist()
    was_training = model.training
    model.eval()
    idx = np.array_split(np.arange(len(windows)), world)[rank]
    total = torch.zeros(2, dtype=torch.float64, device=windows.series.device)
    for i in range(0, len(idx), batch_size):
        x = windows[idx[i : i + batch_size]]
        missing = windows.missing_of(idx[i : i + batch_size])
        out = model(x, need_branches=False, key_padding_mask=missing)
        if missing is None:
            total[0] += ((x - out.recon) ** 2).mean(dim=(1, 2)).sum().double()
        else:  # each window's mean over its observed steps
            observed = (~missing).to(x.dtype)
            step_error = ((x - out.recon) ** 2).mean(dim=2)
            total[0] += ((step_error * observed).sum(dim=1) / observed.sum(dim=1)).sum().double()
        total[1] += x.shape[0]
    if world > 1:
        torch.distributed.all_reduce(total)
    model.train(was_training)
    return float(total[0] / total[1])


def train_model(
    model: AMAD,
    series,
    cfg: TrainConfig,
    *,
    extra_state: Optional[Dict[str, Any]] = None,
    callback: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> TrainResult:
    """Train ``model`` in place on a standardised series (T, C) and return its history.
    NaN marks missing steps (any NaN channel; ``nan_policy="mask"``): set to 0, masked keys of every
    window holding them, out of the losses (:func:`compute_losses`); windows without an observed step are skipped.

    The model ends with the parameters of the best validation epoch (or the last epoch when the
    series is too short for a validation split). ``extra_state`` (e.g. the standardiser and model
    config) is stored in every checkpoint. ``callback(info)`` runs after every optimiser step.
    With ``cfg.checkpoint_dir`` a checkpoint ``last.pt`` is written atomically at every epoch end
    (and every ``checkpoint_every`` steps; :func:`amad_fast.files.write_file`: plain data, checksum)
    and the directory is locked for the run (a second run on it is refused with
    :class:`amad_fast.files.DirectoryInUseError`; released on return and on any exception).
    ``cfg.resume`` continues from the checkpoint bit-for-bit, after checking that it was written
    by a compatible package version, for the same standardised series (:func:`data_fingerprint`)
    and with the same settings; without a checkpoint yet it warns and starts from the beginning.
    Under an initialised ``torch.distributed`` process group the same code trains data-parallel.
    """
    cfg.validate()
    world, rank = _dist()
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    series_np = np.asarray(series.detach().cpu() if isinstance(series, Tensor) else series)
    series_t = torch.as_tensor(series_np, dtype=dtype, device=device)
    if series_t.dim() != 2 or series_t.shape[1] != model.n_channels:
        raise ValueError(f"series: expected (T, C={model.n_channels}), got shape {tuple(series_t.shape)}")
    L = model.window_size
    if series_t.shape[0] < L:
        raise ValueError(f"series: expected at least window_size={L} time steps, got {series_t.shape[0]}")
    lock = _lock_checkpoint_dir(cfg, world, rank, device)
    try:
        return _train(model, series_np, series_t, cfg, extra_state, callback)
    finally:
        if lock is not None:
            lock.release()


def _lock_checkpoint_dir(cfg: TrainConfig, world: int, rank: int, device: torch.device) -> Optional[DirectoryLock]:
    """Rank 0 takes ``cfg.checkpoint_dir``'s lock (a second run on it is refused, see
    :class:`amad_fast.files.DirectoryLock`); under DDP every rank learns whether it got it, so
    that all of them stop together instead of waiting for rank 0 in a collective."""
    if not cfg.checkpoint_dir:
        return None
    lock, error = None, None
    if rank == 0:
        try:
            check_writable_dir(cfg.checkpoint_dir, "checkpoint_dir")
            lock = DirectoryLock(cfg.checkpoint_dir, "checkpoint_dir").acquire()
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            error = exc
    if world > 1:
        flag = torch.tensor([0.0 if error is None else 1.0], device=device)
        torch.distributed.all_reduce(flag)
        if float(flag) > 0 and error is None:
            if lock is not None:
                lock.release()
            raise RuntimeError(f"checkpoint_dir {cfg.checkpoint_dir!r}: rank 0 could not take its lock; see rank 0's error")
    if error is not None:
        raise error
    return lock


def _train(model: AMAD, series_np: np.ndarray, series_t: Tensor, cfg: TrainConfig,
           extra_state: Optional[Dict[str, Any]], callback: Optional[Callable[[Dict[str, Any]], None]]) -> TrainResult:
    """The body of :func:`train_model`, once the inputs are checked and the checkpoint directory is ours."""
    world, rank = _dist()
    device = series_t.device
    L = model.window_size
    train_segments, val_segments = validation_segments(series_t.shape[0], L, cfg.val_fraction, cfg.val_split)
    missing_np = missing_steps(series_np)
    missing = None
    if missing_np is not None:
        missing = torch.as_tensor(missing_np, device=device)
        series_t = torch.as_tensor(fill_missing_steps(series_np, missing_np), dtype=series_t.dtype, device=device)
    train_windows = SegmentWindows(series_t, train_segments, L, cfg.train_stride, missing)
    val_windows = SegmentWindows(series_t, val_segments, L, cfg.train_stride, missing) if val_segments else None
    n_windows = len(train_windows)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    result = TrainResult()
    best_state = _clone_state(model)
    bad_epochs, start_epoch, start_step, global_step = 0, 0, 0, 0

    ckpt_path = os.path.join(cfg.checkpoint_dir, CHECKPOINT_NAME) if cfg.checkpoint_dir else None
    fingerprint = data_fingerprint(series_np) if ckpt_path else None
    if cfg.resume and ckpt_path and os.path.exists(ckpt_path):
        ck = load_checkpoint(ckpt_path)
        _check_resumable(ck, cfg, model, fingerprint, ckpt_path)
        with content_must_fit(ckpt_path, "checkpoint", "this model and trainer"):
            model.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            start_epoch, start_step, global_step = ck["epoch"], ck["step"], ck["global_step"]
            es = ck["early_stopping"]
            best_state, bad_epochs = es["best_state"], es["bad_epochs"]
            result.best_epoch, result.best_val, result.history = es["best_epoch"], es["best_val"], ck["history"]
            result.stopped_early = es.get("stopped", False)
            result.resumed_from = global_step
            _set_rng_state(ck["rng"])
    elif cfg.resume and ckpt_path and rank == 0:
        warnings.warn(f"resume: no checkpoint at {ckpt_path} yet; training from the start", RuntimeWarning, stacklevel=3)

    def checkpoint(epoch: int, step: int) -> None:
        if ckpt_path is None:
            return
        if rank == 0:
            write_file(
                ckpt_path, CHECKPOINT_FORMAT,
                {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "data": fingerprint,
                    "epoch": epoch, "step": step, "global_step": global_step, "rng": _rng_state(),
                    "early_stopping": {
                        "best_state": best_state, "best_val": result.best_val, "best_epoch": result.best_epoch,
                        "bad_epochs": bad_epochs, "stopped": result.stopped_early,
                    },
                    "history": result.history, "config": dataclasses.asdict(cfg),
                    "model_config": dict(model.config), "extra": extra_state or {},
                },
            )
        if world > 1:
            torch.distributed.barrier()

    steps_per_epoch = len(_epoch_batches(n_windows, cfg, 0, world))
    total_steps = max(steps_per_epoch * (cfg.epochs - start_epoch) - start_step, 0)
    report = _Progress(cfg, rank, total_steps)
    n_params = sum(p.numel() for p in params)
    n_val = len(val_windows) if val_windows is not None else 0
    report.plan(f"plan: {n_windows} training windows of {L} steps (one every {cfg.train_stride}; {n_val} more "
                f"held out for validation), {cfg.epochs - start_epoch} epoch{'s' if cfg.epochs - start_epoch != 1 else ''}"
                f" x {steps_per_epoch} steps of {cfg.batch_size} windows = {total_steps} steps"
                + (f" (resuming at epoch {start_epoch + 1}, step {start_step + 1})" if start_epoch or start_step else "")
                + f"; model {n_params:,} parameters ({model.config.get('n_layers', '?')} blocks, "
                f"d_model {model.config.get('d_model', '?')}), {series_t.shape[1]} channels, device {device}")
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        if result.stopped_early:
            break
        batches = _epoch_batches(n_windows, cfg, epoch, world)
        if not batches:
            raise ValueError(
                f"series: {n_windows} training windows give no batch of at least {max(world, 2)} windows; "
                "give more data or a smaller train_stride"
            )
        sums = np.zeros(4)
        t0, seen = time.perf_counter(), 0
        from tqdm.auto import tqdm

        bar = tqdm(total=len(batches), initial=start_step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not _progress_enabled(cfg, rank), leave=False, dynamic_ncols=True)
        for step in range(start_step, len(batches)):
            t_step = time.perf_counter()
            batch = batches[step]
            shards = np.array_split(batch, world)
            sizes = [len(s) for s in shards]
            shard = torch.as_tensor(shards[rank], device=device)
            x = train_windows[shard]
            scalars = train_step(model, optimizer, x, cfg, shard_sizes=sizes, missing=train_windows.missing_of(shard))
            global_step += 1
            vals = scalars.double().cpu().numpy()
            if not np.all(np.isfinite(vals)):
                raise FloatingPointError(f"training diverged at epoch {epoch}, step {step}: losses {vals.tolist()}")
            sums += vals
            seen += len(batch)
            n_done = step - start_step + 1
            bar.update(1)
            report.step(time.perf_counter() - t_step, epoch, cfg.epochs, step, len(batches), sums[0] / n_done)
            bar.set_postfix(rec=f"{sums[0] / n_done:.4g}", con=f"{sums[1] / n_done:.3g}",
                            dm=f"{sums[2] / n_done:.3g}", dg=f"{sums[3] / n_done:.3g}")
            if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and step + 1 < len(batches):
                checkpoint(epoch, step + 1)
            if callback is not None:
                callback({"epoch": epoch, "step": step, "global_step": global_step,
                          "rec": float(vals[0]), "con": float(vals[1]), "dm": float(vals[2]), "dg": float(vals[3])})
        bar.close()
        elapsed = time.perf_counter() - t0
        n_done = max(len(batches) - start_step, 1)
        means = (sums / n_done).tolist()
        record = {"epoch": epoch, "rec": means[0], "con": means[1], "dm": means[2], "dg": means[3],
                  "seconds": elapsed, "windows_per_s": seen / max(elapsed, 1e-9)}
        start_step = 0
        if val_windows is not None:
            val = _validation_loss(model, val_windows, cfg.batch_size)
            record["val_rec"] = val
            if val < result.best_val:
                result.best_val, result.best_epoch, bad_epochs = val, epoch, 0
                best_state = _clone_state(model)
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    result.stopped_early = True
        else:
            result.best_epoch = epoch
            best_state = _clone_state(model)
        result.history.append(record)
        report.epoch_end(record, cfg.epochs)
        checkpoint(epoch + 1, 0)
    model.load_state_dict(best_state)
    model.eval()
    return result
