// CPU kernels of AutoMask attention (spec §1), raw pointers only: the hot loops, compiled once per
// instruction set (see automask_cpu.cpp for the dispatch). No ATen here on purpose: these bodies
// are inlined into functions built with AVX2/AVX-512 target attributes, and must not drag in code
// that would then be shared with the rest of the library.
//
// Work unit: one (batch, head) and a block of R query rows against all L keys. The block's score
// rows (R×L for each map) live in thread-local buffers; no L×L matrix exists anywhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define AMAD_AVX512_TRANSPOSE 1
#endif

#define AMAD_AI inline __attribute__((always_inline))

// Comparisons inside the loops must be if-converted for them to vectorise, which GCC only does
// without trapping math (ATen itself builds with -fno-trapping-math).
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math", "fp-contract=fast")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace amad_fast {
namespace cpu {

// Lanes of the manual reductions: sums over a row are split into W interleaved partial sums so
// the compiler vectorises them without reassociating (no -ffast-math); the order is fixed, so the
// result does not depend on the thread count.
constexpr int64_t W = 16;

// a*b + c, fused where the instruction set has FMA (F), else plain (fmaf would be a libm call).
template <bool F>
AMAD_AI float madd(float a, float b, float c) {
  if constexpr (F) return __builtin_fmaf(a, b, c);
  return a * b + c;
}
template <bool F>
AMAD_AI double madd(double a, double b, double c) {
  if constexpr (F) return __builtin_fma(a, b, c);
  return a * b + c;
}

// exp for x <= 0 (softmax arguments), vectorisable: Cody–Waite reduction to r in [-ln2/2, ln2/2],
// Cephes degree-6 polynomial (≈1 ulp), 2^n from the exponent bits. Below -87 it returns 0.
template <bool F>
AMAD_AI float vexp(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  // round-to-nearest by the 1.5·2^23 trick (floorf does not vectorise); t's low bits hold n
  const float t = madd<F>(xc, 1.44269504088896341f, 12582912.0f);
  const float n = t - 12582912.0f;
  float r = madd<F>(n, -0.693359375f, xc);
  r = madd<F>(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = madd<F>(p, r, 1.3981999507e-3f);
  p = madd<F>(p, r, 8.3334519073e-3f);
  p = madd<F>(p, r, 4.1665795894e-2f);
  p = madd<F>(p, r, 1.6666665459e-1f);
  p = madd<F>(p, r, 5.0000001201e-1f);
  p = madd<F>(p, r * r, r) + 1.0f;
  int32_t ti;
  std::memcpy(&ti, &t, sizeof(ti));
  const int32_t e = (ti - 0x4B400000 + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &e, sizeof(two_n));
  return x < -87.0f ? 0.0f : p * two_n;
}
template <bool F>
AMAD_AI double vexp(double x) {
  return std::exp(x);
}

// log(1 + e) for e in [0, 1], vectorisable and without a division: e·q(e), q a degree-9 Chebyshev
// fit of log1p(e)/e on [0, 1] (fit error 3e-9, below float's rounding; ≤ 1.9e-7 relative evaluated
// in float, relative accuracy kept for small e). It replaced 2·atanh(e/(2+e)), whose division was
// the costliest instruction of the forward's kl pass.
template <bool F>
AMAD_AI float vlog1p_unit(float e) {
  float p = -0.003256378462538123f;
  p = madd<F>(p, e, 0.019907161593437195f);
  p = madd<F>(p, e, -0.057064201682806015f);
  p = madd<F>(p, e, 0.10614264756441116f);
  p = madd<F>(p, e, -0.15311862528324127f);
  p = madd<F>(p, e, 0.19678117334842682f);
  p = madd<F>(p, e, -0.24954558908939362f);
  p = madd<F>(p, e, 0.33330005407333374f);
  p = madd<F>(p, e, -0.4999990463256836f);
  p = madd<F>(p, e, 1.0f);
  return e * p;
}
template <bool F>
AMAD_AI double vlog1p_unit(double e) {
  return std::log1p(e);
}

// The divergence gaps g^M = log P^M − log M and g^G = log P^G − log M, from d = log P^M − log P^G
// alone: with log M = logaddexp(log P^M, log P^G) − log 2 (spec §1.5),
//   g^M = min(0, d) − log1p(exp(−|d|)) + log 2,   g^G = min(0, −d) − log1p(exp(−|d|)) + log 2.
// Finite wherever the scores are. d itself must come from the two log-probabilities, each formed
// as (score − row max) − log(row sum) (see log_prob): at large scores (|A| ~ 1e6 when the AutoMask
// weights are ~1e3) any grouping that subtracts two large numbers first, such as
// (A − G) − (lse^M − lse^G), loses ulp(|A|) ≈ 0.06 of absolute accuracy in d, which turned the
// float32 kl terms negative. (Taking exp(−|d|) as min(P^M, P^G)/max(P^M, P^G) saves an
// exponential, but was tried and doubled the float32 error of the kl terms at large scores.)
template <typename T, bool F>
AMAD_AI void kl_gaps(T d, T& gM, T& gG) {
  const T nd = d > 0 ? -d : d;
  const T l = T(0.693147180559945309417232121458176568) - vlog1p_unit<F>(vexp<F>(nd));
  gM = (d > 0 ? T(0) : d) + l;
  gG = (d > 0 ? -d : T(0)) + l;
}

// log P of one entry from its score x and its row's log-sum-exp split as hi + lo, hi the large
// part (the row max in the forward, the float part of the float64 lse in the backward) and lo the
// small rest (log Σ exp(x − max) ≤ log L): x − hi is exact for the entries that matter (Sterbenz),
// so log P keeps full relative precision however large the scores are. A single lse in T would
// carry ulp(lse) into every log P and probability (at |A| ~ 1e6 in float32: 0.06).
template <typename T>
AMAD_AI T log_prob(T x, T hi, T lo) {
  return (x - hi) - lo;
}

// A row's float64 log-sum-exp as hi + lo in T (hi + lo = lse to ~1e-14 relative in float).
template <typename T>
AMAD_AI void split_lse(double lse, T& hi, T& lo) {
  hi = static_cast<T>(lse);
  lo = static_cast<T>(lse - static_cast<double>(hi));
}

// Row buffers (score, probability and gradient rows) are padded to a multiple of W columns, and
// the per-entry loops below run over whole W-wide chunks, masking the columns at or past L where
// it matters: a scalar tail would cost as much as all the vector chunks (at L = 100, 4 scalar
// columns with a transcendental each against 6 vectors of 16).
constexpr int64_t kPad = W;
inline int64_t padded(int64_t L) { return (L + kPad - 1) / kPad * kPad; }

// max over the first L entries of a row x, in W-wide generic vectors (GCC did not vectorise the
// scalar form, with or without the bound test: a fifth of the forward's time at L = 1024); a
// maximum does not depend on the order.
template <typename T>
AMAD_AI T row_max(const T* __restrict__ x, int64_t L) {
  typedef T V __attribute__((vector_size(W * sizeof(T))));
  const int64_t full = L / W * W;
  T m = x[0];
  if (full > 0) {
    V acc;
    std::memcpy(&acc, x, sizeof(V));
    for (int64_t j = W; j < full; j += W) {
      V v;
      std::memcpy(&v, x + j, sizeof(V));
      acc = v > acc ? v : acc;
    }
    for (int64_t l = 0; l < W; ++l) m = acc[l] > m ? acc[l] : m;
  }
  for (int64_t j = full; j < L; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// Σ of W lane partial sums as a pairwise tree: log2(W) dependent steps instead of W − 1.
template <typename T>
AMAD_AI T lanes_sum(const T* acc) {
  T t[W];
  for (int64_t l = 0; l < W; ++l) t[l] = acc[l];
  for (int64_t w = W / 2; w >= 1; w /= 2)
    for (int64_t l = 0; l < w; ++l) t[l] += t[l + w];
  return t[0];
}

// dS = P ∘ (X − δ) for n rows (row stride ld) in place of P (X: dP plus the divergences' part),
// with δ_i = Σ_j P_ij X_ij / Σ_j P_ij summed here from the same rows: the log-softmax backward of
// the reference. Each row of dS then sums to zero up to the rounding of its own entries, and a row
// whose P is one-hot (large scores) gets exactly zero score gradients, as in the reference; δ
// taken from the forward's outputs instead (dO·O + dkl·kl, FlashAttention-2 style) leaves a
// rounding difference e_i that enters every entry as −P_ij·e_i, the same sign along the row, so it
// adds up in dq, dk (×|k̃|, |q̃|, large when the scores are) and in dweights (up to 14× the
// reference's float32 error at score scale 1, 4e4× at score scale 1000). The division by Σ_j P_ij
// (one more lane sum in the same pass) removes what a recomputed row's sum differs from 1 (a
// scale 1 + ε from the saved lse's rounding, ε ~ ulp(lse) in float64): without it that ε enters
// dS as −ε·P_ij·δ_i, 1e3–1e4× the reference's float64 error in dq at score scales 100–1000.
// Padding: P = 0 stays 0; a row with P = 0 throughout (no allowed key) gets dS = 0.
// With SHARED, X is X + c·Y: Y = dO·vᵀ shared by both maps, c the map's share of dO (λ or 1 − λ).
template <typename T, bool F, bool SHARED = false>
AMAD_AI void softmax_backward_rows(T* __restrict__ P, const T* __restrict__ X, int64_t n, int64_t L, int64_t ld,
                                   const T* __restrict__ Y = nullptr, T c = T(0)) {
  for (int64_t r = 0; r < n; ++r) {
    T* __restrict__ p = P + r * ld;
    const T* __restrict__ x = X + r * ld;
    const T* __restrict__ y = SHARED ? Y + r * ld : nullptr;
    T acc[W] = {}, mass[W] = {};
    for (int64_t j = 0; j < L; j += W)
      for (int64_t l = 0; l < W; ++l) {
        const T xv = SHARED ? madd<F>(c, y[j + l], x[j + l]) : x[j + l];
        acc[l] = madd<F>(p[j + l], xv, acc[l]), mass[l] += p[j + l];
      }
    const T m = lanes_sum(mass);
    const T delta = m > T(0) ? lanes_sum(acc) / m : T(0);  // an empty (masked) row: P = 0, dS = 0
    for (int64_t j = 0; j < L; j += W)
      for (int64_t l = 0; l < W; ++l) {
        const T xv = SHARED ? madd<F>(c, y[j + l], x[j + l]) : x[j + l];
        p[j + l] *= xv - delta;
      }
  }
}


// softmax_backward_rows<SHARED> for both maps at once when X = 0 (no kl gradients): dP is c·Y for
// each map (cA = λ, cG = 1 − λ), so one pass reads P^M, P^G and Y for both maps' sums (and, when
// dmix is given, adds Σ_ij (P^M − P^G)_ij·Y_ij to it), and a second writes both dS. The lane sums
// are those of the separate passes, in the same order; dS = P·(c·Y − δ) may be formed with one
// rounding where the separate passes took two (~1e-7 relative in float32 dq, dk).
template <typename T, bool F>
AMAD_AI void shared_softmax_backward_rows(T* __restrict__ PA, T* __restrict__ PG, const T* __restrict__ Y, int64_t n,
                                          int64_t L, int64_t ld, T cA, T cG, T* dmix) {
  for (int64_t r = 0; r < n; ++r) {
    T* __restrict__ pa = PA + r * ld;
    T* __restrict__ pg = PG + r * ld;
    const T* __restrict__ y = Y + r * ld;
    T accA[W] = {}, massA[W] = {}, accG[W] = {}, massG[W] = {}, dm[W] = {};
    for (int64_t j = 0; j < L; j += W)
      for (int64_t l = 0; l < W; ++l) {
        const T a = pa[j + l], g = pg[j + l], yv = y[j + l];
        accA[l] = madd<F>(a, cA * yv, accA[l]), massA[l] += a;
        accG[l] = madd<F>(g, cG * yv, accG[l]), massG[l] += g;
        if (dmix) dm[l] = madd<F>(a - g, yv, dm[l]);
      }
    if (dmix) *dmix += lanes_sum(dm);
    const T mA = lanes_sum(massA), mG = lanes_sum(massG);
    const T dA = mA > T(0) ? lanes_sum(accA) / mA : T(0), dG = mG > T(0) ? lanes_sum(accG) / mG : T(0);
    for (int64_t j = 0; j < L; j += W)
      for (int64_t l = 0; l < W; ++l) {
        const T yv = y[j + l];
        pa[j + l] *= cA * yv - dA;
        pg[j + l] *= cG * yv - dG;
      }
  }
}

// The small matrix products below keep a tile of the result in registers: GCC generic vectors
// (vector_size), lowered to zmm/ymm/xmm registers by each entry point's target.
template <typename T, int64_t N>
struct Vec {
  typedef T type __attribute__((vector_size(N * sizeof(T))));
};
template <typename T, int64_t N>
AMAD_AI typename Vec<T, N>::type vload(const T* p) {
  typename Vec<T, N>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T, int64_t N>
AMAD_AI void vstore(T* p, const typename Vec<T, N>::type& v) {
  std::memcpy(p, &v, sizeof(v));
}

// Lanes of a VB-byte vector (VB: the entry point's register width, 64 for AVX-512, 32 for AVX2,
// 16 for the baseline; wider generic vectors would be split badly); score rows are padded to a
// multiple of kPad columns, which the lane counts divide.
template <typename T, int64_t VB>
constexpr int64_t kLanes = VB / sizeof(T);

// Each tile holds RB result rows × NVEC vectors in registers: per step it loads NVEC vectors and
// RB broadcasts for RB·NVEC FMAs (with NVEC = 2 the FMAs, not the loads, set the pace).
// RB: 8 rows with 32 vector registers (AVX-512), 4 with 16 (AVX2, SSE).
template <int64_t VB>
constexpr int64_t kRows = VB == 64 ? 8 : 4;

// C rows [r0, r0+RB), columns [j0, j0+NVEC·NV) (+)= A (·×K) · BT (K×·, row stride ldb).
template <typename T, int64_t NV, bool Acc, int64_t RB, int64_t NVEC>
AMAD_AI void rowsT_tile(T* __restrict__ C, int64_t ldc, const T* __restrict__ A, const T* __restrict__ BT, int64_t r0,
                        int64_t j0, int64_t K, int64_t ldb) {
  using V = typename Vec<T, NV>::type;
  V acc[RB][NVEC];
  for (int64_t i = 0; i < RB; ++i)
    for (int64_t c = 0; c < NVEC; ++c) acc[i][c] = Acc ? vload<T, NV>(C + (r0 + i) * ldc + j0 + c * NV) : V{};
  for (int64_t d = 0; d < K; ++d) {
    V b[NVEC];
    for (int64_t c = 0; c < NVEC; ++c) b[c] = vload<T, NV>(BT + d * ldb + j0 + c * NV);
    for (int64_t i = 0; i < RB; ++i) {
      const T x = A[(r0 + i) * K + d];
      for (int64_t c = 0; c < NVEC; ++c) acc[i][c] += x * b[c];
    }
  }
  for (int64_t i = 0; i < RB; ++i)
    for (int64_t c = 0; c < NVEC; ++c) vstore<T, NV>(C + (r0 + i) * ldc + j0 + c * NV, acc[i][c]);
}
template <typename T, int64_t NV, bool Acc, int64_t RB>
AMAD_AI void rowsT_block(T* C, int64_t ldc, const T* A, const T* BT, int64_t r0, int64_t K, int64_t N,
                         int64_t ldb) {
  int64_t j0 = 0;
  for (; j0 + 2 * NV <= N; j0 += 2 * NV) rowsT_tile<T, NV, Acc, RB, 2>(C, ldc, A, BT, r0, j0, K, ldb);
  for (; j0 < N; j0 += NV) rowsT_tile<T, NV, Acc, RB, 1>(C, ldc, A, BT, r0, j0, K, ldb);
}
// C (R×N, row stride ldc) (+)= A (R×K) · BT (K×N, row stride ldb): score rows from transposed keys,
// N a multiple of the lane count (padded); N < ldb computes only the first N keys' columns.
template <typename T, int64_t VB, bool Acc = false>
AMAD_AI void gemm_rowsT(T* C, int64_t ldc, const T* A, const T* BT, int64_t R, int64_t K, int64_t N, int64_t ldb) {
  constexpr int64_t NV = kLanes<T, VB>, RB = kRows<VB>;
  int64_t r = 0;
  for (; r + RB <= R; r += RB) rowsT_block<T, NV, Acc, RB>(C, ldc, A, BT, r, K, N, ldb);
  for (; r < R; ++r) rowsT_block<T, NV, Acc, 1>(C, ldc, A, BT, r, K, N, ldb);
}

// C rows [r0, r0+RB), columns [d0, d0+NVEC·NV) = P (·×N, row stride ldp) · X (N×K).
template <typename T, int64_t NV, int64_t RB, int64_t NVEC>
AMAD_AI void rows_tile(T* __restrict__ C, const T* __restrict__ P, int64_t ldp, const T* __restrict__ X, int64_t r0,
                       int64_t d0, int64_t N, int64_t K) {
  using V = typename Vec<T, NV>::type;
  V acc[RB][NVEC];
  for (int64_t i = 0; i < RB; ++i)
    for (int64_t c = 0; c < NVEC; ++c) acc[i][c] = V{};
  for (int64_t j = 0; j < N; ++j) {
    V x[NVEC];
    for (int64_t c = 0; c < NVEC; ++c) x[c] = vload<T, NV>(X + j * K + d0 + c * NV);
    for (int64_t i = 0; i < RB; ++i) {
      const T p = P[(r0 + i) * ldp + j];
      for (int64_t c = 0; c < NVEC; ++c) acc[i][c] += p * x[c];
    }
  }
  for (int64_t i = 0; i < RB; ++i)
    for (int64_t c = 0; c < NVEC; ++c) vstore<T, NV>(C + (r0 + i) * K + d0 + c * NV, acc[i][c]);
}
template <typename T, int64_t NV, int64_t RB>
AMAD_AI void rows_block(T* C, const T* P, int64_t ldp, const T* X, int64_t r0, int64_t N, int64_t K) {
  int64_t d0 = 0;
  for (; d0 + 2 * NV <= K; d0 += 2 * NV) rows_tile<T, NV, RB, 2>(C, P, ldp, X, r0, d0, N, K);
  for (; d0 < K; d0 += NV) rows_tile<T, NV, RB, 1>(C, P, ldp, X, r0, d0, N, K);
}

// Y rows [j0, j0+JB), columns [d0, d0+NVEC·NV) += Pᵀ · X, P (R×·, row stride ldp), X (R×K): the
// key-side sums over the block's rows, in order.
template <typename T, int64_t NV, int64_t JB, int64_t NVEC>
AMAD_AI void tn_tile(T* __restrict__ Y, const T* __restrict__ P, int64_t ldp, const T* __restrict__ X, int64_t j0,
                     int64_t d0, int64_t R, int64_t K) {
  using V = typename Vec<T, NV>::type;
  V acc[JB][NVEC];
  for (int64_t i = 0; i < JB; ++i)
    for (int64_t c = 0; c < NVEC; ++c) acc[i][c] = vload<T, NV>(Y + (j0 + i) * K + d0 + c * NV);
  for (int64_t r = 0; r < R; ++r) {
    V x[NVEC];
    for (int64_t c = 0; c < NVEC; ++c) x[c] = vload<T, NV>(X + r * K + d0 + c * NV);
    for (int64_t i = 0; i < JB; ++i) {
      const T p = P[r * ldp + j0 + i];
      for (int64_t c = 0; c < NVEC; ++c) acc[i][c] += p * x[c];
    }
  }
  for (int64_t i = 0; i < JB; ++i)
    for (int64_t c = 0; c < NVEC; ++c) vstore<T, NV>(Y + (j0 + i) * K + d0 + c * NV, acc[i][c]);
}
template <typename T, int64_t NV, int64_t JB>
AMAD_AI void tn_block(T* Y, const T* P, int64_t ldp, const T* X, int64_t j0, int64_t R, int64_t K) {
  int64_t d0 = 0;
  for (; d0 + 2 * NV <= K; d0 += 2 * NV) tn_tile<T, NV, JB, 2>(Y, P, ldp, X, j0, d0, R, K);
  for (; d0 < K; d0 += NV) tn_tile<T, NV, JB, 1>(Y, P, ldp, X, j0, d0, R, K);
}

// Lane count for a head dim K (even): the widest of a register, 8, 4, 2 elements dividing K.
#define AMAD_BY_LANES(K, T, CALL)           \
  do {                                      \
    if ((K) % kLanes<T, VB> == 0) {         \
      constexpr int64_t NV = kLanes<T, VB>; \
      CALL;                                 \
    } else if ((K) % 8 == 0) {              \
      constexpr int64_t NV = 8;             \
      CALL;                                 \
    } else if ((K) % 4 == 0) {              \
      constexpr int64_t NV = 4;             \
      CALL;                                 \
    } else {                                \
      constexpr int64_t NV = 2;             \
      CALL;                                 \
    }                                       \
  } while (0)

// C (R×K) = P (R×N, row stride ldp) · X (N×K).
template <typename T, int64_t VB>
AMAD_AI void gemm_rows(T* C, const T* P, int64_t ldp, const T* X, int64_t R, int64_t N, int64_t K) {
  constexpr int64_t RB = kRows<VB>;
  AMAD_BY_LANES(K, T, ({
                  int64_t r = 0;
                  for (; r + RB <= R; r += RB) rows_block<T, NV, RB>(C, P, ldp, X, r, N, K);
                  for (; r < R; ++r) rows_block<T, NV, 1>(C, P, ldp, X, r, N, K);
                }));
}

// Y (N×K) += Pᵀ · X with P (R×N, row stride ldp), X (R×K).
template <typename T, int64_t VB>
AMAD_AI void gemm_tn_acc(T* Y, const T* P, int64_t ldp, const T* X, int64_t R, int64_t N, int64_t K) {
  constexpr int64_t JB = kRows<VB>;
  AMAD_BY_LANES(K, T, ({
                  int64_t j = 0;
                  for (; j + JB <= N; j += JB) tn_block<T, NV, JB>(Y, P, ldp, X, j, R, K);
                  for (; j < N; ++j) tn_block<T, NV, 1>(Y, P, ldp, X, j, R, K);
                }));
}

// Block products through a library GEMM instead of the micro-kernels above (float32 compute only):
// automask_cpu.cpp points these at ATen's cpublas::brgemm (MKL / oneDNN, which reach 160-185
// GFLOP/s on one core of the Intel Xeon at the kernels' tile shapes, against ~115 for the
// micro-kernels). Plain function pointers: this header stays free of ATen.
struct GemmLib {
  // C (M×N, row stride ldc) (+)= A (M×K, row stride lda) · B (K×N, row stride ldb), float32
  void (*f32)(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add, const float* A,
              const float* B, float* C);
  // the same with bfloat16 A (row-major) and B in row pairs ([K/2][N][2], see pack_pairs), float32 C:
  // computed on the 16-bit units (AMX or AVX-512-BF16), accumulating in float32
  void (*bf16)(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add, const uint16_t* A,
               const uint16_t* B, float* C);
  bool use_bf16;  // bfloat16 operands (bfloat16 inputs on a CPU with the units), else float32
};

// float32 → bfloat16, round to nearest even (finite inputs).
AMAD_AI uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// dst (rows×cols, row stride ldd) = bfloat16 of src (row stride lds).
AMAD_AI void cvt_rows(uint16_t* __restrict__ dst, int64_t ldd, const float* __restrict__ src, int64_t lds, int64_t rows,
                      int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * ldd + c] = to_bf16(src[r * lds + c]);
}

// dst (cols×rowsp, bfloat16) = srcᵀ of src (rows×cols, row stride lds), columns [rows, rowsp) zero.
AMAD_AI void cvt_transpose(uint16_t* __restrict__ dst, const float* __restrict__ src, int64_t lds, int64_t rows,
                           int64_t rowsp, int64_t cols) {
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rowsp; ++r) dst[c * rowsp + r] = r < rows ? to_bf16(src[r * lds + c]) : uint16_t(0);
}

// The B operand of GemmLib::bf16: src (K×N, row stride lds) as bfloat16 row pairs [Kp/2][N][2]
// (rows [K, Kp) zero, Kp even): the layout the 16-bit dot-product units read.
AMAD_AI void pack_pairs(uint16_t* __restrict__ dst, const float* __restrict__ src, int64_t lds, int64_t K, int64_t Kp,
                        int64_t N) {
  for (int64_t k2 = 0; k2 < Kp / 2; ++k2) {
    const float* __restrict__ r0 = src + 2 * k2 * lds;
    const float* __restrict__ r1 = r0 + lds;
    uint16_t* __restrict__ d = dst + 2 * k2 * N;
    if (2 * k2 + 1 < K) {
      for (int64_t n = 0; n < N; ++n) d[2 * n] = to_bf16(r0[n]), d[2 * n + 1] = to_bf16(r1[n]);
    } else if (2 * k2 < K) {
      for (int64_t n = 0; n < N; ++n) d[2 * n] = to_bf16(r0[n]), d[2 * n + 1] = 0;
    } else {
      for (int64_t n = 0; n < 2 * N; ++n) d[n] = 0;
    }
  }
}

#ifdef AMAD_AVX512_TRANSPOSE
// dst (cols×rows, row stride ldd) = srcᵀ for float32 with AVX-512: 16×16 tiles transposed in
// registers (unpack pairs, then quads, then 128-bit lanes twice), the edges element by element. The
// scalar loop below moved ~1 element per 3 cycles at the kernels' 4 KiB-aliased strides (L = 1024):
// half of a causal backward's fixed cost went into its transposes. The all-ones maskz forms are
// the plain shuffles; GCC 12 warns about the plain forms' undefined pass-through operand.
__attribute__((target("avx512f"))) inline void transpose_f32_avx512(float* __restrict__ dst, int64_t ldd,
                                                                    const float* __restrict__ src, int64_t lds,
                                                                    int64_t rows, int64_t cols) {
  const int64_t R16 = rows / 16 * 16, C16 = cols / 16 * 16;
  for (int64_t c0 = 0; c0 < C16; c0 += 16)
    for (int64_t r0 = 0; r0 < R16; r0 += 16) {
      __m512 x[16], t[16];
      for (int i = 0; i < 16; ++i) x[i] = _mm512_loadu_ps(src + (r0 + i) * lds + c0);
      for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_maskz_unpacklo_ps(0xffff, x[i], x[i + 1]);
        t[i + 1] = _mm512_maskz_unpackhi_ps(0xffff, x[i], x[i + 1]);
      }
      for (int i = 0; i < 16; i += 4) {
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        x[i] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xff, a, c));
        x[i + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xff, a, c));
        x[i + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xff, b, d));
        x[i + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xff, b, d));
      }
      for (int i = 0; i < 4; ++i) {
        t[i] = _mm512_maskz_shuffle_f32x4(0xffff, x[i], x[i + 4], 0x88);
        t[i + 4] = _mm512_maskz_shuffle_f32x4(0xffff, x[i], x[i + 4], 0xdd);
        t[i + 8] = _mm512_maskz_shuffle_f32x4(0xffff, x[i + 8], x[i + 12], 0x88);
        t[i + 12] = _mm512_maskz_shuffle_f32x4(0xffff, x[i + 8], x[i + 12], 0xdd);
      }
      for (int i = 0; i < 8; ++i) {
        x[i] = _mm512_maskz_shuffle_f32x4(0xffff, t[i], t[i + 8], 0x88);
        x[i + 8] = _mm512_maskz_shuffle_f32x4(0xffff, t[i], t[i + 8], 0xdd);
      }
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(dst + (c0 + i) * ldd + r0, x[i]);
    }
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = (c < C16 ? R16 : 0); r < rows; ++r) dst[c * ldd + r] = src[r * lds + c];
}
#endif

