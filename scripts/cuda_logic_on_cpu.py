"""Run the CUDA kernels of csrc/cuda/automask_kernels.cu on the CPU and compare them with the
reference in float64: a check of their logic (indexing, tiling, reductions, barriers) for
machines without a GPU. Not a check of anything GPU-specific (memory model, fast-math, limits).

How: the .cu is compiled by g++ against a stub cuda_runtime.h; each thread block runs as
kThreads std::threads meeting at a pthread barrier for every __syncthreads(); the launchers
(<<<...>>> syntax) are cut and replaced by a small harness called through ctypes. The binding's
own steps (modulation tables, Σ over the batch of dc/ds, dmix) are mirrored in torch.

Usage: python scripts/cuda_logic_on_cpu.py     (exit 1 when any case exceeds 1e-9 relative error)
"""
from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from amad_fast.reference import automask_attention_reference, default_freqs, modulation_tables  # noqa: E402

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
template <typename F> void launch(int64_t grid, size_t shm, F call) {
  for (int64_t b = 0; b < grid; ++b) {
    std::vector<unsigned char> shared(shm + 64);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, nullptr, kThreads);
    std::vector<std::thread> th;
    for (int t = 0; t < kThreads; ++t)
      th.emplace_back([&, t] { threadIdx.x = t; blockIdx.x = b; gridDim.x = grid; emu_smem = shared.data();
                               emu_bar = &bar; call(); });
    for (auto& x : th) x.join();
    pthread_barrier_destroy(&bar);
  }
}
using T = double;
extern "C" void emu_forward(const T* q, const T* k, const T* v, const T* cos, const T* sin, const T* lam, T* out,
    T* ol, T* og, T* kll, T* klg, T* lsel, T* lseg, int64_t B, int64_t H, int64_t L, int64_t D, T scale) {
  launch(B * H * L, (2 * D + 4 * kThreads) * sizeof(T), [&] {
    forward_kernel<T>(q, k, v, cos, sin, lam, out, ol, og, kll, klg, lsel, lseg, H, L, (int)D, scale); });
}
extern "C" void emu_backward(const T* g_out, const T* g_ol, const T* g_og, const T* g_kl, const T* g_kg, const T* q,
    const T* k, const T* v, const T* cos, const T* sin, const T* lam, const T* ol, const T* og, const T* kll,
    const T* klg, const T* lsel, const T* lseg, T* dq, T* dk, T* dv, T* dc, T* ds, T* delta, int64_t B, int64_t H,
    int64_t L, int64_t D, T scale) {
  launch(B * H * L, (5 * D + 3 * kThreads) * sizeof(T), [&] {
    backward_rows_kernel<T>(g_out, g_ol, g_og, g_kl, g_kg, q, k, v, cos, sin, lam, ol, og, kll, klg, lsel, lseg, dq,
                            dc, ds, delta, H, L, (int)D, scale); });
  launch(B * H * L, (4 * D + 4 * kThreads) * sizeof(T), [&] {
    backward_cols_kernel<T>(g_out, g_ol, g_og, g_kl, g_kg, q, k, v, cos, sin, lam, lsel, lseg, delta, dk, dv, dc, ds,
                            H, L, (int)D, scale); });
}
"""


def build(tmp: str) -> ctypes.CDLL:
    src = open(os.path.join(ROOT, "csrc", "cuda", "automask_kernels.cu")).read()
    src = src.replace("extern __shared__ __align__(16) unsigned char smem[];", "unsigned char* smem = emu_smem;")
    start, end = src.index("}  // namespace\n"), src.index("}  // namespace cuda")
    src = src[:start] + "}  // namespace\n" + src[end:]  # drop the <<<>>> launchers
    src = src.replace('#include "automask_cuda.h"', f'#include "{os.path.join(ROOT, "csrc", "cuda", "automask_cuda.h")}"')
    os.makedirs(os.path.join(tmp, "stub"))
    for name, text in (("stub/cuda_runtime.h", STUB), ("kernels_emu.cpp", src), ("harness.cpp", HARNESS)):
        with open(os.path.join(tmp, name), "w") as fh:
            fh.write(text)
    lib = os.path.join(tmp, "emu.so")
    subprocess.run(["g++", "-O1", "-std=c++17", "-shared", "-fPIC", "-I" + os.path.join(tmp, "stub"),
                    os.path.join(tmp, "harness.cpp"), "-o", lib, "-lpthread"], check=True)
    return ctypes.CDLL(lib)


def check(lib, B, H, L, D, S, with_kl=True, score_scale=1.0, seed=0) -> float:
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    q, k, v = rnd(B, H, L, D) * score_scale, rnd(B, H, L, D), rnd(B, H, L, D)
    f = default_freqs(H, S, D // 2).double() * (1 + 0.3 * rnd(H, S, D // 2))
    w, m = 1.0 / S + 0.5 * rnd(H, S), rnd(H)
    scale = 1 / math.sqrt(D)
    xs = [x.clone().requires_grad_() for x in (q, k, v, f, w, m)]
    ref = automask_attention_reference(*xs, scale=scale, need_divergence=True, need_branches=True)
    cot = [rnd(*t.shape) for t in ref]
    if not with_kl:
        cot[1] = cot[2] = None
    sum((t * c).sum() for t, c in zip(ref, cot) if c is not None).backward()

    c, s = (t.contiguous() for t in modulation_tables(f, w, L))
    lam = torch.sigmoid(m).contiguous()

    def new(*shape):
        return torch.empty(*shape, dtype=torch.float64)

    def ptr(t):
        return ctypes.c_void_p(t.data_ptr() if t is not None else 0)

    out, ol, og = new(B, H, L, D), new(B, H, L, D), new(B, H, L, D)
    kll, klg, lsel, lseg = new(B, H, L), new(B, H, L), new(B, H, L), new(B, H, L)
    dims = [ctypes.c_int64(x) for x in (B, H, L, D)]
    lib.emu_forward(*map(ptr, (q, k, v, c, s, lam, out, ol, og, kll, klg, lsel, lseg)), *dims, ctypes.c_double(scale))
    dq, dk, dv = new(B, H, L, D), new(B, H, L, D), new(B, H, L, D)
    dc, ds, delta = new(B, H, L, D // 2), new(B, H, L, D // 2), new(2, B, H, L)
    g_out, g_kl, g_kg, g_ol, g_og = (x.contiguous() if x is not None else None for x in cot)
    lib.emu_backward(*map(ptr, (g_out, g_ol, g_og, g_kl, g_kg, q, k, v, c, s, lam, ol, og, kll, klg, lsel, lseg,
                                dq, dk, dv, dc, ds, delta)), *dims, ctypes.c_double(scale))
    fr, wr = f.clone().requires_grad_(), w.clone().requires_grad_()
    df, dw = torch.autograd.grad(modulation_tables(fr, wr, L), (fr, wr), (dc.sum(0), ds.sum(0)))
    dm = (g_out * (ol - og)).sum((0, 2, 3)) * lam * (1 - lam)
    got = [out, kll, klg, ol, og, dq, dk, dv, df, dw, dm]
    want = list(ref) + [x.grad for x in xs]
    return max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, want))


def main() -> int:
    cases = [
        dict(B=1, H=2, L=37, D=16, S=4),
        dict(B=2, H=1, L=5, D=8, S=1, with_kl=False),
        dict(B=1, H=1, L=200, D=6, S=2),  # several key tiles
        dict(B=1, H=1, L=130, D=300, S=2),  # several columns per thread
        dict(B=1, H=2, L=40, D=16, S=2, score_scale=40.0),  # probabilities underflow
    ]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(tmp)
        for case in cases:
            err = check(lib, **case)
            ok = err <= 1e-9
            failed |= not ok
            print(f"{'ok  ' if ok else 'FAIL'} {case}: max relative error {err:.1e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
