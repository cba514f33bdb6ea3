// CUDA kernels of AutoMask attention (spec §1). Deliberately simple: one thread block per query
// row (forward, backward dq) or per key row (backward dk, dv), keys/queries streamed in tiles of
// kThreads with one thread per key/query, the tile's probabilities in shared memory, the output
// columns spread over threads, accumulation in T (float32 for float32/float16/bfloat16 inputs).
// Softmax statistics are exact (two passes: online max/sum, then outputs and kl). No L×L buffer.
// Reductions are fixed-order trees, so results are deterministic.
//
// Large scores (the CPU kernels, csrc/cpu/automask_kernels.h, do the same): log P is
// formed as (score − hi) − lo with the row's log-sum-exp split as hi + lo (hi ≈ the row max), so
// it keeps full precision when |A| ~ 1e6; the log-sum-exps are saved in float64 (split back into
// hi + lo in T by the backward); the divergence gap d = log P^M − log P^G comes from the two
// log-probabilities; kl is clamped at 0; and the backward's δ_i = Σ_j P_ij X_ij / Σ_j P_ij is
// summed from the recomputed rows (the reference's log-softmax backward) instead of taken from
// the forward's outputs, with P renormalised by that Σ_j P_ij (in float64 the saved lse has no
// spare bits, and its rounding would scale every P of a row by 1 + ulp(lse)).
//
// Masks: key_padding_mask (uint8 per (batch, key), non-zero = masked; nullptr = none),
// is_causal (key j allowed for query i only when j <= i) and attn_bias (an additive (L, L) bias
// per batch-head, in T: added to both maps' scaled scores wherever they are formed, in the forward
// and in both backward kernels alike; a −inf entry masks its key for that query). A masked key
// takes part in neither map nor in the divergence: every key (query) loop predicates on
// key_allowed, so no −inf ever enters a softmax sum, and under is_causal the loops stop after the
// last allowed key (forward, backward rows) or start at the tile holding the first allowed query
// (backward columns), so fully masked tiles are skipped. A row with no allowed
// key has Σ exp = 0: its outputs and kl terms are 0, its saved log-sum-exps 0 (finite) and its
// 1/Σ P stats 0, so its gradients are 0, never NaN.
#include <cuda_runtime.h>

#include <cstdint>

#include "automask_cuda.h"