// dst (cols×rows, row stride ldd) = srcᵀ, src (rows×cols, row stride lds); VB the vector width of
// the instruction set compiled for (64: AVX-512).
template <typename T, int64_t VB>
AMAD_AI void transpose_to(T* __restrict__ dst, int64_t ldd, const T* __restrict__ src, int64_t lds, int64_t rows,
                          int64_t cols) {
#ifdef AMAD_AVX512_TRANSPOSE
  if constexpr (VB == 64 && std::is_same_v<T, float>) return transpose_f32_avx512(dst, ldd, src, lds, rows, cols);
#endif
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < rows; ++r) dst[c * ldd + r] = src[r * lds + c];
}

inline int64_t even_up(int64_t n) { return (n + 1) / 2 * 2; }

// What the forward and the backward both read: q, k, v (B, H, L, D) with any strides; cos, sin
// (H, L, P) and lam (H) contiguous; the shapes, R query rows per row block, nblk row blocks.
template <typename T>
struct CallInputs {
  const T *q, *k, *v;
  int64_t sq[4], sk[4], sv[4];
  const T *cos, *sin, *lam;
  int64_t B, H, L, D, R, nblk;
  T scale;
  const GemmLib* lib;  // null: the micro-kernels (always so for float64)
  // Masks (spec: masked keys take part in neither map nor the divergence). key_blocked: B×L bytes,
  // 1 = key padding (null: none); causal: key j > i is not allowed for query row i;
  // first_allowed: per batch, the first key not padded (L if none), for the empty-row test;
  // key_end: per batch, one past the last key not padded (at least 1), the keys any row computes.
  const uint8_t* key_blocked;
  bool causal;
  const int64_t* first_allowed;
  const int64_t* key_end;
  // attn_bias: the additive bias of the attn_mask, (G, L, L) with G = 1 or B·H, added to both maps'
  // scaled scores; −inf = key not allowed (null: none). bias_bh_stride: 0 (G = 1) or L·L.
  // row_empty: with a bias, B·H·L bytes, 1 = the query row has no allowed key under all masks.
  const T* attn_bias;
  int64_t bias_bh_stride;
  const uint8_t* row_empty;
};

