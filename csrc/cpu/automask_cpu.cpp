// CPU implementation of the amad_fast::automask_forward / automask_backward ops (spec §1).
//
// Parallel over (batch, head, block of query rows) with at::parallel_for; each task keeps its
// (b, h)'s keys and values (rotated and plain, L×D) and the block's score rows (R×L per map) in a
// thread-local buffer: no L×L matrix is materialised. Both softmaxes are exact two-pass over the
// row buffer (R is chosen so R×L stays small, down to one row for very long windows).
//
// Masks: key_padding_mask (B, L) bool is read as bytes per batch, is_causal and trailing padding
// as the block's key range (a block of rows [i0, i0+R) computes only keys < i0 + R and none past
// the batch's last unpadded key: about half the work each, on every path, bfloat16 included); the
// attn_mask comes as an additive bias (attn_bias, (1, L, L) or (B·H, L, L) in the compute dtype)
// added to both maps' scaled scores. Masked scores within the range are overwritten before the
// softmaxes (cpu::mask_score_rows), and a row with no allowed key gets zeros and zero gradients.
//
// Inputs may have any strides (read through them); float16/bfloat16 inputs are converted to
// float32 first and the outputs cast back. The hot loops are compiled three times, for x86-64-v4
// (AVX-512), x86-64-v3 (AVX2+FMA) and the baseline, and the best one the CPU supports runs.
// On x86-64-v4 the block products (scores, P·V and the backward's five products) go by default
// through ATen's cpublas::brgemm (MKL / oneDNN) instead of the kernels' own micro-kernels, and
// bfloat16 inputs are multiplied as bfloat16 on the CPU's 16-bit units (AMX or AVX-512-BF16,
// float32 accumulation) where it has them. AMAD_FAST_CPU_ISA lowers the choice, for
// testing and comparison:
//   brgemm   the default where available: AVX-512 elementwise + library block products, bfloat16
//            on the 16-bit units when the CPU has them (AMX; see hardware_bf16);
//   avx512, avx2, default   the micro-kernels only, 16-bit inputs computed in float32.
// float64 always runs on the micro-kernels.
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <limits>
#include <list>
#include <mutex>
#include <tuple>
#include <string>
#include <vector>

#include "../automask.h"
#include "automask_kernels.h"

namespace amad_fast {

using at::Tensor;

namespace {

enum class Isa { Default = 0, Avx2 = 1, Avx512 = 2, Brgemm = 3 };

#ifdef AMAD_MULTI_ISA
Isa hardware_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c");
    const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                    __builtin_cpu_supports("avx512cd");
    return v4 ? Isa::Brgemm : v3 ? Isa::Avx2 : Isa::Default;
  }();
  return isa;
}

// Whether bfloat16 products can run on 16-bit units: AMX-BF16 or AVX-512-BF16, and a oneDNN
// behind cpublas::brgemm with a bfloat16 ukernel for them (could_pack). In ATen 2.13 that is AMX
// only: with oneDNN capped at AVX512_CORE_BF16 could_pack is false and brgemm's bfloat16 fallback
// ran at 18-100 GFLOP/s on the Intel Xeon against 160-185 in float32, so such CPUs keep float32.
bool hardware_bf16() {
  static const bool ok = [] {
    __builtin_cpu_init();
    const bool units = __builtin_cpu_supports("avx512bf16") || __builtin_cpu_supports("amx-bf16");
    return units && at::native::cpublas::could_pack(at::kBFloat16);
  }();
  return ok;
}
#else
bool hardware_bf16() { return false; }
Isa hardware_isa() { return Isa::Default; }
#endif

// The instruction set to run: the hardware's, lowered by AMAD_FAST_CPU_ISA if set.
Isa active_isa() {
  Isa isa = hardware_isa();
  if (const char* env = std::getenv("AMAD_FAST_CPU_ISA")) {
    const std::string want(env);
    Isa cap = want == "default" ? Isa::Default
              : want == "avx2"  ? Isa::Avx2
              : want == "avx512" ? Isa::Avx512
                                 : Isa::Brgemm;
    TORCH_CHECK(want == "default" || want == "avx2" || want == "avx512" || want == "brgemm" || want.empty(),
                "AMAD_FAST_CPU_ISA: expected default, avx2, avx512 or brgemm, got '", want, "'");
    if (static_cast<int>(cap) < static_cast<int>(isa)) isa = cap;
  }
  return isa;
}

std::string isa_name() {
  switch (active_isa()) {
    case Isa::Brgemm:
      return "brgemm";
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    default:
      return "default";
  }
}

template <typename T>
void run_forward(Isa isa, const cpu::FwdArgs<T>& a, int64_t t0, int64_t t1, T* w) {
#ifdef AMAD_MULTI_ISA
  if (isa >= Isa::Avx512) return cpu::forward_avx512<T>(a, t0, t1, w);
  if (isa == Isa::Avx2) return cpu::forward_avx2<T>(a, t0, t1, w);
#endif
  cpu::forward_default<T>(a, t0, t1, w);
}

