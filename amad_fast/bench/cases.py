"""What the attention benchmark times: shapes, their inputs, one case per backend and baseline with
the bytes it must move and the FLOPs it must do (the models behind every GB/s and GFLOP/s figure),
the machine's GEMM rate they are compared with, the measurement of a group of cases at one shape,
and the sweep over lengths, head dims and dtypes. Each AutoMask backend is also timed with a causal
mask and with padded keys (:data:`MASK_KINDS`) beside its unmasked case; a backend that cannot take
a mask gets a record with dispatch's reason instead of a time.

A case that fails (an error, out of memory) becomes a record with its status and error rather than
an exception, so one unusable backend or shape never loses the rest of a sweep."""
from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from amad_fast.bench.report import progress_line
from amad_fast.bench.timing import finite_checks_off, peak_memory, synchronize, time_fn, time_interleaved

# The plain-attention baselines every sweep times beside the AutoMask backends (see plain_cases).
PLAIN_BASELINES = ("sdpa", "mha", "amad-module")
# The masked variants of every AutoMask backend's case: ``is_causal=True``, and a key_padding_mask
# that pads the last PADDED_FRACTION of each sequence (see mask_arguments).
MASK_KINDS = ("causal", "padded")
PADDED_FRACTION = 0.25


def automask_bytes(B: int, H: int, L: int, D: int, elt: int, *, divergence: bool, branches: bool, backward: bool) -> int:
    """Minimum bytes a fused AutoMask kernel moves: the GB/s figure of every AutoMask case and of
    torch.compile(reference) (formula in METHOD_NOTES['bytes'], :mod:`amad_fast.bench.report`)."""
    n, rows = B * H * L * D, B * H * L
    extra = (2 * rows if divergence else 0) + (2 * n if branches else 0)
    total = 4 * n + extra
    if backward:
        total += 4 * n + extra  # dout (+ upstream grads of kl / branches) read, dq dk dv written
    return total * elt


def plain_attention_bytes(B: int, H: int, L: int, D: int, elt: int, *, backward: bool) -> int:
    """Bytes charged to plain attention (SDPA, nn.MultiheadAttention's core): q, k, v read and out
    written (fwd); plus dout read and dq, dk, dv written (fwd+bwd)."""
    return (8 if backward else 4) * B * H * L * D * elt


# The matrix products of one attention map: forward q k^T and p v (2 each); backward dv = p^T dout,
# dp = dout v^T, dq = ds k, dk = ds^T q (4 more), so fwd+bwd is 3x the forward (no recomputation).
_MAP_PRODUCTS = {False: 2, True: 6}


def plain_attention_flops(B: int, H: int, L: int, D: int, *, backward: bool) -> int:
    """FLOPs of plain attention's matrix products (SDPA, nn.MultiheadAttention's core): one map,
    each product of (L x D) by (D x L) or (L x L) by (L x D) 2*L*L*D FLOPs per (batch, head)
    (formula in METHOD_NOTES['flops'], :mod:`amad_fast.bench.report`)."""
    return _MAP_PRODUCTS[backward] * 2 * B * H * L * L * D


def automask_flops(B: int, H: int, L: int, D: int, *, backward: bool) -> int:
    """FLOPs of AutoMask attention's matrix products: two maps (the modulated P^M and the plain P^G),
    each with plain attention's products, so twice :func:`plain_attention_flops`; the GFLOP/s of every
    AutoMask case and of torch.compile(reference)."""
    return 2 * plain_attention_flops(B, H, L, D, backward=backward)


def projection_flops(B: int, L: int, E: int, *, backward: bool) -> int:
    """FLOPs of the input (q, k, v: three E x E) and output (E x E) projections of an attention module
    on B x L tokens of width E: 2*B*L*E*E per projection forward; backward twice that (the input's
    and the weight's gradients)."""
    return (3 if backward else 1) * 4 * 2 * B * L * E * E