// Whether the call masks anything (then masked scores are overwritten, empty rows zeroed).
template <typename T>
AMAD_AI bool any_mask(const CallInputs<T>& a) {
  return a.key_blocked != nullptr || a.causal || a.attn_bias != nullptr;
}

// The keys a row block [i0, i0+n) of batch b computes: all L, under causal the first i0 + n, and
// none past the batch's last unpadded key (the rest of the row is skipped, not computed).
template <typename T>
AMAD_AI int64_t keys_for_block(const CallInputs<T>& a, int64_t b, int64_t i0, int64_t n) {
  int64_t nk = a.causal && i0 + n < a.L ? i0 + n : a.L;
  if (a.key_end && a.key_end[b] < nk) nk = a.key_end[b];
  return nk;
}

// The keys query row i's per-entry passes (softmax, divergence) run over, of the block's nk: under
// causal the first i + 1 (the block's columns after them hold masked scores: skipped, their
// probabilities set to 0 by zero_row_tail).
template <typename T>
AMAD_AI int64_t keys_for_row(const CallInputs<T>& a, int64_t i, int64_t nk) {
  return a.causal && i + 1 < nk ? i + 1 : nk;
}

// Zeroes columns [padded(nr), end) of a probability row whose per-entry pass ran over nr keys (it
// wrote up to padded(nr), 0 past nr): the block's products and passes read up to padded(nk).
template <typename T>
AMAD_AI void zero_row_tail(T* __restrict__ p, int64_t nr, int64_t end) {
  for (int64_t j = padded(nr); j < end; ++j) p[j] = T(0);
}

