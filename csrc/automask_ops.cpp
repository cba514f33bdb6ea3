// AutoMask attention as torch ops (spec §1): op schemas, input checks shared by the CPU and CUDA
// kernels, the modulation tables and their chain rule (tiny: H·S·L·P, done with ATen ops on any
// device), and the autograd formula (a C++ autograd::Function on the Autograd key, which works on
// every torch >= 2.3). Fake (meta) kernels are registered from Python, amad_fast/backends/cpp.py.
#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>

#include "automask.h"

namespace amad_fast {

using at::Tensor;

at::ScalarType compute_dtype(const Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

Tensor not_computed(const Tensor& like) { return at::empty({0}, like.options()); }

static bool is_kernel_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

void check_forward_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& freqs,
                          const Tensor& weights, const Tensor& mix, double scale) {
  TORCH_CHECK(q.dim() == 4, op, ": q: expected 4 dimensions (B, H, L, D), got shape ", q.sizes());
  const auto B = q.size(0), H = q.size(1), L = q.size(2), D = q.size(3);
  TORCH_CHECK(k.sizes() == q.sizes(), op, ": k: expected shape ", q.sizes(), " (that of q), got ", k.sizes());
  TORCH_CHECK(v.sizes() == q.sizes(), op, ": v: expected shape ", q.sizes(), " (that of q), got ", v.sizes());
  TORCH_CHECK(B > 0 && H > 0 && L > 0, op, ": q: expected non-empty B, H and L, got shape ", q.sizes());
  TORCH_CHECK(D > 0 && D % 2 == 0, op, ": q: expected an even head dim D >= 2, got D = ", D);
  TORCH_CHECK(freqs.dim() == 3 && freqs.size(0) == H && freqs.size(1) > 0 && freqs.size(2) == D / 2, op,
              ": freqs: expected shape (H, S, D/2) = (", H, ", S, ", D / 2, ") with S >= 1, got ", freqs.sizes());
  const auto S = freqs.size(1);
  TORCH_CHECK(weights.dim() == 2 && weights.size(0) == H && weights.size(1) == S, op,
              ": weights: expected shape (H, S) = (", H, ", ", S, "), got ", weights.sizes());
  TORCH_CHECK(mix.dim() == 1 && mix.size(0) == H, op, ": mix: expected shape (H,) = (", H, ",), got ", mix.sizes());
  TORCH_CHECK(is_kernel_float(q.scalar_type()), op,
              ": q: expected dtype float16, bfloat16, float32 or float64, got ", q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": k, v: expected dtype ", q.scalar_type(), " (that of q), got ", k.scalar_type(), " and ",
              v.scalar_type());
  TORCH_CHECK(is_kernel_float(freqs.scalar_type()), op,
              ": freqs: expected a floating dtype (16, 32 or 64 bit), got ", freqs.scalar_type());
  TORCH_CHECK(weights.scalar_type() == freqs.scalar_type() && mix.scalar_type() == freqs.scalar_type(), op,
              ": weights, mix: expected dtype ", freqs.scalar_type(), " (that of freqs), got ", weights.scalar_type(),
              " and ", mix.scalar_type());
  for (const Tensor* t : {&k, &v, &freqs, &weights, &mix}) {
    TORCH_CHECK(t->device() == q.device(), op, ": expected every input on ", q.device(), " (that of q), got one on ",
                t->device());
  }
  TORCH_CHECK(std::isfinite(scale) && scale > 0, op, ": scale: expected a finite positive float, got ", scale);
}

void check_key_padding_mask(const char* op, const c10::optional<Tensor>& key_padding_mask, const Tensor& q) {
  if (!key_padding_mask || !key_padding_mask->defined()) return;
  const Tensor& m = *key_padding_mask;
  TORCH_CHECK(m.scalar_type() == at::kBool, op, ": key_padding_mask: expected dtype bool, got ", m.scalar_type());
  TORCH_CHECK(m.dim() == 2 && m.size(0) == q.size(0) && m.size(1) == q.size(2), op,
              ": key_padding_mask: expected shape (B, L) = (", q.size(0), ", ", q.size(2), "), got ", m.sizes());
  TORCH_CHECK(m.device() == q.device(), op, ": key_padding_mask: expected device ", q.device(), " (that of q), got ",
              m.device());
}

void check_attn_bias(const char* op, const c10::optional<Tensor>& attn_bias, const Tensor& q) {
  if (!attn_bias || !attn_bias->defined()) return;
  const Tensor& m = *attn_bias;
  const auto B = q.size(0), H = q.size(1), L = q.size(2);
  TORCH_CHECK(m.scalar_type() == compute_dtype(q), op, ": attn_bias: expected dtype ", compute_dtype(q),
              " (the dtype scores are formed in), got ", m.scalar_type());
  TORCH_CHECK(m.dim() == 3 && (m.size(0) == 1 || m.size(0) == B * H) && m.size(1) == L && m.size(2) == L, op,
              ": attn_bias: expected shape (1, L, L) or (B·H, L, L) with B·H = ", B * H, ", L = ", L, ", got ",
              m.sizes());
  TORCH_CHECK(m.device() == q.device(), op, ": attn_bias: expected device ", q.device(), " (that of q), got ",
              m.device());
}

static void check_like(const char* op, const char* name, const Tensor& t, at::IntArrayRef shape, at::ScalarType dtype,
                       const at::Device& device) {
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, ": expected shape ", shape, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, ": expected dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == device, op, ": ", name, ": expected device ", device, ", got ", t.device());
}

void check_backward_inputs(const char* op, const c10::optional<Tensor>& grad_out,
                           const c10::optional<Tensor>& grad_out_local, const c10::optional<Tensor>& grad_out_global,
                           const c10::optional<Tensor>& grad_kl_local, const c10::optional<Tensor>& grad_kl_global,
                           const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& freqs,
                           const Tensor& weights, const Tensor& mix, const Tensor& out_local, const Tensor& out_global,
                           const Tensor& kl_local, const Tensor& kl_global, const Tensor& lse_local,
                           const Tensor& lse_global, double scale) {
  check_forward_inputs(op, q, k, v, freqs, weights, mix, scale);
  const auto dev = q.device();
  const auto rows = q.sizes().slice(0, 3);
  // the branch outputs, or empty when the forward ran with need_branches=False (then none has a gradient)
  const bool have_branches = out_local.numel() > 0;
  if (have_branches) {
    check_like(op, "out_local", out_local, q.sizes(), q.scalar_type(), dev);
    check_like(op, "out_global", out_global, q.sizes(), q.scalar_type(), dev);
  }
  check_like(op, "lse_local", lse_local, rows, at::kDouble, dev);  // float64 for every input dtype
  check_like(op, "lse_global", lse_global, rows, at::kDouble, dev);
  const bool have_kl = kl_local.numel() > 0;
  if (have_kl) {
    check_like(op, "kl_local", kl_local, rows, q.scalar_type(), dev);
    check_like(op, "kl_global", kl_global, rows, q.scalar_type(), dev);
  }
  if (grad_out) check_like(op, "grad_out", *grad_out, q.sizes(), q.scalar_type(), dev);
  TORCH_CHECK(have_branches || (!grad_out_local && !grad_out_global), op,
              ": a branch output gradient came but the forward ran with need_branches=False");
  if (grad_out_local) check_like(op, "grad_out_local", *grad_out_local, q.sizes(), q.scalar_type(), dev);
  if (grad_out_global) check_like(op, "grad_out_global", *grad_out_global, q.sizes(), q.scalar_type(), dev);
  for (const auto* g : {&grad_kl_local, &grad_kl_global}) {
    if (*g) {
      TORCH_CHECK(have_kl, op, ": a kl gradient came but the forward ran with need_divergence=False");
      check_like(op, "grad_kl", **g, rows, q.scalar_type(), dev);
    }
  }
}

// Angles θ_{h,s,p}·i as (H, S, L, P), in `dtype` (contiguous whatever the strides of freqs, so
// every reduction below runs in one order).
static Tensor angles(const Tensor& freqs, int64_t L, at::ScalarType dtype) {
  auto f = freqs.to(dtype).contiguous();
  auto pos = at::arange(L, f.options());
  return f.unsqueeze(2) * pos.view({1, 1, L, 1});
}

std::tuple<Tensor, Tensor> modulation_tables(const Tensor& freqs, const Tensor& weights, int64_t L,
                                             at::ScalarType dtype) {
  auto angle = angles(freqs, L, dtype);
  auto w = weights.to(dtype).contiguous().unsqueeze(-1).unsqueeze(-1);  // (H, S, 1, 1)
  return {(w * angle.cos()).sum(1).contiguous(), (w * angle.sin()).sum(1).contiguous()};
}

std::tuple<Tensor, Tensor> modulation_backward(const Tensor& dc, const Tensor& ds, const Tensor& freqs,
                                               const Tensor& weights) {
  const auto L = dc.size(1);
  const auto dtype = dc.scalar_type();
  auto angle = angles(freqs, L, dtype);  // (H, S, L, P)
  auto cos_a = angle.cos(), sin_a = angle.sin();
  auto dc_ = dc.unsqueeze(1), ds_ = ds.unsqueeze(1);  // (H, 1, L, P)
  auto dweights = (cos_a * dc_ + sin_a * ds_).sum({2, 3});
  auto pos = at::arange(L, dc.options()).view({1, 1, L, 1});
  auto w = weights.to(dtype).contiguous().unsqueeze(-1);  // (H, S, 1)
  auto dfreqs = w * (pos * (cos_a * ds_ - sin_a * dc_)).sum(2);
  return {dfreqs.to(freqs.scalar_type()), dweights.to(weights.scalar_type())};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

ForwardResult call_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& freqs,
                           const Tensor& weights, const Tensor& mix, double scale, bool need_divergence,
                           const c10::optional<Tensor>& key_padding_mask, bool is_causal,
                           const c10::optional<Tensor>& attn_bias, bool need_branches) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("amad_fast::automask_forward", "")
                       .typed<ForwardResult(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                            const Tensor&, const Tensor&, double, bool,
                                            const c10::optional<Tensor>&, bool, const c10::optional<Tensor>&,
                                            bool)>();
  return op.call(q, k, v, freqs, weights, mix, scale, need_divergence, key_padding_mask, is_causal, attn_bias,
                 need_branches);
}

