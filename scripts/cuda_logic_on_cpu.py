"""Run the CUDA kernels of csrc/cuda/automask_kernels.cu on the CPU and compare them with the
reference: a check of their logic (indexing, tiling, reductions, barriers) and of their numerics at
large scores, for machines without a GPU. Not a check of anything GPU-specific (memory model,
fast-math, the GPU's libm, limits).

How: the .cu is compiled by g++ against a stub cuda_runtime.h; each thread block runs as
kThreads std::threads meeting at a pthread barrier for every __syncthreads(); the launchers
(<<<...>>> syntax) are cut and replaced by a small harness called through ctypes. The binding's
own steps (modulation tables in the compute dtype, Σ over the batch of dc/ds, dfreqs/dweights,
dmix) are mirrored in torch, in the compute dtype as automask_cuda.cpp does them.

Checks (inputs, cotangents and the parity rule from amad_fast.attention.testing):
  1. logic: float64, the kernels as built (kThreads = 128), several shapes (several key tiles,
     several columns per thread, underflowing probabilities): the rule against the float64
     reference itself (FLOAT64_FLOOR: ≤ 1e-9 relative).
  2. masks (key_padding_mask, is_causal, attn_mask), float64, kThreads = 128 and 4 (several key
     tiles, so causal tile skipping and padded tiles are exercised): padding of random lengths,
     random boolean padding, causal, both, a bool (L, L) attn_mask, a float (B·H, L, L) one with
     −inf entries, one of large finite entries (±30), attn_mask with padding and causal, a fully
     padded batch and rows with no allowed key, against the reference's masked result under the
     same rule (FLOAT64_FLOOR); everything finite, rows with no allowed key exactly 0 (outputs,
     kl, dq) and the dk, dv of keys no query may attend exactly 0.
  3. large logits, kThreads = 4 (several key tiles and columns per thread at small
     shapes; a faster emulation), at
     every score scale of testing.SCORE_SCALES: float32 under the parity rule over a sample of
     seeds against the float64 reference; float64 under the same rule against the long-double
     evaluation; kl ≥ 0 and everything finite in every draw. The float32 check is repeated
     under padding + causal masks at the largest score scale against the masked reference, with
     and without a large (±30, −inf) attn_mask.

Usage: python scripts/cuda_logic_on_cpu.py [--seeds N]   (exit 1 when any check fails)
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import math
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from amad_fast.attention.reference import (  # noqa: E402
    automask_attention_reference, blocked_keys, modulation_tables,
)
from amad_fast.attention.testing import (  # noqa: E402
    EXTENDED, FLOAT64_FLOOR, PARITY_SEEDS, SCORE_SCALES, cotangents, eps_floor, make_inputs, parity_stats, run,
    run_extended,
)
from amad_fast.attention.validation import AttentionMasks  # noqa: E402

STUB = r"""
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <pthread.h>
typedef int cudaError_t;
typedef void* cudaStream_t;
constexpr int cudaSuccess = 0, cudaErrorInvalidValue = 1;
struct dim3 { unsigned x = 0, y = 0, z = 0; };
inline thread_local dim3 threadIdx, blockIdx, gridDim;
inline thread_local unsigned char* emu_smem;
inline thread_local pthread_barrier_t* emu_bar;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __syncthreads() pthread_barrier_wait(emu_bar)
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
"""

HARNESS = r"""
#include "kernels_emu.cpp"
#include <thread>
#include <vector>
using namespace amad_fast::cuda;
// One block after the other, on one set of kThreads threads that meet at a barrier between blocks.
// Shared memory is not cleared between blocks (on a GPU its contents are undefined at block start).
template <typename F> void launch(int64_t grid, size_t shm, F call) {
  std::vector<unsigned char> shared(shm + 64, 0xA5);
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, nullptr, kThreads);
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t)
    th.emplace_back([&, t] {
      threadIdx.x = t; gridDim.x = grid; emu_smem = shared.data(); emu_bar = &bar;
      for (int64_t b = 0; b < grid; ++b) {
        blockIdx.x = b;
        call();
        pthread_barrier_wait(&bar);
      }
    });
  for (auto& x : th) x.join();
  pthread_barrier_destroy(&bar);
}
// shared-memory sizes as in the launchers of automask_kernels.cu
template <typename T>
void fwd(const T* q, const T* k, const T* v, const T* cos, const T* sin, const T* lam, T* out, T* ol, T* og, T* kll,
         T* klg, double* lsel, double* lseg, const uint8_t* kpm, bool causal, const T* bias, int64_t bias_stride,
         int64_t B, int64_t H, int64_t L, int64_t D, T scale) {
  launch(B * H * L, (2 * D + 4 * kThreads) * sizeof(T), [&] {
    forward_kernel<T>(q, k, v, cos, sin, lam, out, ol, og, kll, klg, lsel, lseg, kpm, causal, bias, bias_stride, H, L,
                      (int)D, scale); });
}
template <typename T>
void bwd(const T* g_out, const T* g_ol, const T* g_og, const T* g_kl, const T* g_kg, const T* q, const T* k,
         const T* v, const T* cos, const T* sin, const T* lam, const double* lsel, const double* lseg, T* dq, T* dk,
         T* dv, T* dc, T* ds, T* stats, const uint8_t* kpm, bool causal, const T* bias, int64_t bias_stride, int64_t B,
         int64_t H, int64_t L, int64_t D, T scale) {
  launch(B * H * L, (5 * D + 3 * kThreads) * sizeof(T), [&] {
    backward_rows_kernel<T>(g_out, g_ol, g_og, g_kl, g_kg, q, k, v, cos, sin, lam, lsel, lseg, dq, dc, ds, stats,
                            kpm, causal, bias, bias_stride, H, L, (int)D, scale); });
  launch(B * H * L, (4 * D + 4 * kThreads) * sizeof(T), [&] {
    backward_cols_kernel<T>(g_out, g_ol, g_og, g_kl, g_kg, q, k, v, cos, sin, lam, lsel, lseg, stats, dk, dv, dc, ds,
                            kpm, causal, bias, bias_stride, H, L, (int)D, scale); });
}
#define EMU(T, S)                                                                                                  \
  extern "C" void emu_forward_##S(const T* q, const T* k, const T* v, const T* cos, const T* sin, const T* lam,    \
      T* out, T* ol, T* og, T* kll, T* klg, double* lsel, double* lseg, const uint8_t* kpm, int causal,             \
      const T* bias, int64_t bias_stride, int64_t B, int64_t H, int64_t L, int64_t D, double scale) {              \
    fwd<T>(q, k, v, cos, sin, lam, out, ol, og, kll, klg, lsel, lseg, kpm, causal != 0, bias, bias_stride, B, H, L, \
           D, (T)scale); }                                                                                         \
  extern "C" void emu_backward_##S(const T* g_out, const T* g_ol, const T* g_og, const T* g_kl, const T* g_kg,     \
      const T* q, const T* k, const T* v, const T* cos, const T* sin, const T* lam, const double* lsel,             \
      const double* lseg, T* dq, T* dk, T* dv, T* dc, T* ds, T* stats, const uint8_t* kpm, int causal,              \
      const T* bias, int64_t bias_stride, int64_t B, int64_t H, int64_t L, int64_t D, double scale) {              \
    bwd<T>(g_out, g_ol, g_og, g_kl, g_kg, q, k, v, cos, sin, lam, lsel, lseg, dq, dk, dv, dc, ds, stats, kpm,      \
           causal != 0, bias, bias_stride, B, H, L, D, (T)scale); }