// Whether query row i of (b, h) = bh has no allowed key (its outputs, kl terms and gradients are 0).
template <typename T>
AMAD_AI bool empty_row(const CallInputs<T>& a, int64_t bh, int64_t b, int64_t i) {
  if (a.row_empty) return a.row_empty[bh * a.L + i] != 0;
  if (!a.key_blocked) return false;  // causal alone always allows key 0 ≤ i
  return a.first_allowed[b] > (a.causal ? i : a.L - 1);
}

// The score a masked key gets: finite, so that differences of two such scores stay finite, and so
// far below any real score that exp(score − row max) is exactly 0 and its log-probability gap
// vanishes (S − hi rounds to S for any |hi| < ulp(S)).
template <typename T>
constexpr T kMaskedScore = -std::numeric_limits<T>::max() / 4;

// Adds the bias row (null: none) to the first nk entries of both score rows of query row i
// (batch b) and overwrites the masked ones with kMaskedScore: padded keys, under causal the keys
// after i, and keys whose bias is −inf.
template <typename T>
AMAD_AI void mask_score_rows(const CallInputs<T>& a, int64_t b, int64_t i, int64_t nk, const T* __restrict__ bias,
                             T* __restrict__ sa, T* __restrict__ sg) {
  const uint8_t* __restrict__ blocked = a.key_blocked ? a.key_blocked + b * a.L : nullptr;
  const int64_t last = a.causal ? i : a.L - 1;  // the last key the row may attend
  const T masked = kMaskedScore<T>;
  if (bias) {
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < nk; ++j) {
      const bool off = (blocked && blocked[j] != 0) || j > last || bias[j] == ninf;
      sa[j] = off ? masked : sa[j] + bias[j];
      sg[j] = off ? masked : sg[j] + bias[j];
    }
  } else if (blocked) {
    for (int64_t j = 0; j < nk; ++j) {
      const bool off = blocked[j] != 0 || j > last;
      sa[j] = off ? masked : sa[j];
      sg[j] = off ? masked : sg[j];
    }
  } else {
    for (int64_t j = last + 1; j < nk; ++j) sa[j] = sg[j] = masked;
  }
}

// One forward call: outputs contiguous (B, H, L, D) or (B, H, L). Work units: task t covers
// (b, h) = t / nblk and rows [(t % nblk)·R, +R).
// lse_local, lse_global are float64 whatever T: the backward splits them into hi + lo (split_lse)
// to recompute log P at full precision.
template <typename T>
struct FwdArgs : CallInputs<T> {
  T *out, *out_local, *out_global, *kl_local, *kl_global;
  double *lse_local, *lse_global;
  bool need_divergence;
  // false: out_local, out_global are not asked for (null): out = (λ·P^M + (1 − λ)·P^G)·v, the two
  // maps mixed before their one product with v instead of two products mixed after
  bool need_branches;
};

// One backward call. Gradients may be null (zero). dq (B, H, L, D) is written; the key
// side: with nsplit == 1 each task finishes its (b, h) and writes dk, dv (B, H, L, D) itself; else
// it goes to per-split workspaces dkr/dkg/dv_ws (B·H·nsplit, L, D), summed later in a fixed order;
// dc, ds (B, H, L, P) get the q-side modulation gradients; dmix_ws (B·H·nsplit) the dmix partials.
template <typename T>
struct BwdArgs : CallInputs<T> {
  // contiguous, for dmix (δ comes from the recomputed rows); null when the forward did not form the
  // branches (then no branch has a gradient, and dmix comes from the shared dO·vᵀ instead)
  const T *out_local, *out_global;
  const double *lse_local, *lse_global;  // float64 (see FwdArgs)
  const T *g_out, *g_out_local, *g_out_global, *g_kl_local, *g_kl_global;  // contiguous or null
  T *dq, *dk, *dv, *dkr_ws, *dkg_ws, *dv_ws, *dc, *ds, *dmix_ws;
  int64_t nsplit, blocks_per_split;
};

// Per-thread scratch for a (b, h): rotated and plain keys, transposed (D×Lp, zero-padded to
// Lp = padded(L) columns) for scores and row-major (L×D) for the key-side products; v both ways.
template <typename T>
struct KeyCache {
  T *kT_rot, *kT, *k_rot, *k_plain, *v_rows, *vT;
};

// The rotation of spec §1.2 on one row, split in halves x = (x1, x2): y = R(c, s)·x. Each loop
// over pairs lives in a function of its own so its restrict parameters let it vectorise (GCC
// ignores restrict on block-scope pointers and gives up on the many runtime alias checks).
template <typename T>
AMAD_AI void rotate_row(const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ c,
                        const T* __restrict__ s, T* __restrict__ y1, T* __restrict__ y2, int64_t P) {
  for (int64_t p = 0; p < P; ++p) {
    y1[p] = x1[p] * c[p] - x2[p] * s[p];
    y2[p] = x1[p] * s[p] + x2[p] * c[p];
  }
}

// Its chain rule: given the gradient g of the rotated row and b of the unrotated one (the plain
// map's), y = scale·(b + R(c, s)ᵀ·g); and the modulation gradients of the row x that was rotated,
// dc = g1·x1 + g2·x2, ds = g2·x1 − g1·x2, added to dc, ds when Acc, else stored.
template <typename T, bool Acc>
AMAD_AI void rotate_row_backward(const T* __restrict__ g1, const T* __restrict__ g2, const T* __restrict__ b1,
                                 const T* __restrict__ b2, const T* __restrict__ x1, const T* __restrict__ x2,
                                 const T* __restrict__ c, const T* __restrict__ s, T scale, T* __restrict__ y1,
                                 T* __restrict__ y2, T* __restrict__ dc, T* __restrict__ ds, int64_t P) {
  for (int64_t p = 0; p < P; ++p) {
    y1[p] = scale * (b1[p] + g1[p] * c[p] + g2[p] * s[p]);
    y2[p] = scale * (b2[p] - g1[p] * s[p] + g2[p] * c[p]);
    const T vc = g1[p] * x1[p] + g2[p] * x2[p], vs = g2[p] * x1[p] - g1[p] * x2[p];
    dc[p] = Acc ? dc[p] + vc : vc;
    ds[p] = Acc ? ds[p] + vs : vs;
  }
}

// Load rows [i0, i0+n) of x (b, h) into rows (n×D, plain) and, if rot != null, rotated by the
// modulation at each row's own position (spec §1.2); both multiplied by mul.
template <typename T>
AMAD_AI void load_rows(const T* __restrict__ x, const int64_t* st, int64_t b, int64_t h, int64_t i0, int64_t n,
                       int64_t D, int64_t L, const T* __restrict__ cos, const T* __restrict__ sin, T mul,
                       T* __restrict__ plain, T* __restrict__ rot) {
  const int64_t P = D / 2;
  const T* base = x + b * st[0] + h * st[1];
  for (int64_t r = 0; r < n; ++r) {
    const T* row = base + (i0 + r) * st[2];
    T* pr = plain + r * D;
    if (st[3] == 1) {  // contiguous rows: a loop the compiler vectorises
      for (int64_t d = 0; d < D; ++d) pr[d] = row[d] * mul;
    } else {
      for (int64_t d = 0; d < D; ++d) pr[d] = row[d * st[3]] * mul;
    }
    if (rot) {
      const int64_t m = (h * L + i0 + r) * P;
      rotate_row(pr, pr + P, cos + m, sin + m, rot + r * D, rot + r * D + P, P);
    }
  }
}

// dst (cols×ld) = srcᵀ, src (rows×cols); columns [rows, ld) of dst are zero padding.
template <typename T, int64_t VB>
AMAD_AI void transpose_pad(T* __restrict__ dst, const T* __restrict__ src, int64_t rows, int64_t cols, int64_t ld) {
  transpose_to<T, VB>(dst, ld, src, cols, rows, cols);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = rows; r < ld; ++r) dst[c * ld + r] = T(0);
}

template <typename T, int64_t VB>
AMAD_AI void fill_key_cache(const KeyCache<T>& kc, const T* k, const int64_t* sk, const T* v, const int64_t* sv,
                            int64_t b, int64_t h, int64_t L, int64_t D, const T* cos, const T* sin, bool need_vT) {
  load_rows(k, sk, b, h, 0, L, D, L, cos, sin, T(1), kc.k_plain, kc.k_rot);
  load_rows<T>(v, sv, b, h, 0, L, D, L, nullptr, nullptr, T(1), kc.v_rows, nullptr);
  const int64_t Lp = padded(L);
  transpose_pad<T, VB>(kc.kT_rot, kc.k_rot, L, D, Lp);
  transpose_pad<T, VB>(kc.kT, kc.k_plain, L, D, Lp);
  if (need_vT) transpose_pad<T, VB>(kc.vT, kc.v_rows, L, D, Lp);
}

// Key side of one (b, h) from its summed dk̃ (dkr), dk (dkg) and dv (dvs), all L×D: un-rotate dk̃
// at each key's own position into dk, copy dv (unless dvs is already the output's), add the
// key-side dc, ds (spec §1.2 chain rule).
template <typename T>
AMAD_AI void finish_keys(const BwdArgs<T>& a, int64_t bh, const T* dkr, const T* dkg, const T* dvs, const T* kplain) {
  const int64_t L = a.L, D = a.D, P = D / 2, h = bh % a.H;
  for (int64_t j = 0; j < L; ++j) {
    const int64_t m = (h * L + j) * P, o = (bh * L + j) * D, g = j * D;
    rotate_row_backward<T, true>(dkr + g, dkr + g + P, dkg + g, dkg + g + P, kplain + g, kplain + g + P, a.cos + m,
                                 a.sin + m, T(1), a.dk + o, a.dk + o + P, a.dc + (bh * L + j) * P,
                                 a.ds + (bh * L + j) * P, P);
    if (dvs != a.dv + bh * L * D) std::memcpy(a.dv + o, dvs + g, D * sizeof(T));
  }
}