template <typename T>
void run_backward(Isa isa, const cpu::BwdArgs<T>& a, int64_t t0, int64_t t1, T* w) {
#ifdef AMAD_MULTI_ISA
  if (isa >= Isa::Avx512) return cpu::backward_avx512<T>(a, t0, t1, w);
  if (isa == Isa::Avx2) return cpu::backward_avx2<T>(a, t0, t1, w);
#endif
  cpu::backward_default<T>(a, t0, t1, w);
}

// The library block products (cpu::GemmLib): ATen's cpublas::brgemm, C (M×N) (+)= A (M×K) · B (K×N)
// row-major; single-threaded inside the kernels' own parallel region.
void lib_f32(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add, const float* A,
             const float* B, float* C) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, A, B, C, false);
}
void lib_bf16(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc, bool add, const uint16_t* A,
              const uint16_t* B, float* C) {
  at::native::cpublas::brgemm(M, N, K, lda, ldb, ldc, add, reinterpret_cast<const at::BFloat16*>(A),
                              reinterpret_cast<const at::BFloat16*>(B), C, true);
}
const cpu::GemmLib kLibF32{lib_f32, lib_bf16, false};
const cpu::GemmLib kLibBf16{lib_f32, lib_bf16, true};

// The GemmLib a call uses (null: the micro-kernels): bfloat16 operands for bfloat16 inputs where the
// CPU has the units, float32 operands otherwise; none for float64 or below Isa::Brgemm.
const cpu::GemmLib* gemm_lib(Isa isa, at::ScalarType input, at::ScalarType acc) {
  if (isa != Isa::Brgemm || acc != at::kFloat) return nullptr;
  return input == at::kBFloat16 && hardware_bf16() ? &kLibBf16 : &kLibF32;
}

// Releases the AMX tile state a bfloat16 GemmLib left on this thread (cpublas::brgemm keeps it).
void release_lib(const void* lib) {
  if (lib == &kLibBf16) at::native::cpublas::brgemm_release(true);
}

// Flush-to-zero and denormals-are-zero while a worker runs the kernels (restored after): products
// of small gradients and probabilities otherwise land in the denormal range, where x86 arithmetic
// is many times slower. Values below 1e-38 (float) / 1e-308 (double) become 0.
class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#endif
};

// Per-thread scratch reused across calls: a fresh buffer each call would be mapped and zeroed
// by the kernel again (page faults were ~10% of a small backward's time). Buffers up to
// kKeepBytes stay with the thread; larger ones (long windows) are released when the call ends.
constexpr size_t kKeepBytes = size_t(4) << 20;

template <typename T>
class ThreadWorkspace {
 public:
  T* get(int64_t n) {
    if (buf().size() < static_cast<size_t>(n)) {
      buf().clear();
      buf().shrink_to_fit();
      buf().resize(n);
    }
    return buf().data();
  }
  ~ThreadWorkspace() {
    if (buf().size() * sizeof(T) > kKeepBytes) std::vector<T>().swap(buf());
  }

 private:
  static std::vector<T>& buf() {
    static thread_local std::vector<T> b;
    return b;
  }
};

// Runs fn(t0, t1, work) over [0, ntasks) in chunks claimed first come, first served by the
// threads of ATen's intra-op pool (at::parallel_for). That pool's threads are the ones ATen's own
// ops just ran on and usually still spin-wait, hot; a second pool (at::launch, tried first)
// competed with them for the cores: a 2-thread training step of the benchmark shape took 13.8 ms
// on average against 8.0 ms here. Every task writes only its own outputs, so results do not
// depend on who ran what.
//
// Under contention (more runnable threads than cores) a parallel region costs far more than its
// work: each one ends in OpenMP's barrier, where threads that finished spin while the one they wait
// for is descheduled behind other processes. On the 2-core Intel Xeon with other jobs beside it
// (load ≈ 6) a 2-thread training step of the benchmark shape took 330 ms against 75 ms on one
// thread (and 27-64 ms with OMP_WAIT_POLICY=passive, which a library cannot set for its host).
// So every region measures how much of its threads' wall time went into work; when less than
// half (the threads were mostly waiting or not running), the next kSerialCalls calls of the CPU
// kernels run on the calling thread alone, then one parallel call measures again. Which thread
// runs a task never changes a result, so this changes only speed.
constexpr int kSerialCalls = 32;
std::atomic<int> serial_calls_left{0};

// Whether the next parallel region of these kernels should run on the calling thread alone.
bool run_serially() {
  int left = serial_calls_left.load(std::memory_order_relaxed);
  while (left > 0 && !serial_calls_left.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
  }
  return left > 0;
}