@dataclass
class Shape:
    """One benchmark shape: batch B, heads H, length L, head dim D, scales S, dtype and device."""

    B: int
    H: int
    L: int
    D: int
    S: int
    dtype: torch.dtype
    device: torch.device

    def as_dict(self) -> dict:
        return {"B": self.B, "H": self.H, "L": self.L, "D": self.D, "S": self.S, "dtype": str(self.dtype).replace("torch.", "")}


@dataclass
class Case:
    """One thing to time at one shape: a no-grad forward and a forward+backward step."""

    label: str
    family: str  # "automask" (a backend), "baseline"
    forward: Callable[[], object]
    step: Callable[[], object]
    bytes_fwd: int
    bytes_fwdbwd: int
    compiled: bool = False  # torch.compile'd: its first call (the compilation) is timed apart
    flops_fwd: Optional[int] = None  # None: no FLOP model, no GFLOP/s
    flops_fwdbwd: Optional[int] = None
    mask: str = "none"  # "none" or one of MASK_KINDS
    unmasked_label: Optional[str] = None  # a masked case: the label of the same backend's unmasked case
    refused: Optional[str] = None  # why dispatch refuses this case (it is then not timed)


def automask_inputs(shape: Shape, seed: int, requires_grad: bool) -> Tuple[List[Tensor], torch.Generator]:
    """Seeded q, k, v (B, H, L, D) in the shape's dtype and AutoMask parameters (float32 for half
    dtypes, as a model keeps them) on its device, and the generator (it goes on to draw the upstream
    gradients of a fwd+bwd case)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    from amad_fast.attention.reference import default_freqs

    def rnd(*size, dtype=shape.dtype):
        return torch.randn(*size, generator=g, dtype=torch.float32).to(device=shape.device, dtype=dtype)

    q, k, v = (rnd(shape.B, shape.H, shape.L, shape.D) for _ in range(3))
    pdtype = torch.float32 if shape.dtype in (torch.bfloat16, torch.float16) else shape.dtype
    freqs = default_freqs(shape.H, shape.S, shape.D // 2).to(shape.device, pdtype)
    weights = torch.full((shape.H, shape.S), 1.0 / shape.S, device=shape.device, dtype=pdtype)
    mix = (0.1 * rnd(shape.H, dtype=pdtype))
    leaves = [q, k, v, freqs, weights, mix]
    for t in leaves:
        t.requires_grad_(requires_grad)
    return leaves, g


def _grads_like(outs: Sequence[Tensor], g: torch.Generator) -> List[Tensor]:
    """Random upstream gradients, one per output, drawn from ``g``."""
    return [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]


def _make_step(fwd: Callable[..., Sequence[Tensor]], leaves: List[Tensor], g: torch.Generator, params=()):
    """A fwd+bwd callable: reset grads, forward, backward with fixed upstream grads."""
    grads: List[Tensor] = []
    targets = [t for t in list(leaves) + list(params) if t.requires_grad]

    def step():
        for t in targets:
            t.grad = None
        outs = [o for o in fwd(*leaves) if o is not None]
        if not grads:
            grads.extend(_grads_like(outs, g))
        torch.autograd.backward(outs, grads)

    return step


def _flops_by_mode(flops: Callable[[bool], int]) -> Dict[str, int]:
    """Case keyword arguments ``flops_fwd`` and ``flops_fwdbwd`` from ``flops(backward)``."""
    return {"flops_fwd": flops(False), "flops_fwdbwd": flops(True)}


def _no_grad(fn: Callable[..., object], *args) -> Callable[[], object]:
    """A no-argument callable running ``fn(*args)`` under ``torch.no_grad()`` (the forward cases)."""

    def call():
        with torch.no_grad():
            return fn(*args)

    return call


def mask_arguments(kind: str, shape: Shape) -> Dict[str, object]:
    """The masking keyword arguments of ``automask_attention`` for a masked case of ``kind`` at
    ``shape``: ``is_causal=True`` ("causal"), or a (B, L) key_padding_mask that pads the last
    ``PADDED_FRACTION`` of every sequence, at least one key ("padded")."""
    if kind == "causal":
        return {"is_causal": True}
    if kind == "padded":
        padded = max(1, int(round(PADDED_FRACTION * shape.L)))
        mask = torch.zeros(shape.B, shape.L, dtype=torch.bool)
        mask[:, shape.L - padded:] = True
        return {"key_padding_mask": mask.to(shape.device)}
    raise ValueError(f"mask: expected one of {MASK_KINDS}, got {kind!r}")


def dispatch_refusal(name: str, inputs: Sequence[Tensor], masking: Dict[str, object]) -> Optional[str]:
    """Why dispatch refuses to run backend ``name`` on ``inputs`` (q, k, v, freqs, weights, mix)
    with the masking arguments ``masking``, in its own words; None when it runs them."""
    from amad_fast.attention.dispatch import select_backend
    from amad_fast.attention.validation import check_inputs, check_masks

    q, k, v, freqs, weights, mix = inputs
    dims = check_inputs(q, k, v, freqs, weights, mix, None, 0.0)
    masks = check_masks(masking.get("key_padding_mask"), None, bool(masking.get("is_causal", False)), dims, q.device)
    try:
        select_backend(q, freqs, dims, name, 0.0, masks)
    except RuntimeError as exc:
        return str(exc)
    return None


def automask_cases(
    shape: Shape, backends: Sequence[str], *, divergence: bool, branches: bool, compile_reference: bool, seed: int = 0,
    masks: Sequence[str] = (),
) -> List[Case]:
    """The AutoMask backends and torch.compile(reference) at ``shape``; with ``masks`` (kinds among
    :data:`MASK_KINDS`), each backend's masked cases after its unmasked one, charged the unmasked
    byte and FLOP models (METHOD_NOTES['masks']). A masked case dispatch refuses carries the reason
    (``Case.refused``) and is not timed."""
    from amad_fast import automask_attention
    from amad_fast.attention.reference import automask_attention_reference

    elt = torch.empty((), dtype=shape.dtype).element_size()
    nb = dict(divergence=divergence, branches=branches)
    b_f = automask_bytes(shape.B, shape.H, shape.L, shape.D, elt, backward=False, **nb)
    b_fb = automask_bytes(shape.B, shape.H, shape.L, shape.D, elt, backward=True, **nb)
    flops = _flops_by_mode(lambda bw: automask_flops(shape.B, shape.H, shape.L, shape.D, backward=bw))
    cases = []
    for name in backends:
        for kind in ("none", *masks):
            masking = {} if kind == "none" else mask_arguments(kind, shape)

            def fwd(q, k, v, f, w, m, _name=name, _masking=masking):
                return tuple(automask_attention(
                    q, k, v, f, w, m, need_divergence=divergence, need_branches=branches, backend=_name, **_masking
                ))

            plain, g = automask_inputs(shape, seed, False)
            label = name if kind == "none" else f"{name} {kind}"
            variant = {} if kind == "none" else {"mask": kind, "unmasked_label": name}
            refused = dispatch_refusal(name, plain, masking) if kind != "none" else None
            if refused:
                cases.append(Case(label, "automask", fwd, fwd, b_f, b_fb, refused=refused, **variant, **flops))
                continue
            leaves, g2 = automask_inputs(shape, seed, True)
            cases.append(Case(label, "automask", _no_grad(fwd, *plain), _make_step(fwd, leaves, g2), b_f, b_fb,
                              **variant, **flops))
    if compile_reference:

        def ref(q, k, v, f, w, m):
            return tuple(automask_attention_reference(q, k, v, f, w, m, need_divergence=divergence, need_branches=branches))

        compiled = torch.compile(ref)
        plain, _ = automask_inputs(shape, seed, False)
        leaves, g2 = automask_inputs(shape, seed, True)
        cases.append(Case("compile(reference)", "baseline", _no_grad(compiled, *plain),
                          _make_step(compiled, leaves, g2), b_f, b_fb, compiled=True, **flops))
    return cases


def plain_cases(shape: Shape, *, which: Sequence[str] = PLAIN_BASELINES, seed: int = 0) -> List[Case]:
    """The baselines named in ``which`` at ``shape``: SDPA (plain attention), nn.MultiheadAttention,
    AutoMaskAttention (backend auto)."""
    from amad_fast.attention.module import AutoMaskAttention

    elt = torch.empty((), dtype=shape.dtype).element_size()
    b_f = plain_attention_bytes(shape.B, shape.H, shape.L, shape.D, elt, backward=False)
    b_fb = plain_attention_bytes(shape.B, shape.H, shape.L, shape.D, elt, backward=True)
    E = shape.H * shape.D
    B, H, L, D = shape.B, shape.H, shape.L, shape.D
    plain_flops = _flops_by_mode(lambda bw: plain_attention_flops(B, H, L, D, backward=bw))
    module_flops = {  # the attention core plus the four projections
        "mha": _flops_by_mode(lambda bw: plain_attention_flops(B, H, L, D, backward=bw)
                              + projection_flops(B, L, E, backward=bw)),
        "amad-module": _flops_by_mode(lambda bw: automask_flops(B, H, L, D, backward=bw)
                                      + projection_flops(B, L, E, backward=bw)),
    }
    g = torch.Generator().manual_seed(seed)
    dev, dt = shape.device, shape.dtype

    def rnd(*size, rg=False):
        return torch.randn(*size, generator=g).to(dev, dt).requires_grad_(rg)

    sdpa = nn.functional.scaled_dot_product_attention
    qkv = [rnd(shape.B, shape.H, shape.L, shape.D) for _ in range(3)]
    qkv_g = [rnd(shape.B, shape.H, shape.L, shape.D, rg=True) for _ in range(3)]
    cases = []
    if "sdpa" in which:
        cases.append(Case("sdpa", "baseline", _no_grad(sdpa, *qkv), _make_step(lambda *a: (sdpa(*a),), qkv_g, g),
                          b_f, b_fb, **plain_flops))

    modules = []
    if "mha" in which:
        modules.append(("mha", nn.MultiheadAttention(E, shape.H, batch_first=True, device=dev, dtype=dt)))
    if "amad-module" in which:
        pdt = torch.float32 if dt in (torch.bfloat16, torch.float16) else dt
        am = AutoMaskAttention(E, shape.H, num_scales=shape.S, batch_first=True, device=dev, dtype=pdt)
        modules.append(("amad-module", am))
    for label, mod in modules:
        if label == "amad-module" and mod.freqs.dtype != dt:
            # projections in the activation dtype, AutoMask parameters kept in float32
            for p in (mod.in_proj_weight, mod.in_proj_bias, mod.out_proj.weight, mod.out_proj.bias):
                p.data = p.data.to(dt)
        mod.eval()

        def fwd(x, _mod=mod):
            return (_mod(x, x, x, need_weights=False)[0],)

        x = rnd(shape.B, shape.L, E)
        xg = rnd(shape.B, shape.L, E, rg=True)
        cases.append(Case(label, "baseline", _no_grad(fwd, x), _make_step(fwd, [xg], g, params=list(mod.parameters())),
                          b_f, b_fb, **module_flops[label]))
    return cases


def error_text(exc: BaseException) -> str:
    """The first line of ``TypeName: message`` (at most 300 characters), for a record or a log."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def record_failure(rec: dict, exc: BaseException) -> dict:
    """Mark ``rec`` as failed by ``exc`` (status "oom" or "failed", and the error text) and return it.
    With AMAD_BENCH_TRACEBACK set, the traceback is printed too."""
    oom = "out of memory" in str(exc).lower() or isinstance(exc, torch.cuda.OutOfMemoryError)
    rec["status"] = "oom" if oom else "failed"
    rec["error"] = error_text(exc)
    if os.environ.get("AMAD_BENCH_TRACEBACK"):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return rec