namespace amad_fast {
namespace cuda {
namespace {

template <typename T>
struct Num;
template <>
struct Num<float> {
  static __device__ __forceinline__ float lowest() { return -3.0e38f; }
  static __device__ __forceinline__ float neg_inf() { return -HUGE_VALF; }
  static __device__ __forceinline__ float exp(float x) { return ::expf(x); }
  static __device__ __forceinline__ float log(float x) { return ::logf(x); }
  static __device__ __forceinline__ float log1p(float x) { return ::log1pf(x); }
};
template <>
struct Num<double> {
  static __device__ __forceinline__ double lowest() { return -1.0e308; }
  static __device__ __forceinline__ double neg_inf() { return -HUGE_VAL; }
  static __device__ __forceinline__ double exp(double x) { return ::exp(x); }
  static __device__ __forceinline__ double log(double x) { return ::log(x); }
  static __device__ __forceinline__ double log1p(double x) { return ::log1p(x); }
};

// Element d of row x (length D = 2P) rotated by the modulation c, s (length P) of its position
// (spec §1.2, half-split pairing).
template <typename T>
__device__ __forceinline__ T rotated(const T* x, const T* c, const T* s, int d, int P) {
  return d < P ? x[d] * c[d] - x[d + P] * s[d] : x[d - P] * s[d - P] + x[d] * c[d - P];
}

// The divergence gaps g^M = log P^M − log M, g^G = log P^G − log M from d = log P^M − log P^G
// (log M = logaddexp − log 2): min(0, ±d) − log1p(exp(−|d|)) + log 2, finite, no cancellation.
template <typename T>
__device__ __forceinline__ void kl_gaps(T d, T& gM, T& gG) {
  const T l = T(0.69314718055994530942) - Num<T>::log1p(Num<T>::exp(d > 0 ? -d : d));
  gM = (d > 0 ? T(0) : d) + l;
  gG = (d > 0 ? -d : T(0)) + l;
}

// Both scores of query (rotated qr, plain qg, both already × scale; shared) against key row kj
// at a position with modulation cj, sj.
template <typename T>
__device__ __forceinline__ void scores(const T* qr, const T* qg, const T* kj, const T* cj, const T* sj, int P, T& a,
                                       T& g) {
  a = T(0);
  g = T(0);
  for (int p = 0; p < P; ++p) {
    const T k1 = kj[p], k2 = kj[p + P], c = cj[p], s = sj[p];
    a += qr[p] * (k1 * c - k2 * s) + qr[p + P] * (k1 * s + k2 * c);
    g += qg[p] * k1 + qg[p + P] * k2;
  }
}

// Running max m and sum s of exp(x − m) over one thread's scores.
template <typename T>
__device__ __forceinline__ void online_update(T& m, T& s, T x) {
  if (x > m) {
    s = s * Num<T>::exp(m - x) + T(1);
    m = x;
  } else {
    s += Num<T>::exp(x - m);
  }
}

// Row i of batch-head bh of the additive bias (attn_bias + bh·stride + i·L), null without one.
template <typename T>
__device__ __forceinline__ const T* bias_row(const T* attn_bias, int64_t stride, int64_t bh, int64_t L, int64_t i) {
  return attn_bias ? attn_bias + bh * stride + i * L : nullptr;
}

// Whether query i of batch b may attend key j (see the file comment); kpm and brow (query i's
// bias row, where a −inf entry blocks the key) may be null.
template <typename T>
__device__ __forceinline__ bool key_allowed(const uint8_t* kpm, bool is_causal, const T* brow, int64_t b, int64_t L,
                                            int64_t i, int64_t j) {
  return !(is_causal && j > i) && !(kpm && kpm[b * L + j]) && !(brow && brow[j] == Num<T>::neg_inf());
}

// Adds query i's bias entry of key j to both maps' scaled scores a, g (nothing when brow is null).
template <typename T>
__device__ __forceinline__ void add_bias(const T* brow, int64_t j, T& a, T& g) {
  if (brow) {
    a += brow[j];
    g += brow[j];
  }
}

// One past the last key query i may attend: L, or i + 1 under is_causal.
__device__ __forceinline__ int64_t key_end(bool is_causal, int64_t L, int64_t i) { return is_causal ? i + 1 : L; }

// Fixed-order tree sum over the block (kThreads, a power of two); red: kThreads entries.
template <typename T>
__device__ T block_sum(T x, T* red) {
  const int t = threadIdx.x;
  __syncthreads();  // red may still be read by a previous call
  red[t] = x;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (t < w) red[t] += red[t + w];
    __syncthreads();
  }
  return red[0];
}

// log-sum-exp over the block from each thread's (max, sum), as the row max mx and the log of the
// row sum ls (lse = mx + ls, kept apart: see the file comment); red: 2·kThreads entries.
template <typename T>
__device__ void block_lse(T m, T s, T* red, T& mx, T& ls) {
  const int t = threadIdx.x;
  T* rm = red;
  T* rs = red + kThreads;
  __syncthreads();
  rm[t] = m;
  rs[t] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (t < w) {
      const T m1 = rm[t], m2 = rm[t + w];
      const T mm = m1 > m2 ? m1 : m2;
      rs[t] = rs[t] * Num<T>::exp(m1 - mm) + rs[t + w] * Num<T>::exp(m2 - mm);
      rm[t] = mm;
    }
    __syncthreads();
  }
  mx = rm[0];
  ls = Num<T>::log(rs[0]);
}

// A row's float64 log-sum-exp as hi + lo in T (hi + lo = lse to ~1e-14 relative in float; in
// double lo = 0).
template <typename T>
__device__ __forceinline__ void split_lse(double lse, T& hi, T& lo) {
  hi = static_cast<T>(lse);
  lo = static_cast<T>(lse - static_cast<double>(hi));
}

// P^M, P^G of one entry from its scores a, g and the rows' split log-sum-exps, unnormalised in
// the sense of the file comment; with a kl gradient, xa, xg (dP on entry) get dkl·(log P − log M).
template <typename T>
__device__ __forceinline__ void probs_and_x(T a, T g, T hiA, T loA, T hiG, T loG, T gkA, T gkG, bool kl_grad, T& pa,
                                            T& pg, T& xa, T& xg) {
  const T la = (a - hiA) - loA, lg = (g - hiG) - loG;
  pa = Num<T>::exp(la);
  pg = Num<T>::exp(lg);
  if (kl_grad) {
    T gM, gG;
    kl_gaps(la - lg, gM, gG);
    xa += gkA * gM;
    xg += gkG * gG;
  }
}

// Upstream gradient of the two branch outputs at element o: dO^M = λ·dout + dout_local, dO^G likewise.
template <typename T>
__device__ __forceinline__ void branch_grads(const T* g_out, const T* g_ol, const T* g_og, int64_t o, T lam, T& om,
                                             T& og) {
  const T go = g_out ? g_out[o] : T(0);
  om = lam * go + (g_ol ? g_ol[o] : T(0));
  og = (T(1) - lam) * go + (g_og ? g_og[o] : T(0));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                   const T* __restrict__ cos, const T* __restrict__ sin, const T* __restrict__ lam, T* out,
                   T* out_local, T* out_global, T* kl_local, T* kl_global, double* lse_local, double* lse_global,
                   const uint8_t* __restrict__ kpm, bool is_causal, const T* __restrict__ attn_bias,
                   int64_t bias_stride, int64_t H, int64_t L, int D, T scale) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* qr = reinterpret_cast<T*>(smem);
  T* qg = qr + D;
  T* pA = qg + D;
  T* pG = pA + kThreads;
  T* red = pG + kThreads;  // 2·kThreads
  const int P = D / 2, t = threadIdx.x;
  const int64_t row = blockIdx.x, bh = row / L, i = row % L, h = bh % H, b = bh / H;
  const int64_t kend = key_end(is_causal, L, i);
  const T* brow = bias_row(attn_bias, bias_stride, bh, L, i);
  const T* qi = q + row * D;
  const T* kb = k + bh * L * D;
  const T* vb = v + bh * L * D;
  const T* ch = cos + h * L * P;
  const T* sh = sin + h * L * P;
  for (int d = t; d < D; d += kThreads) {
    qg[d] = qi[d] * scale;
    qr[d] = rotated(qi, ch + i * P, sh + i * P, d, P) * scale;
  }
  __syncthreads();