// Runs body(b, e) over [0, n) like at::parallel_for (grain 1 per index, or serially when the
// machine looks oversubscribed, see run_serially) and judges the region: total_busy_ns is what the
// threads spent inside body, summed; the region counts as contended when that is under half of
// nthreads × its wall time (regions under 50 µs are not judged: thread wake-up dominates them).
template <typename Body>
void judged_parallel_for(int64_t n, int64_t grain, const Body& body) {
  const int64_t nthreads = std::min<int64_t>(at::get_num_threads(), (n + grain - 1) / grain);
  if (nthreads <= 1 || at::in_parallel_region() || run_serially()) return body(0, n);
  std::atomic<int64_t> busy_ns{0};
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, n, grain, [&](int64_t b, int64_t e) {  // exceptions propagate to the caller
    const auto s = std::chrono::steady_clock::now();
    body(b, e);
    busy_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - s).count();
  });
  const int64_t wall =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  if (wall > 50000 && 2 * busy_ns.load() < nthreads * wall) serial_calls_left.store(kSerialCalls);
}

template <typename T, typename Fn>
void parallel_tasks(int64_t ntasks, int64_t chunk, int64_t work_size, const Fn& fn) {
  const int64_t nchunks = (ntasks + chunk - 1) / chunk;
  std::atomic<int64_t> next{0};
  auto run = [&] {
    const FlushDenormals ftz;
    ThreadWorkspace<T> work;
    for (int64_t t0; (t0 = next.fetch_add(chunk)) < ntasks;) fn(t0, std::min(t0 + chunk, ntasks), work.get(work_size));
  };
  const int64_t nthreads = std::min<int64_t>(at::get_num_threads(), nchunks);
  judged_parallel_for(nthreads, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) run();
  });
}

// Query rows per task: the block's score rows (R×L per map) stay within ~512 KiB of float32, with
// up to 64 rows: taller blocks keep the block products efficient (16 rows at L = 1024 left a
// library GEMM at 160 GFLOP/s, 64 at 175; at L = 2048, 64 rows instead of 32 took a forward+backward
// from 2.19× to 2.05× SDPA's time on the Intel Xeon, the key side's D×L accumulators being read
// and written half as often).
int64_t block_rows(int64_t L) {
  int64_t r = 131072 / L;
  r = r < 1 ? 1 : (r > 64 ? 64 : r);
  return r < L ? r : L;
}

void copy_strides(int64_t* dst, const Tensor& t) {
  for (int d = 0; d < 4; ++d) dst[d] = t.stride(d);
}

// Fills the part both argument structs share; q, k, v, cos, sin, lam already in the compute dtype T.
template <typename T>
void fill_call_inputs(cpu::CallInputs<T>& a, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cos,
                      const Tensor& sin, const Tensor& lam, int64_t R, int64_t nblk, double scale) {
  a.q = q.data_ptr<T>();
  a.k = k.data_ptr<T>();
  a.v = v.data_ptr<T>();
  copy_strides(a.sq, q);
  copy_strides(a.sk, k);
  copy_strides(a.sv, v);
  a.cos = cos.data_ptr<T>();
  a.sin = sin.data_ptr<T>();
  a.lam = lam.data_ptr<T>();
  a.B = q.size(0), a.H = q.size(1), a.L = q.size(2), a.D = q.size(3), a.R = R, a.nblk = nblk;
  a.scale = static_cast<T>(scale);
}

// The masks as the kernels read them (cpu::CallInputs): key padding as B×L bytes (1 = ignored),
// each batch's first unpadded key (L when all are padded) and one past its last (at least 1: the
// keys computed, so trailing padding costs nothing), or none; causality; and the attn_mask's
// additive bias with, per query row, whether any key is left under all the masks together.
struct KernelMasks {
  Tensor key_blocked;  // uint8 (B, L) contiguous, or undefined
  std::vector<int64_t> first_allowed, key_end;
  bool causal = false;
  Tensor bias;       // compute dtype, (1, L, L) or (B·H, L, L) contiguous, or undefined
  Tensor row_empty;  // uint8 (B, H, L) contiguous with a bias, else undefined

  KernelMasks(const char* op, const c10::optional<Tensor>& key_padding_mask, bool is_causal,
              const c10::optional<Tensor>& attn_bias, const Tensor& q)
      : causal(is_causal) {
    check_key_padding_mask(op, key_padding_mask, q);
    check_attn_bias(op, attn_bias, q);
    const bool padded = key_padding_mask && key_padding_mask->defined();
    if (padded) {
      key_blocked = key_padding_mask->to(at::kByte).contiguous();
      const int64_t B = key_blocked.size(0), L = key_blocked.size(1);
      const uint8_t* blocked = key_blocked.data_ptr<uint8_t>();
      first_allowed.resize(B);
      key_end.resize(B);
      for (int64_t b = 0; b < B; ++b) {
        int64_t j = 0, e = L;
        while (j < L && blocked[b * L + j]) ++j;
        while (e > 1 && blocked[b * L + e - 1]) --e;
        first_allowed[b] = j;
        key_end[b] = e;
      }
    }
    if (!attn_bias || !attn_bias->defined()) return;
    bias = attn_bias->contiguous();
    const int64_t B = q.size(0), H = q.size(1), L = q.size(2);
    const bool per_head = bias.size(0) > 1;
    auto allowed = bias.ne(-std::numeric_limits<double>::infinity())
                       .view({per_head ? B : 1, per_head ? H : 1, L, L});
    if (padded) allowed = allowed.logical_and(key_padding_mask->logical_not().view({B, 1, 1, L}));
    if (causal) allowed = allowed.logical_and(at::ones({L, L}, allowed.options()).tril());
    row_empty = allowed.any(-1).logical_not().expand({B, H, L}).to(at::kByte).contiguous();
  }