// Both maps' softmax of one query row, and its two kl terms (spec §1.3, §1.5): ea, eg get
// exp(score − row max) (0 in the padding); mx, ls the row maxima and log row sums (lse = mx + ls,
// kept apart: see log_prob), inv the 1/sums; kl the two divergences when asked (kl == nullptr:
// skipped), as Σ_j p_j·gap_j in a second pass, with neither the probabilities nor the per-entry
// kl contributions stored. Sums run in W fixed lanes.
// IN_PLACE (no kl terms, which read the scores again): the exponentials overwrite the score rows
// sa, sg (ea, eg unused), so a row block keeps two R×L buffers in cache instead of four: at L = 2048
// that took the forward 7–11 % faster on the Intel Xeon (2 MiB of L2 per core).
template <typename T, bool F, bool IN_PLACE = false>
AMAD_AI void softmax_kl_row(T* __restrict__ sa, T* __restrict__ sg, T* __restrict__ ea_, T* __restrict__ eg_,
                            int64_t L, T* mx, T* ls, T* inv, T* kl) {
  T* __restrict__ ea = IN_PLACE ? sa : ea_;  // when IN_PLACE, ea_ and eg_ are never read or written
  T* __restrict__ eg = IN_PLACE ? sg : eg_;
  const T mA = row_max(sa, L), mG = row_max(sg, L);
  T accA[W] = {}, accG[W] = {};
  for (int64_t j = 0; j < L; j += W)
    for (int64_t l = 0; l < W; ++l) {
      const bool in = j + l < L;
      const T a = vexp<F>(sa[j + l] - mA), g = vexp<F>(sg[j + l] - mG);
      accA[l] += (ea[j + l] = in ? a : T(0));
      accG[l] += (eg[j + l] = in ? g : T(0));
    }
  const T sA = lanes_sum(accA), sG = lanes_sum(accG);
  const T lA = std::log(sA), lG = std::log(sG);
  mx[0] = mA, mx[1] = mG, ls[0] = lA, ls[1] = lG;
  inv[0] = T(1) / sA, inv[1] = T(1) / sG;
  if (IN_PLACE || !kl) return;
  const T ia = inv[0], ig = inv[1];
  T kA[W] = {}, kG[W] = {};
  for (int64_t j = 0; j < L; j += W)  // padding: p = 0 and a finite gap, nothing added
    for (int64_t l = 0; l < W; ++l) {
      const T pa = ea[j + l] * ia, pg = eg[j + l] * ig;
      T gM, gG;
      kl_gaps<T, F>(log_prob(sa[j + l], mA, lA) - log_prob(sg[j + l], mG, lG), gM, gG);  // d
      kA[l] = madd<F>(pa, gM, kA[l]);
      kG[l] = madd<F>(pg, gG, kG[l]);
    }
  // A KL is ≥ 0; a sum of terms of both signs may round to a few ulp below it when P^M ≈ P^G.
  const T sumA = lanes_sum(kA), sumG = lanes_sum(kG);
  kl[0] = sumA > T(0) ? sumA : T(0), kl[1] = sumG > T(0) ? sumG : T(0);
}

// The score rows of both maps for query rows [i0, i0 + n) of (b, h) = bh: SA = q̃·k̃ᵀ (rotated),
// SG = q·kᵀ (Lp columns, the first nk computed), the attn_mask's bias added and masked entries
// overwritten. The forward and the backward's recomputation both call this, so the backward sees
// the forward's scores exactly (same operands, same calls): through the library's bfloat16 products
// (q rows converted into rows_b), its float32 ones, or the kernels' own micro-kernel.
template <typename T, int64_t VB>
AMAD_AI void block_scores(const CallInputs<T>& a, const GemmLib* lib, bool b16, const KeyCache<T>& kc,
                          const uint16_t* kTr_b, const uint16_t* kT_b, const T* qr, const T* qg, uint16_t* rows_b,
                          int64_t bh, int64_t b, int64_t i0, int64_t n, int64_t nk, T* SA, T* SG) {
  const int64_t D = a.D, Lp = padded(a.L), nkp = padded(nk);
  if constexpr (std::is_same_v<T, float>) {
    if (b16) {
      cvt_rows(rows_b, D, qr, D, n, D);
      lib->bf16(n, nkp, D, D, Lp, Lp, false, rows_b, kTr_b, SA);
      cvt_rows(rows_b, D, qg, D, n, D);
      lib->bf16(n, nkp, D, D, Lp, Lp, false, rows_b, kT_b, SG);
    } else if (lib) {
      lib->f32(n, nkp, D, D, Lp, Lp, false, qr, kc.kT_rot, SA);
      lib->f32(n, nkp, D, D, Lp, Lp, false, qg, kc.kT, SG);
    }
  }
  if (!lib) {
    gemm_rowsT<T, VB>(SA, Lp, qr, kc.kT_rot, n, D, nkp, Lp);
    gemm_rowsT<T, VB>(SG, Lp, qg, kc.kT, n, D, nkp, Lp);
  }
  if (any_mask(a)) {
    const T* bias = a.attn_bias ? a.attn_bias + bh * a.bias_bh_stride : nullptr;
    for (int64_t r = 0; r < n; ++r)
      mask_score_rows(a, b, i0 + r, nk, bias ? bias + (i0 + r) * a.L : nullptr, SA + r * Lp, SG + r * Lp);
  }
}

// C (n×D, row stride D) = P (n×nk, row stride Lp, zero up to padded(nk)) · v for a row block:
// through the library's bfloat16 products (P converted into p_b, v packed in v_b), its float32
// ones, or the micro-kernel.
template <typename T, int64_t VB>
AMAD_AI void probs_times_v(const GemmLib* lib, bool b16, const KeyCache<T>& kc, const uint16_t* v_b, uint16_t* p_b,
                           const T* P, int64_t n, int64_t nk, int64_t Lp, int64_t D, T* C) {
  if constexpr (std::is_same_v<T, float>) {
    if (b16) {
      const int64_t nkp = padded(nk);
      cvt_rows(p_b, Lp, P, Lp, n, nkp);
      lib->bf16(n, D, nkp, Lp, D, D, false, p_b, v_b, C);
      return;
    }
    if (lib) {
      lib->f32(n, D, nk, Lp, D, D, false, P, kc.v_rows, C);
      return;
    }
  }
  gemm_rows<T, VB>(C, P, Lp, kc.v_rows, n, nk, D);
}

// Forward for tasks [t0, t1) (spec §1.3–1.5).
template <typename T, bool F, int64_t VB>
AMAD_AI void forward_tasks(const FwdArgs<T>& a, int64_t t0, int64_t t1, T* work) {
  const int64_t L = a.L, D = a.D, R = a.R, Lp = padded(L);
  KeyCache<T> kc{work, work + Lp * D, work + 2 * Lp * D, work + 2 * Lp * D + L * D, work + 2 * Lp * D + 2 * L * D,
                 nullptr};
  T* qg = work + 2 * Lp * D + 3 * L * D;  // R×D plain q · scale
  T* qr = qg + R * D;                      // R×D rotated q · scale
  T* SA = qr + R * D;                      // R×Lp local scores
  T* SG = SA + R * Lp;
  // exp(score − max): their own buffers when the kl terms read the scores after, else the scores'
  T* EA = a.need_divergence ? SG + R * Lp : SA;
  T* EG = a.need_divergence ? SG + 2 * R * Lp : SG;
  T* oM = SG + 3 * R * Lp;  // R×D
  T* oG = oM + R * D;
  T* stat = oG + R * D;  // invA, invG: 2R (of 4R)
  T *invA = stat, *invG = stat + R;
  // GemmLib with bfloat16 operands: packed keys and values per (b, h), converted rows per block
  uint16_t* kTr_b = reinterpret_cast<uint16_t*>(stat + 4 * R);  // D×Lp row pairs
  uint16_t* kT_b = kTr_b + D * Lp;
  uint16_t* v_b = kT_b + D * Lp;  // Lp×D row pairs
  uint16_t* q_b = v_b + Lp * D;   // R×D
  uint16_t* e_b = q_b + R * D;    // R×Lp
  const GemmLib* lib = std::is_same_v<T, float> ? a.lib : nullptr;
  const bool b16 = lib && lib->use_bf16;
  int64_t cached = -1;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t bh = t / a.nblk, b = bh / a.H, h = bh % a.H;
    const int64_t i0 = (t % a.nblk) * R;
    const int64_t n = (L - i0) < R ? (L - i0) : R;
    const int64_t nk = keys_for_block(a, b, i0, n), nkp = padded(nk);  // keys this block computes
    if (bh != cached) {
      fill_key_cache<T, VB>(kc, a.k, a.sk, a.v, a.sv, b, h, L, D, a.cos, a.sin, false);
      if constexpr (std::is_same_v<T, float>)
        if (b16) {
          pack_pairs(kTr_b, kc.kT_rot, Lp, D, D, Lp);
          pack_pairs(kT_b, kc.kT, Lp, D, D, Lp);
          pack_pairs(v_b, kc.v_rows, D, L, Lp, D);
        }
      cached = bh;
    }
    load_rows(a.q, a.sq, b, h, i0, n, D, L, a.cos, a.sin, a.scale, qg, qr);
    block_scores<T, VB>(a, lib, b16, kc, kTr_b, kT_b, qr, qg, q_b, bh, b, i0, n, nk, SA, SG);
    const bool masked = any_mask(a);
    const int64_t row0 = bh * L + i0;  // index of the block's first row in (B, H, L)
    for (int64_t r = 0; r < n; ++r) {
      T mx[2], ls[2], inv[2], kl[2] = {};
      const int64_t nr = keys_for_row(a, i0 + r, nk);
      if (a.need_divergence)
        softmax_kl_row<T, F>(SA + r * Lp, SG + r * Lp, EA + r * Lp, EG + r * Lp, nr, mx, ls, inv, kl);
      else
        softmax_kl_row<T, F, true>(SA + r * Lp, SG + r * Lp, nullptr, nullptr, nr, mx, ls, inv, nullptr);
      zero_row_tail(EA + r * Lp, nr, nkp);
      zero_row_tail(EG + r * Lp, nr, nkp);
      if (masked && empty_row(a, bh, b, i0 + r)) inv[0] = inv[1] = kl[0] = kl[1] = T(0);  // zeros, not NaN
      invA[r] = inv[0], invG[r] = inv[1];
      // lse = max + log(sum) summed in float64, so that the backward gets both parts back
      a.lse_local[row0 + r] = static_cast<double>(mx[0]) + static_cast<double>(ls[0]);
      a.lse_global[row0 + r] = static_cast<double>(mx[1]) + static_cast<double>(ls[1]);
      if (a.need_divergence) a.kl_local[row0 + r] = kl[0], a.kl_global[row0 + r] = kl[1];
    }
    const T lam = a.lam[h];
    if (!a.need_branches) {
      for (int64_t r = 0; r < n; ++r) {
        const T ca = lam * invA[r], cg = (T(1) - lam) * invG[r];
        T* __restrict__ ea = EA + r * Lp;
        const T* __restrict__ eg = EG + r * Lp;
        for (int64_t j = 0; j < nkp; ++j) ea[j] = madd<F>(ca, ea[j], cg * eg[j]);
      }
      probs_times_v<T, VB>(lib, b16, kc, v_b, e_b, EA, n, nk, Lp, D, a.out + row0 * D);
      continue;
    }
    probs_times_v<T, VB>(lib, b16, kc, v_b, e_b, EA, n, nk, Lp, D, oM);
    probs_times_v<T, VB>(lib, b16, kc, v_b, e_b, EG, n, nk, Lp, D, oG);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t o = (row0 + r) * D;
      const T *__restrict__ m_in = oM + r * D, *__restrict__ g_in = oG + r * D;
      T *__restrict__ m_out = a.out_local + o, *__restrict__ g_out = a.out_global + o, *__restrict__ out = a.out + o;
      const T ia = invA[r], ig = invG[r];
      for (int64_t d = 0; d < D; ++d) {
        const T m = m_in[d] * ia, g = g_in[d] * ig;
        m_out[d] = m;
        g_out[d] = g;
        out[d] = lam * m + (T(1) - lam) * g;
      }
    }
  }
}