using BackwardSig = BackwardResult(const c10::optional<Tensor>&, const c10::optional<Tensor>&,
                                   const c10::optional<Tensor>&, const c10::optional<Tensor>&,
                                   const c10::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const Tensor&, const Tensor&, const Tensor&, double,
                                   const c10::optional<Tensor>&, bool, const c10::optional<Tensor>&);

c10::optional<Tensor> defined_or_none(const Tensor& t) {
  return t.defined() ? c10::optional<Tensor>(t) : c10::nullopt;
}

// The backward op is not itself differentiable (no double backward): say so if asked.
class AutoMaskBackwardFunction : public torch::autograd::Function<AutoMaskBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const c10::optional<Tensor>& g0,
                               const c10::optional<Tensor>& g1, const c10::optional<Tensor>& g2,
                               const c10::optional<Tensor>& g3, const c10::optional<Tensor>& g4, const Tensor& q,
                               const Tensor& k, const Tensor& v, const Tensor& freqs, const Tensor& weights,
                               const Tensor& mix, const Tensor& out_local, const Tensor& out_global,
                               const Tensor& kl_local, const Tensor& kl_global, const Tensor& lse_local,
                               const Tensor& lse_global, double scale, const c10::optional<Tensor>& key_padding_mask,
                               bool is_causal, const c10::optional<Tensor>& attn_bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("amad_fast::automask_backward", "")
                         .typed<BackwardSig>();
    auto r = op.call(g0, g1, g2, g3, g4, q, k, v, freqs, weights, mix, out_local, out_global, kl_local, kl_global,
                     lse_local, lse_global, scale, key_padding_mask, is_causal, attn_bias);
    return {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r), std::get<4>(r), std::get<5>(r)};
  }
  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false, "amad_fast::automask_backward: double backward (gradients of gradients) is not supported "
                       "by the cpp backend; use backend=\"reference\"");
  }
};