def measure_group(cases: Sequence[Case], shape: Shape, mode: str, timing: dict, *, memory: bool = True) -> List[dict]:
    """Time every case at one shape in one mode ("fwd" or "fwdbwd"), samples interleaved.

    Never raises: a failing case becomes a record with status "failed" or "oom"; a case dispatch
    refuses (``Case.refused``) one with status "unsupported" and the reason as its error. A compiled
    case's first call (the compilation) is timed apart as ``compile_s``.
    """
    recs, fns = {}, {}
    with finite_checks_off():
        for case in cases:
            fn = case.forward if mode == "fwd" else case.step
            rec = {"label": case.label, "family": case.family, "mode": mode, **shape.as_dict(), "status": "ok",
                   "mask": case.mask}
            if case.unmasked_label is not None:
                rec["unmasked_label"] = case.unmasked_label
            recs[case.label] = rec
            if case.refused is not None:
                rec["status"], rec["error"] = "unsupported", case.refused
                continue
            if case.compiled:
                try:
                    synchronize(shape.device)
                    t0 = time.perf_counter()
                    fn()
                    synchronize(shape.device)
                    rec["compile_s"] = time.perf_counter() - t0
                except Exception as exc:  # noqa: BLE001
                    record_failure(rec, exc)
                    continue
            fns[case.label] = fn
        stats, errors = time_interleaved(fns, shape.device, **timing)
        for case in cases:
            rec = recs[case.label]
            if case.label in errors:
                record_failure(rec, errors[case.label])
            if case.label not in stats or rec["status"] != "ok":
                continue
            t = stats[case.label]
            rec.update(t)
            rec["bytes"] = case.bytes_fwd if mode == "fwd" else case.bytes_fwdbwd
            rec["gbps"] = rec["bytes"] / t["median_s"] / 1e9
            flops = case.flops_fwd if mode == "fwd" else case.flops_fwdbwd
            if flops is not None:
                rec["flops"] = flops
                rec["gflops"] = flops / t["median_s"] / 1e9
            rec["windows_per_s"] = shape.B / t["median_s"]
            if memory:
                try:
                    rec["peak_bytes"], rec["peak_method"] = peak_memory(fns[case.label], shape.device)
                except Exception as exc:  # noqa: BLE001
                    rec["peak_error"] = error_text(exc)
            if shape.device.type == "cuda":
                torch.cuda.empty_cache()
    return [recs[c.label] for c in cases]