template <typename T>
constexpr int64_t forward_work_size(int64_t L, int64_t D, int64_t R) {
  return 2 * padded(L) * D + 3 * L * D + 4 * R * D + 4 * R * padded(L) + 4 * R +
         (3 * padded(L) * D + R * D + R * padded(L)) / 2 + 16;  // + GemmLib's bfloat16 buffers
}

// One query row of the backward: pa, pg get P^M, P^G from the saved log-sum-exps (each split
// hi + lo, see log_prob; 0 in the padding); with KL the score rows xa, xg then take
// dkl·(log P − log M) (ka, kg: the rows' kl gradients), the part of dP that the divergences add;
// without, 0. IN_PLACE (no KL; for a caller that never reads X again): P overwrites the score rows
// xa, xg.
template <typename T, bool F, bool KL, bool IN_PLACE = false>
AMAD_AI void probs_and_gaps_row(T* __restrict__ xa, T* __restrict__ xg, T* __restrict__ pa_, T* __restrict__ pg_,
                                int64_t L, T hiA, T loA, T hiG, T loG, T ka, T kg) {
  static_assert(!IN_PLACE || !KL, "in place, the score rows become the probabilities");
  T* __restrict__ pa = IN_PLACE ? xa : pa_;  // when IN_PLACE, pa_ and pg_ are never read or written
  T* __restrict__ pg = IN_PLACE ? xg : pg_;
  for (int64_t j = 0; j < L; j += W)
    for (int64_t l = 0; l < W; ++l) {
      const bool in = j + l < L;
      const T la = log_prob(xa[j + l], hiA, loA), lg = log_prob(xg[j + l], hiG, loG);
      const T ea = vexp<F>(la), eg = vexp<F>(lg);
      T gM = 0, gG = 0;
      if constexpr (KL) kl_gaps<T, F>(la - lg, gM, gG);
      pa[j + l] = in ? ea : T(0);
      pg[j + l] = in ? eg : T(0);
      if constexpr (!IN_PLACE) {  // in place, xa and xg now hold P
        xa[j + l] = ka * gM;
        xg[j + l] = kg * gG;
      }
    }
  // In float64 the saved lse has no spare bits (split_lse's lo is 0): its rounding, ulp(lse)/2,
  // scales the whole row by 1 + ε (ε ~ 1e-12 at |A| ~ 1e4), which dv = Pᵀ dO would carry 1000× over
  // the reference's error. Renormalising the row by its own sum removes it. (In float, hi + lo
  // keeps ε ~ 2^-48·|lse|, far below float's rounding: not needed.)
  if constexpr (std::is_same_v<T, double>) {
    T sA[W] = {}, sG[W] = {};
    for (int64_t j = 0; j < L; j += W)
      for (int64_t l = 0; l < W; ++l) sA[l] += pa[j + l], sG[l] += pg[j + l];
    const T iA = T(1) / lanes_sum(sA), iG = T(1) / lanes_sum(sG);
    for (int64_t j = 0; j < L; j += W)
      for (int64_t l = 0; l < W; ++l) pa[j + l] *= iA, pg[j + l] *= iG;
  }
}

// The backward's scratch for dv_and_dp: xT (D×2R floats) a transposed row block, dvT the
// transposed dv accumulator of the library products; the bfloat16 copies of vᵀ (vT_b, packed), a
// row block (x_b), its transpose (xT_b) and of probability rows (p_b).
template <typename T>
struct ProductScratch {
  T *xT, *dvT;
  const uint16_t* vT_b;
  uint16_t *x_b, *xT_b, *p_b;
};

// The products of one map with its upstream gradient dO for a row block, over the block's nk keys:
// dv += Pᵀ·dO, then X (+)= dO·vᵀ (dP: added when acc, stored when not). P is read before X is
// written, so X may be P's own buffer (the shared-dO path's YB: the mixed map, then dO·vᵀ). Through
// the library's bfloat16 products (into s.dvT), its float32 ones (into s.dvT), or the
// micro-kernels (into dv).
template <typename T, int64_t VB>
AMAD_AI void dv_and_dp(const GemmLib* lib, bool b16, const KeyCache<T>& kc, const ProductScratch<T>& s, const T* dO,
                       const T* P, T* X, bool acc, int64_t n, int64_t nk, int64_t Lp, int64_t Rp, int64_t D, T* dv) {
  const int64_t nkp = padded(nk);
  if constexpr (std::is_same_v<T, float>) {
    if (b16) {
      cvt_transpose(s.xT_b, dO, D, n, Rp, D);
      pack_pairs(s.p_b, P, Lp, n, Rp, nkp);
      lib->bf16(D, nkp, Rp, Rp, nkp, Lp, true, s.xT_b, s.p_b, s.dvT);
      cvt_rows(s.x_b, D, dO, D, n, D);
      lib->bf16(n, nkp, D, D, Lp, Lp, acc, s.x_b, s.vT_b, X);
      return;
    }
    if (lib) {
      transpose_to<T, VB>(s.xT, n, dO, D, n, D);
      lib->f32(D, nkp, n, n, Lp, Lp, true, s.xT, P, s.dvT);
      lib->f32(n, nkp, D, D, Lp, Lp, acc, dO, kc.vT, X);
      return;
    }
  }
  gemm_tn_acc<T, VB>(dv, P, Lp, dO, n, nk, D);
  if (acc)
    gemm_rowsT<T, VB, true>(X, Lp, dO, kc.vT, n, D, nkp, Lp);
  else
    gemm_rowsT<T, VB>(X, Lp, dO, kc.vT, n, D, nkp, Lp);
}