BackwardResult backward_autograd(const c10::optional<Tensor>& g0, const c10::optional<Tensor>& g1,
                                 const c10::optional<Tensor>& g2, const c10::optional<Tensor>& g3,
                                 const c10::optional<Tensor>& g4, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& freqs, const Tensor& weights, const Tensor& mix,
                                 const Tensor& out_local, const Tensor& out_global, const Tensor& kl_local,
                                 const Tensor& kl_global, const Tensor& lse_local, const Tensor& lse_global,
                                 double scale, const c10::optional<Tensor>& key_padding_mask, bool is_causal,
                                 const c10::optional<Tensor>& attn_bias) {
  auto r = AutoMaskBackwardFunction::apply(g0, g1, g2, g3, g4, q, k, v, freqs, weights, mix, out_local, out_global,
                                           kl_local, kl_global, lse_local, lse_global, scale, key_padding_mask,
                                           is_causal, attn_bias);
  return {r[0], r[1], r[2], r[3], r[4], r[5]};
}

// Forward op with its backward formula: the backward op recomputes both score maps from q, k
// and the saved log-sum-exps; the divergence anchor M is a constant (spec §1.5).
class AutoMaskFunction : public torch::autograd::Function<AutoMaskFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& freqs, const Tensor& weights, const Tensor& mix, double scale,
                               bool need_divergence, const c10::optional<Tensor>& key_padding_mask, bool is_causal,
                               const c10::optional<Tensor>& attn_bias, bool need_branches) {
    ForwardResult r;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      r = call_forward(q, k, v, freqs, weights, mix, scale, need_divergence, key_padding_mask, is_causal, attn_bias,
                       need_branches);
    }
    auto [out, out_local, out_global, kl_local, kl_global, lse_local, lse_global] = r;
    // outputs the loss does not use reach backward undefined, not as zero tensors: the kernels then
    // skip their products (no branch gradients: both maps share dO·vᵀ; no dO: no dP at all)
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({q, k, v, freqs, weights, mix, out_local, out_global, kl_local, kl_global, lse_local,
                            lse_global, key_padding_mask.value_or(Tensor()), attn_bias.value_or(Tensor())});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["is_causal"] = is_causal;
    ctx->saved_data["need_divergence"] = need_divergence;
    ctx->mark_non_differentiable({lse_local, lse_global});
    if (!need_divergence) ctx->mark_non_differentiable({kl_local, kl_global});
    // not computed (the empty 1-d tensor of not_computed; dim, not numel, which is symbolic under tracing)
    if (out_local.dim() != 4) ctx->mark_non_differentiable({out_local, out_global});
    return {out, out_local, out_global, kl_local, kl_global, lse_local, lse_global};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const double scale = ctx->saved_data["scale"].toDouble();
    const bool have_kl = ctx->saved_data["need_divergence"].toBool();
    auto r = backward_autograd(defined_or_none(grads[0]), defined_or_none(grads[1]), defined_or_none(grads[2]),
                               have_kl ? defined_or_none(grads[3]) : c10::nullopt,
                               have_kl ? defined_or_none(grads[4]) : c10::nullopt, s[0], s[1], s[2], s[3], s[4],
                               s[5], s[6], s[7], s[8], s[9], s[10], s[11], scale, defined_or_none(s[12]),
                               ctx->saved_data["is_causal"].toBool(), defined_or_none(s[13]));
    // no gradient for the masks: dispatch gives the kernels no bias that requires one
    return {std::get<0>(r), std::get<1>(r), std::get<2>(r), std::get<3>(r), std::get<4>(r), std::get<5>(r),
            Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

ForwardResult forward_autograd(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& freqs,
                               const Tensor& weights, const Tensor& mix, double scale, bool need_divergence,
                               const c10::optional<Tensor>& key_padding_mask, bool is_causal,
                               const c10::optional<Tensor>& attn_bias, bool need_branches) {
  auto r = AutoMaskFunction::apply(q, k, v, freqs, weights, mix, scale, need_divergence, key_padding_mask, is_causal,
                                   attn_bias, need_branches);
  return {r[0], r[1], r[2], r[3], r[4], r[5], r[6]};
}

}  // namespace
}  // namespace amad_fast