  template <typename T>
  void fill(cpu::CallInputs<T>& a) const {
    a.key_blocked = key_blocked.defined() ? key_blocked.data_ptr<uint8_t>() : nullptr;
    a.first_allowed = first_allowed.empty() ? nullptr : first_allowed.data();
    a.key_end = key_end.empty() ? nullptr : key_end.data();
    a.causal = causal;
    a.attn_bias = bias.defined() ? bias.data_ptr<T>() : nullptr;
    a.bias_bh_stride = bias.defined() && bias.size(0) > 1 ? bias.size(1) * bias.size(2) : 0;
    a.row_empty = row_empty.defined() ? row_empty.data_ptr<uint8_t>() : nullptr;
  }
};

template <typename T>
const T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// A gradient in the compute dtype, contiguous; undefined when absent.
Tensor grad_or_undefined(const c10::optional<Tensor>& g, at::ScalarType dtype) {
  if (!g || !g->defined()) return Tensor();
  return g->to(dtype).contiguous();
}

// Key side of the backward when row blocks were split (nsplit > 1), one (b, h) per task: sum
// the per-split partial dk̃, dk, dv in split order, then finish as a single task would.
template <typename T>
void reduce_key_side(const cpu::BwdArgs<T>& a) {
  const int64_t L = a.L, D = a.D, ns = a.nsplit, LD = L * D;
  parallel_tasks<T>(a.B * a.H, 1, 4 * LD, [&](int64_t bh0, int64_t bh1, T* work) {
    T *rot = work, *plain = work + LD, *dv = work + 2 * LD, *k = work + 3 * LD;
    for (int64_t bh = bh0; bh < bh1; ++bh) {
      const int64_t base = bh * ns * LD;
      for (int64_t x = 0; x < LD; ++x) rot[x] = plain[x] = dv[x] = T(0);
      for (int64_t s = 0; s < ns; ++s)
        for (int64_t x = 0; x < LD; ++x) {
          rot[x] += a.dkr_ws[base + s * LD + x];
          plain[x] += a.dkg_ws[base + s * LD + x];
          dv[x] += a.dv_ws[base + s * LD + x];
        }
      cpu::load_rows<T>(a.k, a.sk, bh / a.H, bh % a.H, 0, L, D, L, nullptr, nullptr, T(1), k, nullptr);
      cpu::finish_keys(a, bh, rot, plain, dv, k);
    }
  });
}

// The modulation of spec §1.1 on the CPU without a chain of ATen ops (each of which would be a
// parallel region of its own): per head, cpu::modulation_tables_head steps each pair's rotation
// in float64 and re-seeds it with exact cos/sin every `reseed` positions (stepping error ~1e-14
// after 128 steps, far below float32's rounding). A float64 compute dtype re-seeds at every position
// (reseed = 1): the stepping's error would be scaled by |A| into the float64 scores (16× the float64
// reference's error in out at score scale 10, tests/test_large_logits.py).
constexpr int64_t kReseed = 128;
inline int64_t reseed_for(at::ScalarType dtype) { return dtype == at::kDouble ? 1 : kReseed; }

template <typename T>
void run_modulation_tables(Isa isa, const double* th, const double* w, int64_t S, int64_t P, int64_t L,
                           int64_t reseed, T* c, T* s, double* buf) {
#ifdef AMAD_MULTI_ISA
  if (isa >= Isa::Avx512) return cpu::modulation_tables_avx512<T>(th, w, S, P, L, reseed, c, s, buf);
  if (isa == Isa::Avx2) return cpu::modulation_tables_avx2<T>(th, w, S, P, L, reseed, c, s, buf);
#endif
  cpu::modulation_tables_default<T>(th, w, S, P, L, reseed, c, s, buf);
}

template <typename T>
void run_modulation_backward(Isa isa, const double* th, const double* w, int64_t S, int64_t P, int64_t L,
                             int64_t reseed, const T* dc, const T* ds, double* df, double* dw, double* buf) {
#ifdef AMAD_MULTI_ISA
  if (isa >= Isa::Avx512) return cpu::modulation_backward_avx512<T>(th, w, S, P, L, reseed, dc, ds, df, dw, buf);
  if (isa == Isa::Avx2) return cpu::modulation_backward_avx2<T>(th, w, S, P, L, reseed, dc, ds, df, dw, buf);
#endif
  cpu::modulation_backward_default<T>(th, w, S, P, L, reseed, dc, ds, df, dw, buf);
}