// Backward for tasks [t0, t1): task t covers (b, h) = t / nsplit and the blocks of split t % nsplit.
// Recomputes both probability maps from the saved log-sum-exps (FlashAttention-2 style, row blocks).
template <typename T, bool F, int64_t VB>
AMAD_AI void backward_tasks(const BwdArgs<T>& a, int64_t t0, int64_t t1, T* work) {
  const int64_t L = a.L, D = a.D, R = a.R, P = D / 2, Lp = padded(L);
  KeyCache<T> kc{work,         work + Lp * D,         work + 2 * Lp * D, work + 2 * Lp * D + L * D,
                 work + 2 * Lp * D + 2 * L * D, work + 2 * Lp * D + 3 * L * D};
  T* qg = work + 3 * Lp * D + 3 * L * D;
  T* qr = qg + R * D;
  T* dOM = qr + R * D;
  T* dOG = dOM + R * D;
  T* dqr = dOG + R * D;
  T* dqg = dqr + R * D;
  T* XA = dqg + R * D;  // scores, then dP
  T* XG = XA + R * Lp;
  T* gkA = XG + 3 * R * Lp;  // per row: the kl gradients of each map (R each)
  T* gkG = gkA + R;
  // GemmLib: the key side accumulates transposed, dk̃ᵀ, dkᵀ, dvᵀ (D×Lp) += xᵀ (D×R) · P (R×Lp), so
  // both operands are read as stored; transposed into dkr, dkg, dv when the task ends
  const int64_t Rp = even_up(R);
  T* dkrT = gkG + R + 2 * L * D;  // after the own-task dkr, dkg (2·L·D)
  T* dkgT = dkrT + D * Lp;
  T* dvT = dkgT + D * Lp;
  T* xT = dvT + D * Lp;  // D×R: a transposed row block
  // Without upstream gradients of the branch outputs, dO^M = λ·dO and dO^G = (1 − λ)·dO: the two
  // maps share dP's product Y = dO·vᵀ (R×Lp) and dv = (λ·P^M + (1 − λ)·P^G)ᵀ·dO, two matrix
  // products where each map would take its own two; YB holds the mixed P, then Y.
  T* YB = xT + D * Rp;
  uint16_t* kTr_b = reinterpret_cast<uint16_t*>(YB + R * Lp);  // D×Lp row pairs
  uint16_t* kT_b = kTr_b + D * Lp;
  uint16_t* vT_b = kT_b + D * Lp;
  uint16_t* kr_b = vT_b + D * Lp;  // Lp×D row pairs
  uint16_t* kg_b = kr_b + Lp * D;
  uint16_t* x_b = kg_b + Lp * D;  // R×D
  uint16_t* p_b = x_b + R * D;    // R×Lp, or Rp×Lp row pairs
  uint16_t* xT_b = p_b + Rp * Lp;  // D×Rp
  const GemmLib* lib = std::is_same_v<T, float> ? a.lib : nullptr;
  const bool b16 = lib && lib->use_bf16;
  const bool kl_grad = a.g_kl_local || a.g_kl_global;
  const bool shared = !a.g_out_local && !a.g_out_global;  // dO^M, dO^G both multiples of dO
  const bool fused = shared && a.g_out && !kl_grad;  // and X = 0: see shared_softmax_backward_rows
  // probabilities, then dA (R×Lp): in place of the scores on the fused path, which never reads X
  // (two R×L buffers fewer in cache; with the forward's in-place exponentials, 3–6 % off an out-only
  // forward+backward at L = 2048)
  T* PA = fused ? XA : XG + R * Lp;
  T* PG = fused ? XG : XG + 2 * R * Lp;
  const ProductScratch<T> scratch{xT, dvT, vT_b, x_b, xT_b, p_b};
  int64_t cached = -1;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t bh = t / a.nsplit, b = bh / a.H, h = bh % a.H;
    const int64_t sp = t % a.nsplit;
    if (bh != cached) {
      fill_key_cache<T, VB>(kc, a.k, a.sk, a.v, a.sv, b, h, L, D, a.cos, a.sin, true);
      if constexpr (std::is_same_v<T, float>)
        if (b16) {
          pack_pairs(kTr_b, kc.kT_rot, Lp, D, D, Lp);
          pack_pairs(kT_b, kc.kT, Lp, D, D, Lp);
          pack_pairs(vT_b, kc.vT, Lp, D, D, Lp);
          pack_pairs(kr_b, kc.k_rot, D, L, Lp, D);
          pack_pairs(kg_b, kc.k_plain, D, L, Lp, D);
        }
      cached = bh;
    }
    const bool own = a.nsplit == 1;  // this task holds all of (b, h): finish its keys itself
    T* dkr = own ? gkG + R : a.dkr_ws + t * L * D;
    T* dkg = own ? dkr + L * D : a.dkg_ws + t * L * D;
    T* dv = own ? a.dv + bh * L * D : a.dv_ws + t * L * D;  // dv needs no finishing: straight to the output
    if (lib)
      for (int64_t x = 0; x < D * Lp; ++x) dkrT[x] = dkgT[x] = dvT[x] = T(0);
    else
      for (int64_t x = 0; x < L * D; ++x) dkr[x] = dkg[x] = dv[x] = T(0);
    const T lam = a.lam[h];
    T dmix = 0;
    const int64_t blk_end = (sp + 1) * a.blocks_per_split < a.nblk ? (sp + 1) * a.blocks_per_split : a.nblk;
    for (int64_t blk = sp * a.blocks_per_split; blk < blk_end; ++blk) {
      const int64_t i0 = blk * R;
      const int64_t n = (L - i0) < R ? (L - i0) : R;
      const int64_t row0 = bh * L + i0;
      const int64_t nk = keys_for_block(a, b, i0, n), nkp = padded(nk);  // keys this block computes
      load_rows(a.q, a.sq, b, h, i0, n, D, L, a.cos, a.sin, a.scale, qg, qr);
      // upstream gradients of the two branch outputs, dO^M = λ·dO + dO_local, dO^G likewise (the
      // shared path reads dO itself)
      for (int64_t r = 0; r < n && !shared; ++r) {
        const int64_t o = (row0 + r) * D;
        T *__restrict__ m = dOM + r * D, *__restrict__ g = dOG + r * D;
        if (a.g_out) {
          const T* __restrict__ go = a.g_out + o;
          for (int64_t d = 0; d < D; ++d) m[d] = lam * go[d], g[d] = (T(1) - lam) * go[d];
        } else {
          for (int64_t d = 0; d < D; ++d) m[d] = g[d] = T(0);
        }
        if (a.g_out_local) {
          const T* __restrict__ x = a.g_out_local + o;
          for (int64_t d = 0; d < D; ++d) m[d] += x[d];
        }
        if (a.g_out_global) {
          const T* __restrict__ x = a.g_out_global + o;
          for (int64_t d = 0; d < D; ++d) g[d] += x[d];
        }
      }
      // the rows' kl gradients, and the mixing weight's Σ dO·(O^M − O^G): each dot in index order
      // with fused multiply-adds, kRi rows at a time so their dependency chains overlap
      constexpr int64_t kRi = 8;
      for (int64_t r0 = 0; r0 < n; r0 += kRi) {
        const int64_t nr = n - r0 < kRi ? n - r0 : kRi;
        T sX[kRi] = {};
        if (a.g_out && a.out_local)
          for (int64_t d = 0; d < D; ++d)
            for (int64_t i = 0; i < nr; ++i) {
              const int64_t o = (row0 + r0 + i) * D + d;
              sX[i] = madd<F>(a.g_out[o], a.out_local[o] - a.out_global[o], sX[i]);
            }
        for (int64_t i = 0; i < nr; ++i) {
          const int64_t r = r0 + i;
          dmix += sX[i];
          gkA[r] = a.g_kl_local ? a.g_kl_local[row0 + r] : T(0);
          gkG[r] = a.g_kl_global ? a.g_kl_global[row0 + r] : T(0);
        }
      }
      block_scores<T, VB>(a, lib, b16, kc, kTr_b, kT_b, qr, qg, x_b, bh, b, i0, n, nk, XA, XG);  // as the forward
      const bool masked = any_mask(a);
      for (int64_t r = 0; r < n; ++r) {
        T hiA, loA, hiG, loG;
        split_lse(a.lse_local[row0 + r], hiA, loA);
        split_lse(a.lse_global[row0 + r], hiG, loG);
        T *xa = XA + r * Lp, *xg = XG + r * Lp;
        const int64_t nr = keys_for_row(a, i0 + r, nk);
        if (kl_grad)
          probs_and_gaps_row<T, F, true>(xa, xg, PA + r * Lp, PG + r * Lp, nr, hiA, loA, hiG, loG, gkA[r], gkG[r]);
        else if (fused)
          probs_and_gaps_row<T, F, false, true>(xa, xg, nullptr, nullptr, nr, hiA, loA, hiG, loG, T(0), T(0));
        else
          probs_and_gaps_row<T, F, false>(xa, xg, PA + r * Lp, PG + r * Lp, nr, hiA, loA, hiG, loG, T(0), T(0));
        zero_row_tail(PA + r * Lp, nr, nkp);
        zero_row_tail(PG + r * Lp, nr, nkp);
        if (masked && empty_row(a, bh, b, i0 + r))  // no allowed key: no probabilities, zero gradients
          for (int64_t j = 0; j < nkp; ++j) xa[j] = xg[j] = PA[r * Lp + j] = PG[r * Lp + j] = T(0);
        if (shared && a.g_out) {
          const T *__restrict__ pa = PA + r * Lp, *__restrict__ pg = PG + r * Lp;
          T* __restrict__ pm = YB + r * Lp;
          for (int64_t j = 0; j < nkp; ++j) pm[j] = madd<F>(lam, pa[j] - pg[j], pg[j]);
        }
      }
      // dP = dO^M·vᵀ, dO^G·vᵀ added to X, dv += Σ_maps Pᵀ·dO^map (before P turns into dS), then
      // dS = P ∘ (X − δ), δ = Σ_j P X. Shared: dv += (λ·P^M + (1 − λ)·P^G)ᵀ·dO from YB, then
      // YB = dO·vᵀ, and X + c·Y in place of X (c = λ, 1 − λ); no dO at all: dP = 0 and dv unchanged.
      const T* dO = shared && a.g_out ? a.g_out + row0 * D : nullptr;
      if (dO) {
        dv_and_dp<T, VB>(lib, b16, kc, scratch, dO, YB, YB, false, n, nk, Lp, Rp, D, dv);
      } else if (!shared) {
        dv_and_dp<T, VB>(lib, b16, kc, scratch, dOM, PA, XA, true, n, nk, Lp, Rp, D, dv);
        dv_and_dp<T, VB>(lib, b16, kc, scratch, dOG, PG, XG, true, n, nk, Lp, Rp, D, dv);
      }
      if (fused) {  // X = 0: both maps' softmax backward (and dmix) in one pair of passes
        shared_softmax_backward_rows<T, F>(PA, PG, YB, n, nk, Lp, lam, T(1) - lam, a.out_local ? nullptr : &dmix);
      } else if (dO && !a.out_local) {  // dmix's Σ_i dO_i·(O^M_i − O^G_i) = Σ_ij (P^M − P^G)_ij·(dO·vᵀ)_ij
        for (int64_t r = 0; r < n; ++r) {
          const T *__restrict__ pa = PA + r * Lp, *__restrict__ pg = PG + r * Lp, *__restrict__ y = YB + r * Lp;
          T acc[W] = {};
          for (int64_t j = 0; j < nk; j += W)
            for (int64_t l = 0; l < W; ++l) acc[l] = madd<F>(pa[j + l] - pg[j + l], y[j + l], acc[l]);
          dmix += lanes_sum(acc);
        }
      }
      if (dO && !fused) {
        softmax_backward_rows<T, F, true>(PA, XA, n, nk, Lp, YB, lam);
        softmax_backward_rows<T, F, true>(PG, XG, n, nk, Lp, YB, T(1) - lam);
      } else if (!dO) {
        softmax_backward_rows<T, F>(PA, XA, n, nk, Lp);
        softmax_backward_rows<T, F>(PG, XG, n, nk, Lp);
      }
      // dq̃ = scale·dS^M k̃, dq = scale·dS^G k (scale applied below); dk̃ += dS^Mᵀ (scale·q̃) etc.
      if constexpr (std::is_same_v<T, float>) {
        if (b16) {
          for (int m = 0; m < 2; ++m) {
            const T* x = m ? qg : qr;
            const T* S = m ? PG : PA;
            cvt_rows(p_b, Lp, S, Lp, n, nkp);
            lib->bf16(n, D, nkp, Lp, D, D, false, p_b, m ? kg_b : kr_b, m ? dqg : dqr);
            cvt_transpose(xT_b, x, D, n, Rp, D);
            pack_pairs(p_b, S, Lp, n, Rp, nkp);
            lib->bf16(D, nkp, Rp, Rp, nkp, Lp, true, xT_b, p_b, m ? dkgT : dkrT);
          }
        } else if (lib) {
          lib->f32(n, D, nk, Lp, D, D, false, PA, kc.k_rot, dqr);
          lib->f32(n, D, nk, Lp, D, D, false, PG, kc.k_plain, dqg);
          transpose_to<T, VB>(xT, n, qr, D, n, D);
          lib->f32(D, nkp, n, n, Lp, Lp, true, xT, PA, dkrT);
          transpose_to<T, VB>(xT, n, qg, D, n, D);
          lib->f32(D, nkp, n, n, Lp, Lp, true, xT, PG, dkgT);
        }
      }
      if (!lib) {
        gemm_rows<T, VB>(dqr, PA, Lp, kc.k_rot, n, nk, D);
        gemm_rows<T, VB>(dqg, PG, Lp, kc.k_plain, n, nk, D);
        gemm_tn_acc<T, VB>(dkr, PA, Lp, qr, n, nk, D);
        gemm_tn_acc<T, VB>(dkg, PG, Lp, qg, n, nk, D);
      }
      // un-rotate dq̃ at the row's own position, dq = scale·(dq_plain + Rᵀ dq̃); the q-side dc, ds
      // (qg holds scale·q, the x that dq̃'s row was rotated from, up to that same scale)
      for (int64_t r = 0; r < n; ++r) {
        const int64_t m = (h * L + i0 + r) * P, o = (row0 + r) * D, g = r * D;
        rotate_row_backward<T, false>(dqr + g, dqr + g + P, dqg + g, dqg + g + P, qg + g, qg + g + P, a.cos + m,
                                      a.sin + m, a.scale, a.dq + o, a.dq + o + P, a.dc + (row0 + r) * P,
                                      a.ds + (row0 + r) * P, P);
      }
    }
    a.dmix_ws[t] = dmix;
    if (lib) {
      transpose_to<T, VB>(dkr, D, dkrT, Lp, D, L);
      transpose_to<T, VB>(dkg, D, dkgT, Lp, D, L);
      transpose_to<T, VB>(dv, D, dvT, Lp, D, L);
    }
    if (own) finish_keys(a, bh, dkr, dkg, dv, kc.k_plain);
  }
}