  T mA = Num<T>::lowest(), sA = T(0), mG = Num<T>::lowest(), sG = T(0);
  for (int64_t j = t; j < kend; j += kThreads) {
    if (!key_allowed(kpm, is_causal, brow, b, L, i, j)) continue;
    T a, g;
    scores(qr, qg, kb + j * D, ch + j * P, sh + j * P, P, a, g);
    add_bias(brow, j, a, g);
    online_update(mA, sA, a);
    online_update(mG, sG, g);
  }
  T hiA, loA, hiG, loG;  // row max and log row sum of each map
  block_lse(mA, sA, red, hiA, loA);
  block_lse(mG, sG, red, hiG, loG);
  // no allowed key: Σ exp = 0 and its log −inf (an allowed key contributes exp(0) = 1 at the row max)
  const bool has_keys = loA > Num<T>::lowest();
  if (!has_keys) hiA = loA = hiG = loG = T(0);

  T oA[kMaxDPerThread] = {}, oG[kMaxDPerThread] = {};
  T klA = T(0), klG = T(0);
  for (int64_t j0 = 0; j0 < kend; j0 += kThreads) {
    const int64_t j = j0 + t;
    T pa = T(0), pg = T(0);
    if (j < kend && key_allowed(kpm, is_causal, brow, b, L, i, j)) {
      T a, g;
      scores(qr, qg, kb + j * D, ch + j * P, sh + j * P, P, a, g);
      add_bias(brow, j, a, g);
      const T la = (a - hiA) - loA, lg = (g - hiG) - loG;
      pa = Num<T>::exp(la);
      pg = Num<T>::exp(lg);
      if (kl_local) {
        T gM, gG;
        kl_gaps(la - lg, gM, gG);  // d from the log-probabilities, not (a − g) − (lse^M − lse^G)
        klA += pa * gM;
        klG += pg * gG;
      }
    }
    __syncthreads();  // the previous tile's probabilities are no longer read
    pA[t] = pa;
    pG[t] = pg;
    __syncthreads();
    const int n = kend - j0 < kThreads ? static_cast<int>(kend - j0) : kThreads;
#pragma unroll
    for (int c = 0; c < kMaxDPerThread; ++c) {
      const int d = t + c * kThreads;
      if (d < D) {
        for (int jj = 0; jj < n; ++jj) {
          const T x = vb[(j0 + jj) * D + d];
          oA[c] += pA[jj] * x;
          oG[c] += pG[jj] * x;
        }
      }
    }
  }
  const T lh = lam[h];
#pragma unroll
  for (int c = 0; c < kMaxDPerThread; ++c) {
    const int d = t + c * kThreads;
    if (d < D) {
      out_local[row * D + d] = oA[c];
      out_global[row * D + d] = oG[c];
      out[row * D + d] = lh * oA[c] + (T(1) - lh) * oG[c];
    }
  }
  if (kl_local) {
    const T a = block_sum(klA, red);
    const T g = block_sum(klG, red);
    if (t == 0) {  // a KL is >= 0; terms of both signs may round a few ulp below it
      kl_local[row] = a > T(0) ? a : T(0);
      kl_global[row] = g > T(0) ? g : T(0);
    }
  }
  if (t == 0) {  // 0 on a row with no allowed key (hi = lo = 0 above)
    lse_local[row] = static_cast<double>(hiA) + static_cast<double>(loA);
    lse_global[row] = static_cast<double>(hiG) + static_cast<double>(loG);
  }
}