// c, s tables (H, L, P) in the compute dtype, heads in parallel.
std::tuple<Tensor, Tensor> build_modulation_tables(const Tensor& freqs64, const Tensor& weights64, int64_t L,
                                                   at::ScalarType dtype) {
  const int64_t H = freqs64.size(0), S = freqs64.size(1), P = freqs64.size(2);
  auto c = at::empty({H, L, P}, freqs64.options().dtype(dtype)), s = at::empty_like(c);
  const double *th = freqs64.data_ptr<double>(), *w = weights64.data_ptr<double>();
  const Isa isa = active_isa();
  AT_DISPATCH_FLOATING_TYPES(dtype, "modulation_tables", [&] {
    scalar_t *cp = c.data_ptr<scalar_t>(), *sp = s.data_ptr<scalar_t>();
    judged_parallel_for(H, 1, [&](int64_t h0, int64_t h1) {
      std::vector<double> buf(4 * S * P + 2 * P);
      for (int64_t h = h0; h < h1; ++h)
        run_modulation_tables<scalar_t>(isa, th + h * S * P, w + h * S, S, P, L, reseed_for(dtype), cp + h * L * P,
                                        sp + h * L * P, buf.data());
    });
  });
  return {c, s};
}

// The tables depend on freqs, weights, L and the compute dtype alone, so a forward and its backward
// (and every call of a model whose parameters do not change, as in scoring) would build the same
// ones again. This cache keeps the most recent few, keyed by those exact values (and the active
// ISA, whose rounding they carry): the parameters' bytes (in float64), never their addresses, so
// an in-place update of freqs or weights (an optimizer step) is a different key. At most
// kMaxEntries tables, kMaxBytes in all; the cached tensors are only ever read.
class ModulationTableCache {
 public:
  std::tuple<Tensor, Tensor> get(const Tensor& freqs, const Tensor& weights, int64_t L, at::ScalarType dtype) {
    auto f = freqs.to(at::kDouble).contiguous(), w = weights.to(at::kDouble).contiguous();
    const int64_t H = f.size(0), S = f.size(1), P = f.size(2);
    std::vector<double> key(f.data_ptr<double>(), f.data_ptr<double>() + H * S * P);
    key.insert(key.end(), w.data_ptr<double>(), w.data_ptr<double>() + H * S);
    key.insert(key.end(), {double(H), double(S), double(P), double(L), double(static_cast<int>(dtype)),
                           double(static_cast<int>(active_isa()))});  // each ISA's own rounding
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (it->key.size() == key.size() && std::memcmp(it->key.data(), key.data(), key.size() * sizeof(double)) == 0) {
          entries_.splice(entries_.begin(), entries_, it);  // most recent first
          return {it->cos, it->sin};
        }
    }
    Tensor c, s;
    std::tie(c, s) = build_modulation_tables(f, w, L, dtype);
    const int64_t bytes = 2 * c.numel() * c.element_size();
    if (bytes <= kMaxBytes) {
      std::lock_guard<std::mutex> lock(mu_);
      entries_.push_front(Entry{std::move(key), c, s, bytes});
      int64_t total = 0, n = 0;
      for (auto it = entries_.begin(); it != entries_.end();) {
        total += it->bytes;
        if (++n > kMaxEntries || total > kMaxBytes)
          it = entries_.erase(it);
        else
          ++it;
      }
    }
    return {c, s};
  }

 private:
  static constexpr int kMaxEntries = 8;
  static constexpr int64_t kMaxBytes = int64_t(16) << 20;
  struct Entry {
    std::vector<double> key;
    Tensor cos, sin;
    int64_t bytes;
  };
  std::mutex mu_;
  std::list<Entry> entries_;  // most recently used first
};

std::tuple<Tensor, Tensor> cpu_modulation_tables(const Tensor& freqs, const Tensor& weights, int64_t L,
                                                 at::ScalarType dtype) {
  static ModulationTableCache cache;
  return cache.get(freqs, weights, L, dtype);
}

// Chain rule from dc, ds (H, L, P) to dfreqs (H, S, P) and dweights (H, S), in float64 (heads in
// parallel, with the forward's stepped rotations), returned in the parameters' dtypes.
template <typename T>
std::tuple<Tensor, Tensor> cpu_modulation_backward(const Tensor& dc, const Tensor& ds, const Tensor& freqs,
                                                   const Tensor& weights) {
  const int64_t H = freqs.size(0), S = freqs.size(1), P = freqs.size(2), L = dc.size(1);
  auto f = freqs.to(at::kDouble).contiguous(), w = weights.to(at::kDouble).contiguous();
  auto dfreqs = at::empty({H, S, P}, f.options()), dweights = at::empty({H, S}, f.options());
  const double *th = f.data_ptr<double>(), *wp = w.data_ptr<double>();
  double *df = dfreqs.data_ptr<double>(), *dw = dweights.data_ptr<double>();
  const T *gc = dc.data_ptr<T>(), *gs = ds.data_ptr<T>();
  const Isa isa = active_isa();
  const int64_t reseed = reseed_for(dc.scalar_type());
  judged_parallel_for(H, 1, [&](int64_t h0, int64_t h1) {
    std::vector<double> buf(5 * S * P);
    for (int64_t h = h0; h < h1; ++h)
      run_modulation_backward<T>(isa, th + h * S * P, wp + h * S, S, P, L, reseed, gc + h * L * P, gs + h * L * P,
                                 df + h * S * P, dw + h * S, buf.data());
  });
  return {dfreqs.to(freqs.scalar_type()), dweights.to(weights.scalar_type())};
}