template <typename T>
constexpr int64_t backward_work_size(int64_t L, int64_t D, int64_t R) {
  return 3 * padded(L) * D + 5 * L * D + 6 * R * D + 5 * R * padded(L) + 2 * R +
         3 * D * padded(L) + D * even_up(R) +  // GemmLib's transposed key side and row block; YB (R×Lp)
         (5 * D * padded(L) + R * D + even_up(R) * padded(L) + D * even_up(R)) / 2 + 16;  // its bfloat16 buffers
}

// The stepped rotations of modulation_tables_head and modulation_backward_head, n = S·P pairs:
// (c, sn) ← exact cos, sin of θ·i at a re-seed position, and (c, sn) rotated by (c1, s1) between.
AMAD_AI void seed_rotations(const double* __restrict__ th, int64_t n, int64_t i, double* __restrict__ c,
                            double* __restrict__ sn) {
  for (int64_t x = 0; x < n; ++x) {
    const double a = th[x] * static_cast<double>(i);
    c[x] = std::cos(a), sn[x] = std::sin(a);
  }
}
AMAD_AI void step_rotations(double* __restrict__ c, double* __restrict__ sn, const double* __restrict__ c1,
                            const double* __restrict__ s1, int64_t n) {
  for (int64_t x = 0; x < n; ++x) {
    const double cn = c[x] * c1[x] - sn[x] * s1[x];
    sn[x] = sn[x] * c1[x] + c[x] * s1[x];
    c[x] = cn;
  }
}

// The modulation of spec §1.1 for one head, in float64: c_i = Σ_s w_s cos(θ_s i) and s_i likewise
// with sin, written as T to cos_out, sin_out (L×P). Each scale's unit rotation by θ_s is stepped
// position by position and re-seeded with exact cos/sin every `reseed` positions (stepping error
// ~n·1e-16 after n steps, far below float32's rounding; float64 callers re-seed at every position).
// All S·P pairs are stepped together, so the loops over them vectorise. buf: 4·S·P + 2·P doubles.
template <typename T, bool F>
AMAD_AI void modulation_tables_head(const double* __restrict__ th, const double* __restrict__ w, int64_t S, int64_t P,
                                    int64_t L, int64_t reseed, T* __restrict__ cos_out, T* __restrict__ sin_out,
                                    double* __restrict__ buf) {
  const int64_t SP = S * P;
  double *c1 = buf, *s1 = c1 + SP, *c = s1 + SP, *sn = c + SP, *ac = sn + SP, *as = ac + P;
  seed_rotations(th, SP, 1, c1, s1);  // the unit steps
  for (int64_t i = 0; i < L; ++i) {
    if (i % reseed == 0) seed_rotations(th, SP, i, c, sn);
    for (int64_t p = 0; p < P; ++p) ac[p] = as[p] = 0.0;
    for (int64_t s = 0; s < S; ++s) {
      const double ws = w[s];
      const double *__restrict__ cs = c + s * P, *__restrict__ ss = sn + s * P;
      for (int64_t p = 0; p < P; ++p) ac[p] = madd<F>(ws, cs[p], ac[p]), as[p] = madd<F>(ws, ss[p], as[p]);
    }
    for (int64_t p = 0; p < P; ++p)
      cos_out[i * P + p] = static_cast<T>(ac[p]), sin_out[i * P + p] = static_cast<T>(as[p]);
    step_rotations(c, sn, c1, s1, SP);  // every pair by its θ
  }
}

// Chain rule through modulation_tables_head for one head: from dc, ds (L×P, T) to dfreqs (S×P) and
// dweights (S), in float64: dθ_{s,p} = w_s Σ_i i (cos θi · ds_{i,p} − sin θi · dc_{i,p}),
// dw_s = Σ_{i,p} cos θi · dc_{i,p} + sin θi · ds_{i,p}, with the same stepped rotations (same reseed).
// buf: 5·S·P doubles.
template <typename T, bool F>
AMAD_AI void modulation_backward_head(const double* __restrict__ th, const double* __restrict__ w, int64_t S,
                                      int64_t P, int64_t L, int64_t reseed, const T* __restrict__ dc,
                                      const T* __restrict__ ds, double* __restrict__ dfreqs,
                                      double* __restrict__ dweights, double* __restrict__ buf) {
  const int64_t SP = S * P;
  double *c1 = buf, *s1 = c1 + SP, *c = s1 + SP, *sn = c + SP, *dwp = sn + SP;
  seed_rotations(th, SP, 1, c1, s1);  // the unit steps
  for (int64_t x = 0; x < SP; ++x) dfreqs[x] = dwp[x] = 0.0;
  for (int64_t i = 0; i < L; ++i) {
    if (i % reseed == 0) seed_rotations(th, SP, i, c, sn);
    const T *__restrict__ a = dc + i * P, *__restrict__ b = ds + i * P;
    for (int64_t s = 0; s < S; ++s) {
      const double wi = w[s] * static_cast<double>(i);
      const double *__restrict__ cs = c + s * P, *__restrict__ ss = sn + s * P;
      double *__restrict__ d = dfreqs + s * P, *__restrict__ e = dwp + s * P;
      for (int64_t p = 0; p < P; ++p) {
        const double ap = static_cast<double>(a[p]), bp = static_cast<double>(b[p]);
        d[p] = madd<F>(wi, cs[p] * bp - ss[p] * ap, d[p]);
        e[p] = madd<F>(cs[p], ap, madd<F>(ss[p], bp, e[p]));
      }
    }
    step_rotations(c, sn, c1, s1, SP);
  }
  for (int64_t s = 0; s < S; ++s) {
    double acc = 0.0;
    for (int64_t p = 0; p < P; ++p) acc += dwp[s * P + p];
    dweights[s] = acc;
  }
}

// Entry points, one per instruction set. The always-inline bodies above take on each entry's
// target, so the same source is vectorised for AVX-512, AVX2+FMA and the baseline.
// The modulation tables and their chain rule, per instruction set like the kernels.
#define AMAD_MODULATION_ENTRIES(isa, target, fma)                                                                    \
  template <typename T>                                                                                               \
  target void modulation_tables_##isa(const double* th, const double* w, int64_t S, int64_t P, int64_t L,            \
                                      int64_t reseed, T* cos_out, T* sin_out, double* buf) {                         \
    modulation_tables_head<T, fma>(th, w, S, P, L, reseed, cos_out, sin_out, buf);                                    \
  }                                                                                                                   \
  template <typename T>                                                                                               \
  target void modulation_backward_##isa(const double* th, const double* w, int64_t S, int64_t P, int64_t L,          \
                                        int64_t reseed, const T* dc, const T* ds, double* dfreqs, double* dweights,  \
                                        double* buf) {                                                                \
    modulation_backward_head<T, fma>(th, w, S, P, L, reseed, dc, ds, dfreqs, dweights, buf);                          \
  }
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define AMAD_MULTI_ISA 1
#define AMAD_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx2,fma,bmi,bmi2,f16c,prefer-vector-width=512")))
#define AMAD_TARGET_AVX2 __attribute__((target("avx2,fma,bmi,bmi2,f16c")))
template <typename T>
AMAD_TARGET_AVX512 void forward_avx512(const FwdArgs<T>& a, int64_t t0, int64_t t1, T* w) {
  forward_tasks<T, true, 64>(a, t0, t1, w);
}
template <typename T>
AMAD_TARGET_AVX2 void forward_avx2(const FwdArgs<T>& a, int64_t t0, int64_t t1, T* w) {
  forward_tasks<T, true, 32>(a, t0, t1, w);
}
template <typename T>
AMAD_TARGET_AVX512 void backward_avx512(const BwdArgs<T>& a, int64_t t0, int64_t t1, T* w) {
  backward_tasks<T, true, 64>(a, t0, t1, w);
}
template <typename T>
AMAD_TARGET_AVX2 void backward_avx2(const BwdArgs<T>& a, int64_t t0, int64_t t1, T* w) {
  backward_tasks<T, true, 32>(a, t0, t1, w);
}
AMAD_MODULATION_ENTRIES(avx512, AMAD_TARGET_AVX512, true)
AMAD_MODULATION_ENTRIES(avx2, AMAD_TARGET_AVX2, true)
#endif
template <typename T>
void forward_default(const FwdArgs<T>& a, int64_t t0, int64_t t1, T* w) {
  forward_tasks<T, false, 16>(a, t0, t1, w);
}
template <typename T>
void backward_default(const BwdArgs<T>& a, int64_t t0, int64_t t1, T* w) {
  backward_tasks<T, false, 16>(a, t0, t1, w);
}
AMAD_MODULATION_ENTRIES(default, , false)
#undef AMAD_MODULATION_ENTRIES

}  // namespace cpu
}  // namespace amad_fast

#pragma GCC diagnostic pop
#pragma GCC pop_options