def add_ratios(records: List[dict]) -> None:
    """Within each shape and mode: x_sdpa = time / sdpa time (unmasked sdpa for every record);
    ref_over = reference time / time, against the reference with the record's own mask; and for a
    masked record x_unmasked = time / the time of the same backend's unmasked case."""
    groups: Dict[tuple, Dict[str, dict]] = {}
    for r in records:
        if r.get("status") == "ok":
            key = (r.get("part", "attention"), r["dtype"], r["B"], r["H"], r["L"], r["D"], r["S"], r["mode"])
            groups.setdefault(key, {})[r["label"]] = r
    for by_label in groups.values():
        sdpa = by_label.get("sdpa")
        for r in by_label.values():
            ref = by_label.get("reference" if r.get("mask", "none") == "none" else f"reference {r['mask']}")
            unmasked = by_label.get(r.get("unmasked_label"))
            if sdpa:
                r["x_sdpa"] = r["median_s"] / sdpa["median_s"]
            if ref:
                r["ref_over"] = ref["median_s"] / r["median_s"]
            if unmasked:
                r["x_unmasked"] = r["median_s"] / unmasked["median_s"]


# The side of the square matrices whose product stands for the machine's GEMM rate: large enough
# for the BLAS to reach its steady rate, small enough to time in a fraction of a second.
GEMM_SIZE = {"cpu": 1024, "cuda": 4096}