EMU(double, f64)
EMU(float, f32)
"""


def build(tmp: str, threads: int | None = None) -> ctypes.CDLL:
    """The kernels as a shared library; threads replaces kThreads (a power of two) when given."""
    src = open(os.path.join(ROOT, "csrc", "cuda", "automask_kernels.cu")).read()
    header = open(os.path.join(ROOT, "csrc", "cuda", "automask_cuda.h")).read()
    if threads is not None:
        assert threads & (threads - 1) == 0 and "constexpr int kThreads = 128;" in header
        header = header.replace("constexpr int kThreads = 128;", f"constexpr int kThreads = {threads};")
    src = src.replace("extern __shared__ __align__(16) unsigned char smem[];", "unsigned char* smem = emu_smem;")
    start, end = src.index("}  // namespace\n"), src.index("}  // namespace cuda")
    src = src[:start] + "}  // namespace\n" + src[end:]  # drop the <<<>>> launchers
    os.makedirs(os.path.join(tmp, "stub"))
    for name, text in (("stub/cuda_runtime.h", STUB), ("automask_cuda.h", header), ("kernels_emu.cpp", src),
                       ("harness.cpp", HARNESS)):
        with open(os.path.join(tmp, name), "w") as fh:
            fh.write(text)
    lib = os.path.join(tmp, "emu.so")
    subprocess.run(["g++", "-O1", "-std=c++17", "-shared", "-fPIC", "-I" + os.path.join(tmp, "stub"),
                    os.path.join(tmp, "harness.cpp"), "-o", lib, "-lpthread"], check=True)
    return ctypes.CDLL(lib)


def run_emulated(lib, inputs, dtype=torch.float64, seed=1, need_kl_grad=True, key_padding_mask=None,
                 is_causal=False, attn_mask=None):
    """testing.run for the CUDA kernels: inputs (float64, from testing.make_inputs) cast to the compute
    dtype (float32 or float64), the same cotangents, {name: tensor} of the five outputs and six
    gradients, the forward's saved float64 log-sum-exps lse_local, lse_global (B, H, L) and the
    backward's per-row scratch backward_stats (4, B, H, L), both checked finite. Inputs
    and parameters are both taken in the compute dtype, as the binding does.
    key_padding_mask: (B, L) bool (True = masked) or None, passed to the kernels as uint8; attn_mask:
    (L, L) or (B·H, L, L), bool or float, or None, passed as AttentionMasks.attn_bias in the compute
    dtype with its batch-head stride (0 for one (L, L) bias), as the binding is to pass it."""
    q, k, v, f, w, m = (x.detach().to(dtype).contiguous() for x in inputs)
    B, H, L, D = q.shape
    suffix = {torch.float64: "f64", torch.float32: "f32"}[dtype]
    fwd, bwd = getattr(lib, "emu_forward_" + suffix), getattr(lib, "emu_backward_" + suffix)
    scale = 1 / math.sqrt(D)
    c, s = (t.contiguous() for t in modulation_tables(f, w, L))
    lam = torch.sigmoid(m).contiguous()

    def new(*shape, dt=dtype):
        return torch.empty(*shape, dtype=dt)

    def ptr(t):
        return ctypes.c_void_p(t.data_ptr() if t is not None else 0)

    kpm = None if key_padding_mask is None else key_padding_mask.to(torch.uint8).contiguous()
    bias = AttentionMasks(attn=attn_mask).attn_bias(dtype)
    bias_stride = 0 if bias is None or bias.shape[0] == 1 else L * L
    masks = [ptr(kpm), ctypes.c_int(int(is_causal)), ptr(bias), ctypes.c_int64(bias_stride)]
    dims = [ctypes.c_int64(x) for x in (B, H, L, D)]
    out, ol, og = new(B, H, L, D), new(B, H, L, D), new(B, H, L, D)
    kll, klg = new(B, H, L), new(B, H, L)
    lsel, lseg = new(B, H, L, dt=torch.float64), new(B, H, L, dt=torch.float64)
    fwd(*map(ptr, (q, k, v, c, s, lam, out, ol, og, kll, klg, lsel, lseg)), *masks, *dims, ctypes.c_double(scale))
    res = dict(out=out, kl_local=kll, kl_global=klg, out_local=ol, out_global=og)
    drawn = cotangents({n: t.shape for n, t in res.items()}, seed, need_kl_grad)  # as testing.run draws them
    cot = {n: drawn[n].to(dtype).contiguous() if n in drawn else None for n in res}
    dq, dk, dv = new(B, H, L, D), new(B, H, L, D), new(B, H, L, D)
    dc, ds, stats = new(B, H, L, D // 2), new(B, H, L, D // 2), new(4, B, H, L)
    bwd(*map(ptr, (cot["out"], cot["out_local"], cot["out_global"], cot["kl_local"], cot["kl_global"], q, k, v, c,
                   s, lam, lsel, lseg, dq, dk, dv, dc, ds, stats)), *masks, *dims, ctypes.c_double(scale))
    fr, wr = f.clone().requires_grad_(), w.clone().requires_grad_()
    dfreqs, dweights = torch.autograd.grad(modulation_tables(fr, wr, L), (fr, wr), (dc.sum(0), ds.sum(0)))
    dmix = (cot["out"] * (ol - og)).sum((0, 2, 3)) * lam * (1 - lam)
    res.update(dq=dq, dk=dk, dv=dv, dfreqs=dfreqs, dweights=dweights, dmix=dmix, lse_local=lsel, lse_global=lseg,
               backward_stats=stats)
    return res


LOGIC_CASES = [
    dict(B=1, H=2, L=37, D=16, S=4),
    dict(B=2, H=1, L=5, D=8, S=1, need_kl_grad=False),
    dict(B=1, H=1, L=200, D=6, S=2),  # several key tiles
    dict(B=1, H=1, L=130, D=300, S=2),  # several columns per thread
    dict(B=1, H=2, L=40, D=16, S=2, q_scale=40.0),  # probabilities underflow
]

#: masked cases: the padding kind of key_padding (None = no padding), is_causal and the attn_mask kind
#: of attn_mask (None = none); run at kThreads = 128 and 4 (L = 37: 10 key tiles of 4), the last two
#: (L = 200: two key tiles of 128) as built only
MASK_CASES = [
    dict(B=3, H=2, L=37, D=16, S=2, padding="lengths"),  # batch 0 fully padded: every row empty
    dict(B=2, H=2, L=37, D=16, S=2, padding="random"),
    dict(B=1, H=2, L=37, D=16, S=2, causal=True),
    dict(B=2, H=1, L=37, D=8, S=2, padding="random", causal=True),  # batch 1's rows 0..2 empty
    dict(B=2, H=1, L=37, D=8, S=2, padding="lengths", causal=True, need_kl_grad=False),
    dict(B=2, H=2, L=37, D=16, S=2, attn="bool"),  # one (L, L) bias for every batch-head
    dict(B=2, H=2, L=37, D=16, S=2, attn="float"),  # a (B·H, L, L) bias
    dict(B=2, H=2, L=37, D=8, S=2, padding="random", causal=True, attn="float"),
    dict(B=2, H=1, L=37, D=8, S=2, padding="lengths", attn="bool", need_kl_grad=False),
    dict(B=1, H=2, L=37, D=16, S=2, attn="large"),
]
MASK_CASES_AS_BUILT = [
    dict(B=2, H=1, L=200, D=6, S=2, padding="lengths", causal=True),
    dict(B=1, H=2, L=200, D=6, S=2, causal=True, attn="float"),
]

#: large-logit shapes (with kThreads = 4: 4 and 10 key tiles, 4 columns per thread)
SCALE_SHAPES = [(2, 2, 16, 16, 4), (1, 2, 37, 16, 2)]


def check_logic(lib, B, H, L, D, S, need_kl_grad=True, q_scale=1.0) -> float:
    """The float64 kernels against the float64 reference: the largest error over the fields relative
    to the tolerance of the rule (FLOAT64_FLOOR); ≤ 1 passes."""
    inputs = make_inputs(B, H, L, D, S, q_scale=q_scale)
    got = run_emulated(lib, inputs, need_kl_grad=need_kl_grad)
    want = run("reference", inputs, need_kl_grad=need_kl_grad)
    stats = parity_stats([(got, want, want)], FLOAT64_FLOOR)
    return max(p.error / p.floor for _, p in stats.values())


def key_padding(B: int, L: int, kind: str, seed: int = 0) -> torch.Tensor:
    """A (B, L) bool key_padding_mask (True = masked). "lengths": each batch keeps a random prefix
    of 1..L keys, batch 0 none when B > 1 (all its rows empty); "random": each key masked with
    probability 0.3 and the last batch's first 3 keys masked (under is_causal its first rows are empty)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "lengths":
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        if B > 1:
            lengths[0] = 0
        return torch.arange(L)[None, :] >= lengths[:, None]
    mask = torch.rand(B, L, generator=g) < 0.3
    mask[-1, :3] = True
    return mask