// Σ over the leading dimension of a contiguous (n, m) buffer, in order (thread-count independent).
template <typename T>
Tensor sum_leading(const Tensor& x, int64_t n) {
  const int64_t m = x.numel() / n;
  auto out = at::zeros({m}, x.options());
  const T* src = x.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  judged_parallel_for(m, 4096, [&](int64_t j0, int64_t j1) {  // columns in parallel, rows in order
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = j0; j < j1; ++j) dst[j] += src[i * m + j];
  });
  return out;
}

}  // namespace

ForwardResult automask_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& freqs,
                                   const Tensor& weights, const Tensor& mix, double scale, bool need_divergence,
                                   const c10::optional<Tensor>& key_padding_mask, bool is_causal,
                                   const c10::optional<Tensor>& attn_bias, bool need_branches) {
  check_forward_inputs("amad_fast::automask_forward", q, k, v, freqs, weights, mix, scale);
  TORCH_CHECK(q.device().is_cpu(), "amad_fast::automask_forward (CPU kernel): expected CPU tensors, got ", q.device());
  const KernelMasks masks("amad_fast::automask_forward", key_padding_mask, is_causal, attn_bias, q);
  const auto acc = compute_dtype(q);
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3);
  auto qa = q.to(acc), ka = k.to(acc), va = v.to(acc);  // no copy for float32/float64
  Tensor cos, sin;  // not a structured binding: lambdas below capture them (C++17)
  std::tie(cos, sin) = cpu_modulation_tables(freqs, weights, L, acc);
  auto lam = mix.to(acc).sigmoid().contiguous();
  auto opts = qa.options();
  // without the branches, the maps are mixed before their product with v (cpu::FwdArgs::need_branches)
  auto out = at::empty({B, H, L, D}, opts);
  Tensor out_local = need_branches ? at::empty({B, H, L, D}, opts) : not_computed(q);
  Tensor out_global = need_branches ? at::empty({B, H, L, D}, opts) : not_computed(q);
  // float64 log-sum-exps whatever the compute dtype (see cpu::log_prob)
  auto lse_local = at::empty({B, H, L}, opts.dtype(at::kDouble)), lse_global = at::empty_like(lse_local);
  Tensor kl_local = need_divergence ? at::empty({B, H, L}, opts) : not_computed(q);
  Tensor kl_global = need_divergence ? at::empty({B, H, L}, opts) : not_computed(q);
  const int64_t R = block_rows(L), nblk = (L + R - 1) / R;
  const Isa isa = active_isa();
  AT_DISPATCH_FLOATING_TYPES(acc, "automask_forward_cpu", [&] {
    using T = scalar_t;
    cpu::FwdArgs<T> a{};
    fill_call_inputs<T>(a, qa, ka, va, cos, sin, lam, R, nblk, scale);
    a.out = out.data_ptr<T>();
    a.out_local = need_branches ? out_local.data_ptr<T>() : nullptr;
    a.out_global = need_branches ? out_global.data_ptr<T>() : nullptr;
    a.need_branches = need_branches;
    a.kl_local = need_divergence ? kl_local.data_ptr<T>() : nullptr;
    a.kl_global = need_divergence ? kl_global.data_ptr<T>() : nullptr;
    a.lse_local = lse_local.data_ptr<double>();
    a.lse_global = lse_global.data_ptr<double>();
    a.need_divergence = need_divergence;
    masks.fill(a);
    a.lib = reinterpret_cast<const cpu::GemmLib*>(gemm_lib(isa, q.scalar_type(), acc));
    parallel_tasks<T>(B * H * nblk, nblk, cpu::forward_work_size<T>(L, D, R), [&](int64_t t0, int64_t t1, T* work) {
      run_forward<T>(isa, a, t0, t1, work);
      release_lib(a.lib);
    });
  });
  const auto dt = q.scalar_type();
  if (dt != acc) {
    out = out.to(dt);
    if (need_branches) out_local = out_local.to(dt), out_global = out_global.to(dt);
    if (need_divergence) kl_local = kl_local.to(dt), kl_global = kl_global.to(dt);
  }
  return {out, out_local, out_global, kl_local, kl_global, lse_local, lse_global};
}