def gemm_rate(device: torch.device, dtype: torch.dtype, timing: Optional[dict] = None) -> dict:
    """The machine's GEMM rate in ``dtype``, measured now: torch.matmul of two n x n matrices (n =
    :data:`GEMM_SIZE` of the device type), 2*n^3 FLOPs per call, timed as the cases are
    (:func:`~amad_fast.bench.timing.time_fn` with ``timing``). A record with the size, the time
    statistics and ``gflops``; a dtype without a matmul on the device gives a failed record."""
    n = GEMM_SIZE.get(device.type, GEMM_SIZE["cpu"])
    rec = {"dtype": str(dtype).replace("torch.", ""), "n": n, "flops": 2 * n**3, "status": "ok"}
    try:
        g = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
        rec.update(time_fn(lambda: torch.matmul(a, b), device, **(timing or {})))
    except Exception as exc:  # noqa: BLE001 - a record, like a failing case
        return record_failure(rec, exc)
    rec["gflops"] = rec["flops"] / rec["median_s"] / 1e9
    return rec


def add_gemm_fractions(records: List[dict], gemm: Sequence[dict]) -> None:
    """gemm_fraction = GFLOP/s / the machine's GEMM GFLOP/s in the record's dtype, and
    gemm_fraction_float32 = the same against the float32 GEMM (``gemm``: :func:`gemm_rate` records
    of this run), on every record with a GFLOP/s figure."""
    rates = {g["dtype"]: g["gflops"] for g in gemm if g.get("status") == "ok"}
    for r in records:
        if "gflops" not in r:
            continue
        if r["dtype"] in rates:
            r["gemm_fraction"] = r["gflops"] / rates[r["dtype"]]
        if "float32" in rates:
            r["gemm_fraction_float32"] = r["gflops"] / rates["float32"]