def attn_mask(B: int, H: int, L: int, kind: str, seed: int = 0) -> torch.Tensor:
    """An attn_mask, each with a row no key is allowed in. "bool": (L, L), True = masked, each entry
    with probability 0.3 and row 1 all True; "float": a (B·H, L, L) float64 additive bias of N(0, 1)
    entries, each −inf with probability 0.3 and row 2 of the last batch-head all −inf; "large": as
    "float" with ±30 for the finite entries (a large finite bias that decides most of each row)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "bool":
        mask = torch.rand(L, L, generator=g) < 0.3
        mask[1] = True
        return mask
    bias = torch.randn(B * H, L, L, generator=g, dtype=torch.float64)
    if kind == "large":
        bias = 30.0 * bias.sign()
    bias = bias.masked_fill(torch.rand(B * H, L, L, generator=g) < 0.3, float("-inf"))
    bias[-1, 2] = float("-inf")
    return bias


def masked_reference(key_padding_mask, is_causal, attn_mask=None):
    """The reference with these masks, as a backend callable for testing.run."""
    return functools.partial(automask_attention_reference, key_padding_mask=key_padding_mask, is_causal=is_causal,
                             attn_mask=attn_mask)


def check_masked(lib, B, H, L, D, S, padding=None, causal=False, attn=None,
                 need_kl_grad=True) -> tuple[float, list[str]]:
    """The float64 kernels under masks against the float64 reference with the same masks: the largest
    error relative to the tolerance (≤ 1 passes) and the exactness problems: a non-finite field, a
    non-zero output, kl, dq or saved log-sum-exp on a row with no allowed key, a non-zero dk or dv of
    a key no query may attend (a padded key)."""
    inputs = make_inputs(B, H, L, D, S)
    kpm = key_padding(B, L, padding) if padding else None
    mask = attn_mask(B, H, L, attn) if attn else None
    got = run_emulated(lib, inputs, need_kl_grad=need_kl_grad, key_padding_mask=kpm, is_causal=causal,
                       attn_mask=mask)
    want = run(masked_reference(kpm, causal, mask), inputs, need_kl_grad=need_kl_grad)
    stats = parity_stats([(got, want, want)], FLOAT64_FLOOR)
    problems = [f"{n} not finite" for n, t in got.items() if not torch.isfinite(t).all()]
    blocked, _ = blocked_keys(B, H, L, torch.device("cpu"), kpm, mask, causal)
    blocked = blocked.expand(B, H, L, L)  # (batch, head, query, key)
    empty, unseen = blocked.all(-1), blocked.all(-2)  # (B, H, L): rows with no allowed key, keys no row sees
    for name in ("out", "out_local", "out_global", "kl_local", "kl_global", "dq", "lse_local", "lse_global"):
        if got[name][empty].ne(0).any():
            problems.append(f"{name} not 0 on a row with no allowed key")
    for name in ("dk", "dv"):
        if got[name][unseen].ne(0).any():
            problems.append(f"{name} not 0 on a key no query may attend")
    if not empty.any() and (padding == "lengths" and B > 1 or padding == "random" and causal or attn):
        problems.append("the case meant to have rows with no allowed key has none")
    return max(p.error / p.floor for _, p in stats.values()), problems


def check_scale(lib, shape, score_scale, dtype, seeds, key_padding_mask=None, is_causal=False,
                attn_mask=None) -> tuple[bool, str]:
    """Parity over `seeds` draws at one score scale; kl ≥ 0 and finiteness in every draw. With masks
    (float32 only: the long-double evaluation takes none) against the reference with the same masks."""
    masked = key_padding_mask is not None or is_causal or attn_mask is not None
    assert not masked or dtype == torch.float32
    reference = masked_reference(key_padding_mask, is_causal, attn_mask) if masked else "reference"
    draws, problems = [], []
    for seed in range(seeds):
        inputs = make_inputs(*shape, seed=seed, score_scale=score_scale)
        got = run_emulated(lib, inputs, dtype, key_padding_mask=key_padding_mask, is_causal=is_causal,
                           attn_mask=attn_mask)
        for name, t in got.items():
            if not torch.isfinite(t).all():
                problems.append(f"seed {seed}: {name} not finite")
        for name in ("kl_local", "kl_global"):
            if got[name].min() < 0:
                problems.append(f"seed {seed}: {name}.min() = {got[name].min().item():.2e} < 0")
        if dtype == torch.float64:
            draws.append((got, run("reference", inputs), run_extended(inputs)))
        else:
            draws.append((got, run(reference, inputs, dtype), run(reference, inputs)))
    stats = parity_stats(draws, eps_floor(dtype))
    worst = max(stats, key=lambda n: stats[n][0])
    problems += [f"{n}: geometric-mean ratio {v[0]:.2f} > 2" for n, v in stats.items() if not v[0] <= 2.0]
    ratio, draw = stats[worst]
    summary = f"worst {worst}: ratio {ratio:.2f} (worst draw cuda {draw.error / draw.scale:.1e}, " \
              f"reference {draw.reference_error / draw.scale:.1e})"
    return not problems, summary + ("; " + "; ".join(problems) if problems else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=PARITY_SEEDS, help="draws per score scale (default %(default)s)")
    parser.add_argument("--logic-only", action="store_true", help="skip the large-logit checks (masks still run)")
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(os.path.join(tmp, "as_built"))
        for case in LOGIC_CASES:
            share = check_logic(lib, **case)
            ok = share <= 1.0
            failed |= not ok
            print(f"{'ok  ' if ok else 'FAIL'} logic {case}: largest error {share:.1e} of the tolerance (1e-9 relative)")
        lib4 = build(os.path.join(tmp, "threads4"), threads=4)
        for threads, built, cases in ((128, lib, MASK_CASES + MASK_CASES_AS_BUILT), (4, lib4, MASK_CASES)):
            for case in cases:
                share, problems = check_masked(built, **case)
                ok = share <= 1.0 and not problems
                failed |= not ok
                print(f"{'ok  ' if ok else 'FAIL'} masks, kThreads {threads}, {case}: largest error {share:.1e} of the "
                      f"tolerance (1e-9 relative)" + ("; " + "; ".join(problems) if problems else ""))
        if args.logic_only:
            return 1 if failed else 0
        dtypes = [torch.float32] + ([torch.float64] if EXTENDED else [])
        if not EXTENDED:
            print("skip float64 large-logit checks: numpy long double is not wider than float64 here")
        for dtype in dtypes:
            for shape in SCALE_SHAPES:
                for score_scale in SCORE_SCALES:
                    ok, summary = check_scale(lib4, shape, score_scale, dtype, args.seeds)
                    failed |= not ok
                    print(f"{'ok  ' if ok else 'FAIL'} {str(dtype)[6:]} shape {shape} score scale {score_scale:g}, "
                          f"{args.seeds} seeds: {summary}")
        shape = SCALE_SHAPES[0]
        kpm = key_padding(shape[0], shape[2], "lengths")
        for attn in (None, "large"):
            mask = attn_mask(shape[0], shape[1], shape[2], attn) if attn else None
            ok, summary = check_scale(lib4, shape, SCORE_SCALES[-1], torch.float32, args.seeds, kpm, True, mask)
            failed |= not ok
            print(f"{'ok  ' if ok else 'FAIL'} float32 shape {shape} score scale {SCORE_SCALES[-1]:g}, padding + "
                  f"causal{' + ' + attn + ' attn_mask' if attn else ''}, {args.seeds} seeds: {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