// Backward, query side: one block per query row. A first pass over the keys sums the row's
// Σ_j P_j X_j and Σ_j P_j of each map (X = dP plus the divergence's part); stats gets δ^M, δ^G
// and 1/Σ P^M, 1/Σ P^G (for the key side, stats[0..4)·B·H·L). A second pass writes dq and the
// q part of dc, ds from dS = P (X − δ), P renormalised.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_rows_kernel(const T* g_out, const T* g_ol, const T* g_og, const T* g_kl, const T* g_kg,
                         const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const T* __restrict__ cos, const T* __restrict__ sin, const T* __restrict__ lam,
                         const double* __restrict__ lse_local, const double* __restrict__ lse_global, T* dq, T* dc,
                         T* ds, T* stats, const uint8_t* __restrict__ kpm, bool is_causal,
                         const T* __restrict__ attn_bias, int64_t bias_stride, int64_t H, int64_t L, int D, T scale) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* qr = reinterpret_cast<T*>(smem);
  T* qg = qr + D;
  T* dOM = qg + D;
  T* dOG = dOM + D;
  T* dqr = dOG + D;
  T* bA = dqr + D;
  T* bG = bA + kThreads;
  T* red = bG + kThreads;  // kThreads
  const int P = D / 2, t = threadIdx.x;
  const int64_t row = blockIdx.x, bh = row / L, i = row % L, h = bh % H, b = bh / H, BHL = gridDim.x;
  const int64_t kend = key_end(is_causal, L, i);
  const T* brow = bias_row(attn_bias, bias_stride, bh, L, i);
  const T* qi = q + row * D;
  const T* kb = k + bh * L * D;
  const T* vb = v + bh * L * D;
  const T* ch = cos + h * L * P;
  const T* sh = sin + h * L * P;
  const T lh = lam[h];
  for (int d = t; d < D; d += kThreads) {
    qg[d] = qi[d] * scale;
    qr[d] = rotated(qi, ch + i * P, sh + i * P, d, P) * scale;
    T om, og;
    branch_grads(g_out, g_ol, g_og, row * D + d, lh, om, og);
    dOM[d] = om;
    dOG[d] = og;
  }
  __syncthreads();
  const T gkA = g_kl ? g_kl[row] : T(0), gkG = g_kg ? g_kg[row] : T(0);
  const bool kl_grad = g_kl || g_kg;
  T hiA, loA, hiG, loG;
  split_lse(lse_local[row], hiA, loA);
  split_lse(lse_global[row], hiG, loG);
  // key j of this row: both maps' P and X (dP plus the divergences' part), recomputed in each pass
  auto key_terms = [&](int64_t j, T& pa, T& pg, T& xa, T& xg) {
    T a, g;
    xa = T(0), xg = T(0);
    scores(qr, qg, kb + j * D, ch + j * P, sh + j * P, P, a, g);
    add_bias(brow, j, a, g);
    for (int d = 0; d < D; ++d) {
      xa += dOM[d] * vb[j * D + d];
      xg += dOG[d] * vb[j * D + d];
    }
    probs_and_x(a, g, hiA, loA, hiG, loG, gkA, gkG, kl_grad, pa, pg, xa, xg);
  };
  // pass 1: δ = Σ_j P_j X_j / Σ_j P_j per map
  T pxA = T(0), pA = T(0), pxG = T(0), pG = T(0);
  for (int64_t j = t; j < kend; j += kThreads) {
    if (!key_allowed(kpm, is_causal, brow, b, L, i, j)) continue;
    T pa, pg, xa, xg;
    key_terms(j, pa, pg, xa, xg);
    pxA += pa * xa;
    pA += pa;
    pxG += pg * xg;
    pG += pg;
  }
  // Σ P = 0 only on a row with no allowed key: its stats are 0, so are its dS and gradients
  const T sumA = block_sum(pA, red), sumG = block_sum(pG, red);
  const T invA = sumA > T(0) ? T(1) / sumA : T(0), invG = sumG > T(0) ? T(1) / sumG : T(0);
  const T delA = block_sum(pxA, red) * invA, delG = block_sum(pxG, red) * invG;
  if (t == 0) {
    stats[row] = delA;
    stats[BHL + row] = delG;
    stats[2 * BHL + row] = invA;
    stats[3 * BHL + row] = invG;
  }
  // pass 2: dS = P (X − δ), dq
  T aq[kMaxDPerThread] = {}, gq[kMaxDPerThread] = {};
  for (int64_t j0 = 0; j0 < kend; j0 += kThreads) {
    const int64_t j = j0 + t;
    T dA = T(0), dG = T(0);
    if (j < kend && key_allowed(kpm, is_causal, brow, b, L, i, j)) {
      T pa, pg, xa, xg;
      key_terms(j, pa, pg, xa, xg);
      dA = pa * invA * (xa - delA);
      dG = pg * invG * (xg - delG);
    }
    __syncthreads();
    bA[t] = dA;
    bG[t] = dG;
    __syncthreads();
    const int n = kend - j0 < kThreads ? static_cast<int>(kend - j0) : kThreads;
#pragma unroll
    for (int c = 0; c < kMaxDPerThread; ++c) {
      const int d = t + c * kThreads;
      if (d < D) {
        for (int jj = 0; jj < n; ++jj) {
          const int64_t jk = j0 + jj;
          aq[c] += bA[jj] * rotated(kb + jk * D, ch + jk * P, sh + jk * P, d, P);
          gq[c] += bG[jj] * kb[jk * D + d];
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kMaxDPerThread; ++c) {
    const int d = t + c * kThreads;
    if (d < D) dqr[d] = aq[c] * scale;
  }
  __syncthreads();
  const T* ci = ch + i * P;
  const T* si = sh + i * P;
#pragma unroll
  for (int c = 0; c < kMaxDPerThread; ++c) {
    const int d = t + c * kThreads;
    if (d < D) {
      const T un = d < P ? dqr[d] * ci[d] + dqr[d + P] * si[d] : -dqr[d - P] * si[d - P] + dqr[d] * ci[d - P];
      dq[row * D + d] = gq[c] * scale + un;
    }
  }
  for (int p = t; p < P; p += kThreads) {
    const T q1 = qi[p], q2 = qi[p + P];
    dc[row * P + p] = dqr[p] * q1 + dqr[p + P] * q2;
    ds[row * P + p] = dqr[p + P] * q1 - dqr[p] * q2;
  }
}

// Backward, key side: one block per key row. Writes dk, dv and adds the k part of dc, ds (after
// backward_rows_kernel, which wrote the rows' stats and the q part).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_cols_kernel(const T* g_out, const T* g_ol, const T* g_og, const T* g_kl, const T* g_kg,
                         const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                         const T* __restrict__ cos, const T* __restrict__ sin, const T* __restrict__ lam,
                         const double* __restrict__ lse_local, const double* __restrict__ lse_global,
                         const T* stats, T* dk, T* dv, T* dc, T* ds, const uint8_t* __restrict__ kpm, bool is_causal,
                         const T* __restrict__ attn_bias, int64_t bias_stride, int64_t H, int64_t L, int D, T scale) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* kr = reinterpret_cast<T*>(smem);
  T* kg = kr + D;
  T* vj = kg + D;
  T* dkr = vj + D;
  T* bA = dkr + D;
  T* bG = bA + kThreads;
  T* bPA = bG + kThreads;
  T* bPG = bPA + kThreads;
  const int P = D / 2, t = threadIdx.x;
  const int64_t col = blockIdx.x, bh = col / L, j = col % L, h = bh % H, b = bh / H, BHL = gridDim.x;
  // A padded key is allowed for no query (no tile visited: its dk, dv, dc, ds parts are 0);
  // under is_causal only queries i >= j see it, so the tiles before the one holding j are skipped.
  const int64_t first_tile = kpm && kpm[b * L + j] ? L : (is_causal ? j / kThreads * kThreads : 0);
  const T* kj = k + col * D;
  const T* ch = cos + h * L * P;
  const T* sh = sin + h * L * P;
  const T lh = lam[h];
  for (int d = t; d < D; d += kThreads) {
    kg[d] = kj[d];
    kr[d] = rotated(kj, ch + j * P, sh + j * P, d, P);
    vj[d] = v[col * D + d];
  }
  __syncthreads();
  const bool kl_grad = g_kl || g_kg;
  T ak[kMaxDPerThread] = {}, gk[kMaxDPerThread] = {}, av[kMaxDPerThread] = {};
  for (int64_t i0 = first_tile; i0 < L; i0 += kThreads) {
    const int64_t i = i0 + t;
    T dA = T(0), dG = T(0), pa = T(0), pg = T(0);
    const T* brow = i < L ? bias_row(attn_bias, bias_stride, bh, L, i) : nullptr;
    if (i < L && key_allowed(kpm, is_causal, brow, b, L, i, j)) {
      const int64_t row = bh * L + i;
      const T* qi = q + row * D;
      const T* ci = ch + i * P;
      const T* si = sh + i * P;
      T a = T(0), g = T(0), xa = T(0), xg = T(0);
      for (int p = 0; p < P; ++p) {
        const T q1 = qi[p], q2 = qi[p + P];
        a += (q1 * ci[p] - q2 * si[p]) * kr[p] + (q1 * si[p] + q2 * ci[p]) * kr[p + P];
        g += q1 * kg[p] + q2 * kg[p + P];
      }
      a *= scale;
      g *= scale;
      add_bias(brow, j, a, g);
      for (int d = 0; d < D; ++d) {
        T om, og;
        branch_grads(g_out, g_ol, g_og, row * D + d, lh, om, og);
        xa += om * vj[d];
        xg += og * vj[d];
      }
      T hiA, loA, hiG, loG;
      split_lse(lse_local[row], hiA, loA);
      split_lse(lse_global[row], hiG, loG);
      probs_and_x(a, g, hiA, loA, hiG, loG, g_kl ? g_kl[row] : T(0), g_kg ? g_kg[row] : T(0),
                  kl_grad, pa, pg, xa, xg);
      pa *= stats[2 * BHL + row];
      pg *= stats[3 * BHL + row];
      dA = pa * (xa - stats[row]);
      dG = pg * (xg - stats[BHL + row]);
    }
    __syncthreads();
    bA[t] = dA;
    bG[t] = dG;
    bPA[t] = pa;
    bPG[t] = pg;
    __syncthreads();
    const int n = L - i0 < kThreads ? static_cast<int>(L - i0) : kThreads;
#pragma unroll
    for (int c = 0; c < kMaxDPerThread; ++c) {
      const int d = t + c * kThreads;
      if (d < D) {
        for (int ii = 0; ii < n; ++ii) {
          const int64_t iq = i0 + ii, row = bh * L + iq;
          const T* qi = q + row * D;
          ak[c] += bA[ii] * rotated(qi, ch + iq * P, sh + iq * P, d, P);
          gk[c] += bG[ii] * qi[d];
          T om, og;
          branch_grads(g_out, g_ol, g_og, row * D + d, lh, om, og);
          av[c] += bPA[ii] * om + bPG[ii] * og;
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kMaxDPerThread; ++c) {
    const int d = t + c * kThreads;
    if (d < D) dkr[d] = ak[c] * scale;
  }
  __syncthreads();
  const T* cj = ch + j * P;
  const T* sj = sh + j * P;
#pragma unroll
  for (int c = 0; c < kMaxDPerThread; ++c) {
    const int d = t + c * kThreads;
    if (d < D) {
      const T un = d < P ? dkr[d] * cj[d] + dkr[d + P] * sj[d] : -dkr[d - P] * sj[d - P] + dkr[d] * cj[d - P];
      dk[col * D + d] = gk[c] * scale + un;
      dv[col * D + d] = av[c];
    }
  }
  for (int p = t; p < P; p += kThreads) {
    dc[col * P + p] += dkr[p] * kg[p] + dkr[p + P] * kg[p + P];
    ds[col * P + p] += dkr[p + P] * kg[p] - dkr[p] * kg[p + P];
  }
}

}  // namespace

template <typename T>
cudaError_t automask_forward(const T* q, const T* k, const T* v, const T* cos, const T* sin, const T* lam, T* out,
                             T* out_local, T* out_global, T* kl_local, T* kl_global, double* lse_local,
                             double* lse_global, const uint8_t* key_padding_mask, bool is_causal,
                             const T* attn_bias, int64_t attn_bias_stride, int64_t B, int64_t H, int64_t L, int64_t D,
                             T scale, cudaStream_t stream) {
  if (D > kMaxHeadDim || D % 2) return cudaErrorInvalidValue;
  const int64_t rows = B * H * L;
  if (rows == 0) return cudaSuccess;
  const size_t shm = (2 * D + 4 * kThreads) * sizeof(T);
  forward_kernel<T><<<static_cast<unsigned>(rows), kThreads, shm, stream>>>(
      q, k, v, cos, sin, lam, out, out_local, out_global, kl_local, kl_global, lse_local, lse_global,
      key_padding_mask, is_causal, attn_bias, attn_bias_stride, H, L, static_cast<int>(D), scale);
  return cudaGetLastError();
}

template <typename T>
cudaError_t automask_backward(const T* g_out, const T* g_out_local, const T* g_out_global, const T* g_kl_local,
                              const T* g_kl_global, const T* q, const T* k, const T* v, const T* cos, const T* sin,
                              const T* lam, const double* lse_local, const double* lse_global, T* dq, T* dk, T* dv,
                              T* dc, T* ds, T* stats, const uint8_t* key_padding_mask, bool is_causal,
                              const T* attn_bias, int64_t attn_bias_stride, int64_t B, int64_t H, int64_t L, int64_t D,
                              T scale, cudaStream_t stream) {
  if (D > kMaxHeadDim || D % 2) return cudaErrorInvalidValue;
  const int64_t rows = B * H * L;
  if (rows == 0) return cudaSuccess;
  const size_t shm_rows = (5 * D + 3 * kThreads) * sizeof(T);
  backward_rows_kernel<T><<<static_cast<unsigned>(rows), kThreads, shm_rows, stream>>>(
      g_out, g_out_local, g_out_global, g_kl_local, g_kl_global, q, k, v, cos, sin, lam, lse_local, lse_global, dq,
      dc, ds, stats, key_padding_mask, is_causal, attn_bias, attn_bias_stride, H, L, static_cast<int>(D), scale);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const size_t shm_cols = (4 * D + 4 * kThreads) * sizeof(T);
  backward_cols_kernel<T><<<static_cast<unsigned>(rows), kThreads, shm_cols, stream>>>(
      g_out, g_out_local, g_out_global, g_kl_local, g_kl_global, q, k, v, cos, sin, lam, lse_local, lse_global,
      stats, dk, dv, dc, ds, key_padding_mask, is_causal, attn_bias, attn_bias_stride, H, L, static_cast<int>(D),
      scale);
  return cudaGetLastError();
}

#define AMAD_INSTANTIATE(T)                                                                                         \
  template cudaError_t automask_forward<T>(const T*, const T*, const T*, const T*, const T*, const T*, T*, T*, T*, \
                                           T*, T*, double*, double*, const uint8_t*, bool, const T*, int64_t,       \
                                           int64_t, int64_t, int64_t, int64_t, T, cudaStream_t);                    \
  template cudaError_t automask_backward<T>(const T*, const T*, const T*, const T*, const T*, const T*, const T*,  \
                                            const T*, const T*, const T*, const T*, const double*, const double*,   \
                                            T*, T*, T*, T*, T*, T*, const uint8_t*, bool, const T*, int64_t,        \
                                            int64_t, int64_t, int64_t, int64_t, T, cudaStream_t);
AMAD_INSTANTIATE(float)
AMAD_INSTANTIATE(double)
#undef AMAD_INSTANTIATE

}  // namespace cuda
}  // namespace amad_fast