TORCH_LIBRARY_FRAGMENT(amad_fast, m) {
  m.def(
      "automask_forward(Tensor q, Tensor k, Tensor v, Tensor freqs, Tensor weights, Tensor mix, float scale, "
      "bool need_divergence, Tensor? key_padding_mask=None, bool is_causal=False, Tensor? attn_bias=None, "
      "bool need_branches=True) -> "
      "(Tensor out, Tensor out_local, Tensor out_global, Tensor kl_local, Tensor kl_global, Tensor lse_local, "
      "Tensor lse_global)");
  m.def(
      "automask_backward(Tensor? grad_out, Tensor? grad_out_local, Tensor? grad_out_global, Tensor? grad_kl_local, "
      "Tensor? grad_kl_global, Tensor q, Tensor k, Tensor v, Tensor freqs, Tensor weights, Tensor mix, "
      "Tensor out_local, Tensor out_global, Tensor kl_local, Tensor kl_global, Tensor lse_local, "
      "Tensor lse_global, float scale, Tensor? key_padding_mask=None, bool is_causal=False, "
      "Tensor? attn_bias=None) -> (Tensor dq, Tensor dk, Tensor dv, Tensor dfreqs, Tensor dweights, Tensor dmix)");
}

TORCH_LIBRARY_IMPL(amad_fast, Autograd, m) {
  m.impl("automask_forward", &amad_fast::forward_autograd);
  m.impl("automask_backward", &amad_fast::backward_autograd);
}

TORCH_LIBRARY_IMPL(amad_fast, CPU, m) {
  m.impl("automask_forward", &amad_fast::automask_forward_cpu);
  m.impl("automask_backward", &amad_fast::automask_backward_cpu);
}