BackwardResult automask_backward_cpu(const c10::optional<Tensor>& grad_out,
                                     const c10::optional<Tensor>& grad_out_local,
                                     const c10::optional<Tensor>& grad_out_global,
                                     const c10::optional<Tensor>& grad_kl_local,
                                     const c10::optional<Tensor>& grad_kl_global, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& freqs, const Tensor& weights, const Tensor& mix,
                                     const Tensor& out_local, const Tensor& out_global, const Tensor& kl_local,
                                     const Tensor& kl_global, const Tensor& lse_local, const Tensor& lse_global,
                                     double scale, const c10::optional<Tensor>& key_padding_mask, bool is_causal,
                                     const c10::optional<Tensor>& attn_bias) {
  const char* op = "amad_fast::automask_backward";
  check_backward_inputs(op, grad_out, grad_out_local, grad_out_global, grad_kl_local, grad_kl_global, q, k, v, freqs,
                        weights, mix, out_local, out_global, kl_local, kl_global, lse_local, lse_global, scale);
  TORCH_CHECK(q.device().is_cpu(), op, " (CPU kernel): expected CPU tensors, got ", q.device());
  const KernelMasks masks(op, key_padding_mask, is_causal, attn_bias, q);
  const auto acc = compute_dtype(q);
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3), P = D / 2;
  auto qa = q.to(acc), ka = k.to(acc), va = v.to(acc);
  Tensor cos, sin;  // not a structured binding: lambdas below capture them (C++17)
  std::tie(cos, sin) = cpu_modulation_tables(freqs, weights, L, acc);
  auto lam = mix.to(acc).sigmoid().contiguous();
  auto ol = out_local.to(acc).contiguous(), og = out_global.to(acc).contiguous();
  auto ll = lse_local.contiguous(), lg = lse_global.contiguous();
  auto g_out = grad_or_undefined(grad_out, acc), g_ol = grad_or_undefined(grad_out_local, acc),
       g_og = grad_or_undefined(grad_out_global, acc), g_kl = grad_or_undefined(grad_kl_local, acc),
       g_kg = grad_or_undefined(grad_kl_global, acc);

  const int64_t R = block_rows(L), nblk = (L + R - 1) / R;
  // Row blocks of one (b, h) split into nsplit chunks when B·H alone gives too few tasks; the
  // split depends only on the shapes, so results do not depend on the thread count.
  const int64_t min_tasks = 8;
  int64_t nsplit = std::min<int64_t>(nblk, (min_tasks + B * H - 1) / (B * H));
  const int64_t bps = (nblk + nsplit - 1) / nsplit;
  nsplit = (nblk + bps - 1) / bps;
  auto opts = qa.options();
  auto dq = at::empty({B, H, L, D}, opts), dk = at::empty({B, H, L, D}, opts), dv = at::empty({B, H, L, D}, opts);
  // per-split key-side partials, only when row blocks are split
  const int64_t ws_rows = nsplit > 1 ? B * H * nsplit : 0;
  auto dkr_ws = at::empty({ws_rows, L, D}, opts), dkg_ws = at::empty({ws_rows, L, D}, opts),
       dv_ws = at::empty({ws_rows, L, D}, opts);
  auto dc_ws = at::empty({B, H, L, P}, opts), ds_ws = at::empty({B, H, L, P}, opts);
  auto dmix_ws = at::empty({B, H, nsplit}, opts);
  Tensor dc, ds, dmix_raw, dfreqs, dweights;
  const Isa isa = active_isa();
  AT_DISPATCH_FLOATING_TYPES(acc, "automask_backward_cpu", [&] {
    using T = scalar_t;
    cpu::BwdArgs<T> a{};
    fill_call_inputs<T>(a, qa, ka, va, cos, sin, lam, R, nblk, scale);
    a.out_local = ol.numel() ? ol.data_ptr<T>() : nullptr;  // empty: the forward formed no branches
    a.out_global = og.numel() ? og.data_ptr<T>() : nullptr;
    a.lse_local = ll.data_ptr<double>();
    a.lse_global = lg.data_ptr<double>();
    a.g_out = ptr_or_null<T>(g_out);
    a.g_out_local = ptr_or_null<T>(g_ol);
    a.g_out_global = ptr_or_null<T>(g_og);
    a.g_kl_local = ptr_or_null<T>(g_kl);
    a.g_kl_global = ptr_or_null<T>(g_kg);
    a.dq = dq.data_ptr<T>();
    a.dk = dk.data_ptr<T>();
    a.dv = dv.data_ptr<T>();
    a.dkr_ws = dkr_ws.data_ptr<T>();
    a.dkg_ws = dkg_ws.data_ptr<T>();
    a.dv_ws = dv_ws.data_ptr<T>();
    a.dc = dc_ws.data_ptr<T>();
    a.ds = ds_ws.data_ptr<T>();
    a.dmix_ws = dmix_ws.data_ptr<T>();
    a.nsplit = nsplit, a.blocks_per_split = bps;
    masks.fill(a);
    a.lib = reinterpret_cast<const cpu::GemmLib*>(gemm_lib(isa, q.scalar_type(), acc));
    parallel_tasks<T>(B * H * nsplit, 1, cpu::backward_work_size<T>(L, D, R), [&](int64_t t0, int64_t t1, T* work) {
      run_backward<T>(isa, a, t0, t1, work);
      release_lib(a.lib);
    });
    if (nsplit > 1) reduce_key_side<T>(a);
    dc = sum_leading<T>(dc_ws, B).view({H, L, P});
    ds = sum_leading<T>(ds_ws, B).view({H, L, P});
    dmix_raw = sum_leading<T>(dmix_ws.permute({0, 2, 1}).contiguous(), B * nsplit);  // (H,)
    std::tie(dfreqs, dweights) = cpu_modulation_backward<T>(dc, ds, freqs, weights);
  });
  auto dmix = (dmix_raw * lam * (1 - lam)).to(mix.scalar_type());
  const auto dt = q.scalar_type();
  return {dq.to(dt), dk.to(dt), dv.to(dt), dfreqs, dweights, dmix};
}