def benchmark_backends(device: torch.device) -> Tuple[List[str], Dict[str, str]]:
    """Usable backends to measure on ``device``, and why the others are left out."""
    from amad_fast import available_backends

    chosen, skipped = [], {}
    for name, st in available_backends().items():
        if not st.available:
            skipped[name] = st.reason
        elif name == "triton" and device.type != "cuda":
            skipped[name] = "on CPU Triton runs only in its slow interpreter; not a throughput figure"
        else:
            chosen.append(name)
    return chosen, skipped


def batch_for_length(L: int, batch100: int) -> int:
    """Keep B*L roughly constant: B = max(1, round(batch100 * 100 / L))."""
    return max(1, int(round(batch100 * 100 / L)))


def run_attention_sweep(
    device: torch.device,
    lengths: Sequence[int],
    head_dims: Sequence[int],
    dtypes: Sequence[torch.dtype],
    *,
    batch100: int,
    heads: int = 8,
    scales: int = 4,
    backends: Optional[Sequence[str]] = None,
    compile_reference: bool = True,
    divergence: bool = True,
    branches: bool = False,
    timing: Optional[dict] = None,
    memory: bool = True,
    masks: Sequence[str] = MASK_KINDS,
    log=print,
) -> List[dict]:
    """The attention sweep: every backend (unmasked and with each of ``masks``) and baseline at
    every (dtype, D, L), both modes."""
    if backends is None:
        backends, _ = benchmark_backends(device)
    timing = timing or {}
    records = []
    for dtype in dtypes:
        for D in head_dims:
            for L in lengths:
                shape = Shape(batch_for_length(L, batch100), heads, L, D, scales, dtype, device)
                if compile_reference:
                    torch._dynamo.reset()  # fresh compile per shape, not the recompile limit
                try:
                    cases = automask_cases(shape, backends, divergence=divergence, branches=branches,
                                           compile_reference=compile_reference, masks=masks)
                    cases += plain_cases(shape)
                except Exception as exc:  # noqa: BLE001
                    records.append({"part": "attention", "label": "*", "mode": "*", **shape.as_dict(),
                                    "status": "failed", "error": error_text(exc)})
                    continue
                for mode in ("fwd", "fwdbwd"):
                    for rec in measure_group(cases, shape, mode, timing, memory=memory):
                        rec["part"] = "attention"
                        records.append(rec)
                        log(progress_line(rec))
                del cases
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    add_ratios(records)
    return records