namespace {

// Whether every element of x is finite (no NaN, no ±Inf), for the input check of
// amad_fast.attention.validation: read as raw bits (exponent all ones = not finite) on the calling
// thread. ATen's aminmax, which the check used on CPU tensors, runs a parallel region per tensor,
// and under contention a region stalls whenever one of its threads is descheduled: with two busy
// processes beside a 2-thread training step of (16, 8, 100, 32) on the 2-core Intel Xeon, the step
// took 39-46 ms (medians of 48 calls, eight runs) with the aminmax check, 25-36 ms with this
// scan (three runs) and 24-43 ms with no check at all (seven runs). Quiet, the scan of q, k and v takes about what
// a 2-thread aminmax does (0.2-0.3 ms). A tensor whose elements are not one dense block
// (expanded, overlapping, or with gaps) goes to ATen's aminmax instead (min and max propagate NaN
// and show ±Inf).
template <typename U>
bool dense_bits_finite(const U* bits, int64_t n, U exponent) {
  std::atomic<bool> finite{true};
  // chunks of 4M elements: a scan of a few MiB takes ~0.1 ms on one thread, short enough that a
  // parallel region's wake-up and barrier (and, under contention, a descheduled thread) cost more
  judged_parallel_for(n, int64_t(1) << 22, [&](int64_t b, int64_t e) {
    constexpr int64_t kLanes = 64 / sizeof(U);
    U bad[kLanes] = {};
    int64_t i = b;
    for (; i + kLanes <= e; i += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) bad[l] |= static_cast<U>((bits[i + l] & exponent) == exponent);
    for (; i < e; ++i) bad[0] |= static_cast<U>((bits[i] & exponent) == exponent);
    U any = 0;
    for (int64_t l = 0; l < kLanes; ++l) any |= bad[l];
    if (any) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

bool finite_by_aminmax(const Tensor& x) {
  Tensor mn, mx;
  std::tie(mn, mx) = at::aminmax(x);
  return at::isfinite(at::stack({mn, mx})).all().item<bool>();
}

c10::List<bool> all_finite_cpu(at::TensorList tensors) {
  c10::List<bool> out;
  for (const Tensor& x : tensors) {
    TORCH_CHECK(x.device().is_cpu(), "amad_fast::all_finite_cpu: expected CPU tensors, got ", x.device());
    const auto dt = x.scalar_type();
    if (x.numel() == 0) {
      out.push_back(true);
    } else if (!x.is_non_overlapping_and_dense()) {
      out.push_back(finite_by_aminmax(x));
    } else if (dt == at::kFloat) {
      out.push_back(dense_bits_finite<uint32_t>(static_cast<const uint32_t*>(x.data_ptr()), x.numel(), 0x7f800000u));
    } else if (dt == at::kDouble) {
      out.push_back(dense_bits_finite<uint64_t>(static_cast<const uint64_t*>(x.data_ptr()), x.numel(),
                                                0x7ff0000000000000ull));
    } else if (dt == at::kBFloat16 || dt == at::kHalf) {
      out.push_back(dense_bits_finite<uint16_t>(static_cast<const uint16_t*>(x.data_ptr()), x.numel(),
                                                dt == at::kBFloat16 ? uint16_t(0x7f80) : uint16_t(0x7c00)));
    } else {
      out.push_back(finite_by_aminmax(x));
    }
  }
  return out;
}

}  // namespace

}  // namespace amad_fast

TORCH_LIBRARY_FRAGMENT(amad_fast, m) {
  // per tensor, whether all its elements are finite (the input check of every backend on CPU)
  m.def("all_finite_cpu(Tensor[] tensors) -> bool[]", [](at::TensorList t) { return amad_fast::all_finite_cpu(t); });
  m.def("automask_cpu_isa() -> str", [] { return amad_fast::isa_name(); });
  // whether bfloat16 inputs run on 16-bit units (AMX / AVX-512-BF16) at the active ISA
  m.def("automask_cpu_bf16_units() -> bool",
        [] { return amad_fast::active_isa() == amad_fast::Isa::Brgemm && amad_fast::hardware_bf16(); });
}
