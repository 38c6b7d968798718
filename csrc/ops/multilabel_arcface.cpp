// Multi-label ArcFace loss (docs/ops/multilabel_arcface.md): schema and the
// device-independent driver.
//
// The cosine matrix is a matrix product (the framework's BLAS, at::mm); all
// that follows it is one fused elementwise kernel per chunk of classes (margin,
// label select, scale, BCE, and d loss / d cos). With G2 = d loss / d cos
// scaled by both inverse norms, the gradients through the normalisation are
//   P = G2 @ W  ->  d f_b = P_b - (P_b . f^_b) f^_b
//   Q = G2^T @ F ->  d w_k = Q_k - (Q_k . w^_k) w^_k
// so one chunk of [B, K] is held at a time and no normalised copy of the
// weight is made. For "mean"/"sum" the forward computes the gradients (three
// products per chunk) and the backward only scales them; "none" recomputes in
// its backward, where the upstream gradient is a [B, K] tensor.
#include <ATen/core/Tensor.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include "multilabel_arcface.h"

namespace hcam_ops {

namespace {

constexpr const char* kOp = "multilabel_arcface_loss";
constexpr double kPi = 3.14159265358979323846;

// Chunk width: `requested` when given (> 0), else the whole of K when the chunk buffers (the dot products and
// G2, features dtype) fit in 64 MiB, else as many classes as fit, rounded down
// to a multiple of 256 (whole GEMM tiles), at least 256.
int64_t chunk_columns(int64_t B, int64_t K, int64_t elem_size, int64_t requested) {
  if (requested > 0) return std::min(requested, K);
  constexpr int64_t kBudget = 64ll << 20;
  const int64_t per_column = std::max<int64_t>(1, 2 * B * elem_size);
  const int64_t fit = kBudget / per_column;
  if (fit >= K) return K;
  return std::max<int64_t>(256, fit / 256 * 256);
}

ArcFaceParams make_params(double scale, double margin, bool easy) {
  // [0, pi) as the published head takes it (its branch rules below hold there; 0 is plain scaled-cosine BCE).
  TORCH_CHECK(margin >= 0 && margin < kPi, kOp, ": margin must be in [0, pi), got ", margin);
  TORCH_CHECK(std::isfinite(scale) && scale > 0, kOp, ": scale must be positive and finite, got ", scale);
  return {scale, std::cos(margin), std::sin(margin), std::cos(kPi - margin), std::sin(kPi - margin) * margin, easy};
}

void check_inputs(const at::Tensor& f, const at::Tensor& w, const at::Tensor& labels) {
  TORCH_CHECK(f.dim() == 2, kOp, ": features must be [B, D], got shape ", f.sizes());
  TORCH_CHECK(w.dim() == 2, kOp, ": weight must be [K, D], got shape ", w.sizes());
  TORCH_CHECK(f.size(1) == w.size(1), kOp, ": features have D = ", f.size(1), ", weight has ", w.size(1));
  TORCH_CHECK(f.size(1) > 0 && w.size(0) > 0, kOp, ": needs D > 0 and K > 0");
  check_float_type(f, kOp, "features");
  const auto t = f.scalar_type();
  TORCH_CHECK(w.scalar_type() == t, kOp, ": weight is ", w.scalar_type(), ", features ", t);
  TORCH_CHECK(labels.dim() == 2 && labels.size(0) == f.size(0) && labels.size(1) == w.size(0), kOp,
              ": labels must be [B, K] = [", f.size(0), ", ", w.size(0), "], got ", labels.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kBool || labels.scalar_type() == t, kOp, ": labels must be bool or ", t,
              ", got ", labels.scalar_type());
  TORCH_CHECK(w.device() == f.device() && labels.device() == f.device(), kOp,
              ": features, weight and labels must be on one device, got ", f.device(), ", ", w.device(), ", ",
              labels.device());
}

struct Outputs {
  at::Tensor loss_rows, loss, logits, grad_features, grad_weight;
};

// The chunk loop. grad: the upstream [B, K] gradient ("none" backward) or
// undefined; want_grads: which input gradients (features, weight) to
// accumulate; grad_scale: scales them (1 / (B*K) for "mean").
// half_features / half_weight: when defined (ArcFaceOperands: bfloat16 on a
// CPU with bfloat16 products), the bfloat16 inputs of which features / weight are float32
// copies; the gradient products then run in bfloat16 on them and on d loss /
// d cos rounded to bfloat16, and the weight gradient comes back in bfloat16.
Outputs run(const ArcFaceKernels& k, const at::Tensor& features, const at::Tensor& weight, const at::Tensor& labels,
            const ArcFaceParams& p, const at::Tensor& grad, bool want_loss_rows, bool want_loss, bool want_logits,
            std::array<bool, 2> want_grads, double grad_scale, int64_t chunk_size, const at::Tensor& half_features = {},
            const at::Tensor& half_weight = {}) {
  const auto [want_gf, want_gw] = want_grads;
  const bool any_grad = want_gf || want_gw;
  const c10::DeviceGuard guard(features.device());
  // The products below are ATen calls inside our kernel: under an autocast
  // region they would be cast to its dtype (the op itself has no autocast
  // kernel and gets the promoted inputs), so autocast is off in here.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const auto f = features.contiguous(), w = weight.contiguous(), y = labels.contiguous();
  const bool half = half_features.defined();
  const auto fg = half ? half_features.contiguous() : f, wg = half ? half_weight.contiguous() : w;
  const int64_t B = f.size(0), D = f.size(1), K = w.size(0);
  const auto opts = f.options();
  const auto acc = opts.dtype(acc_type_of(f.scalar_type()));
  Outputs out;
  // Row sums of the loss in double: K terms per row, often 1e5.
  if (want_loss_rows) out.loss_rows = at::zeros({B}, opts.dtype(at::kDouble));
  if (want_loss) out.loss = at::empty({B, K}, opts);
  if (want_logits) out.logits = at::empty({B, K}, opts);
  if (B == 0) {
    if (want_gf) out.grad_features = at::zeros({B, D}, opts);
    if (want_gw) out.grad_weight = at::zeros({K, D}, opts);
    return out;
  }
  const auto inv_f = k.inv_norms(f), inv_w = k.inv_norms(w);
  const int64_t kc = chunk_columns(B, K, f.element_size(), chunk_size);
  at::Tensor dot_buf;
  if (!k.linear) dot_buf = at::empty({B * kc}, opts);
  at::Tensor g2_buf, P;
  // In bfloat16 (half): the gradient products' operand, written so by the chunk pass.
  if (any_grad) g2_buf = at::empty({B * kc}, half ? opts.dtype(wg.scalar_type()) : opts);
  // P: the first chunk's product itself where it is in P's dtype (no zeros to add to).
  const bool p_whole = k.linear && kc >= K && !half;
  if (want_gf && !p_whole) P = at::zeros({B, D}, acc);
  // One chunk with the device's own product: its result is the weight gradient.
  const bool gw_whole = k.linear && kc >= K;
  if (want_gw && !gw_whole) out.grad_weight = at::empty({K, D}, wg.options());
  for (int64_t k0 = 0; k0 < K; k0 += kc) {
    const int64_t n = std::min(kc, K - k0);
    const auto w_chunk = w.narrow(0, k0, n);
    ArcFaceChunk c;
    if (k.linear) {
      c.dot = k.linear(f, w_chunk);
    } else {
      c.dot = dot_buf.narrow(0, 0, B * n).view({B, n});
      at::mm_out(c.dot, f, w_chunk.t());
    }
    c.inv_f = inv_f;
    c.inv_w = inv_w;
    c.labels = y;
    c.grad = grad;
    c.k0 = k0;
    c.n = n;
    c.loss_rows = out.loss_rows;
    c.loss = out.loss;
    c.logits = out.logits;
    if (any_grad) c.g2 = g2_buf.narrow(0, 0, B * n).view({B, n});
    k.chunk(c, p);
    const auto& g2 = c.g2;
    if (want_gf) {
      if (p_whole) {
        P = k.linear(g2, w_chunk.t());
      } else if (k.linear) {
        P.add_(k.linear(g2, (half ? wg.narrow(0, k0, n) : w_chunk).t()));
      } else if (P.scalar_type() == g2.scalar_type()) {
        P.addmm_(g2, w_chunk);
      } else {
        P.add_(at::mm(g2, wg.narrow(0, k0, n)));
      }
    }
    if (want_gw) {
      if (gw_whole) {
        out.grad_weight = k.linear(g2.t(), fg.t());
      } else if (k.linear) {
        out.grad_weight.narrow(0, k0, n).copy_(k.linear(g2.t(), fg.t()));
      } else {
        auto rows = out.grad_weight.narrow(0, k0, n);  // contiguous rows of [K, D]
        at::mm_out(rows, g2.t(), fg);
      }
    }
  }
  if (want_gf) {
    out.grad_features = at::empty({B, D}, opts);
    k.project(P, f, grad_scale, out.grad_features);
  }
  if (want_gw) k.project(out.grad_weight, wg, grad_scale, out.grad_weight);
  return out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multilabel_arcface(
    const ArcFaceKernels* kernels, const at::Tensor& features, const at::Tensor& weight, const at::Tensor& labels,
    double scale, double margin, bool easy_margin, c10::string_view reduction, std::array<bool, 2> grad_mask,
    bool return_logits, int64_t chunk_size) {
  check_inputs(features, weight, labels);
  const auto t = features.scalar_type();
  const auto [f, w, y, hf, hw] = kernels->operands(features, weight, labels);
  const auto p = make_params(scale, margin, easy_margin);
  const bool none = reduction == "none", mean = reduction == "mean";
  TORCH_CHECK(none || mean || reduction == "sum", kOp, ": reduction must be 'mean', 'sum' or 'none', got '",
              std::string(reduction), "'");
  const int64_t B = features.size(0), K = weight.size(0);
  const double red = mean ? 1.0 / std::max<double>(1.0, static_cast<double>(B) * K) : 1.0;
  // "none" computes its gradients in the backward, for a [B, K] upstream gradient.
  const std::array<bool, 2> grads{grad_mask[0] && !none, grad_mask[1] && !none};
  auto out = run(*kernels, f, w, y, p, at::Tensor(), !none, none, return_logits, grads, red, chunk_size, hf, hw);
  // Outputs never alias: each absent one is its own empty tensor.
  auto or_empty = [&](const at::Tensor& x) { return x.defined() ? x.to(t) : at::empty({0}, features.options()); };
  at::Tensor loss = none ? out.loss.to(t) : out.loss_rows.sum().mul_(red).to(t);
  return {loss, or_empty(out.grad_features), or_empty(out.grad_weight), or_empty(out.logits)};
}

std::tuple<at::Tensor, at::Tensor> multilabel_arcface_backward(const ArcFaceKernels* kernels, const at::Tensor& grad,
                                                               const at::Tensor& features, const at::Tensor& weight,
                                                               const at::Tensor& labels, double scale, double margin,
                                                               bool easy_margin, int64_t chunk_size,
                                                               std::array<bool, 2> output_mask) {
  check_inputs(features, weight, labels);
  TORCH_CHECK(grad.sizes() == labels.sizes(), kOp, "_backward: grad must be [B, K], got ", grad.sizes());
  const auto t = features.scalar_type();
  const auto [f, w, y, hf, hw] = kernels->operands(features, weight, labels);
  const auto p = make_params(scale, margin, easy_margin);
  auto out = run(*kernels, f, w, y, p, grad.to(f.scalar_type()).contiguous(), false, false, false, output_mask, 1.0,
                 chunk_size, hf, hw);
  auto in_dtype = [&](const at::Tensor& x) { return x.defined() ? x.to(t) : x; };
  return {in_dtype(out.grad_features), in_dtype(out.grad_weight)};
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // features [B, D], weight [K, D], labels [B, K] (bool or the features' dtype).
  // Returns the loss ([] or [B, K] for "none"); for "mean"/"sum", the
  // gradients of features and weight at unit upstream gradient that
  // grad_mask asks for (else empty); the training logits if return_logits
  // (else empty).
  m.def(
      "multilabel_arcface(Tensor features, Tensor weight, Tensor labels, float scale,"
      " float margin, bool easy_margin, str reduction, bool[2] grad_mask, bool return_logits,"
      " int chunk_size) -> (Tensor, Tensor, Tensor, Tensor)");
  // chunk_size: classes per chunk, 0 to choose from the sizes (chunk_columns).
  // Reduction "none": the gradients for an upstream [B, K] gradient that
  // output_mask asks for; one not asked for comes back undefined (None).
  m.def(
      "multilabel_arcface_backward(Tensor grad, Tensor features, Tensor weight, Tensor labels,"
      " float scale, float margin, bool easy_margin, int chunk_size, bool[2] output_mask) -> (Tensor, Tensor)");
}

}  // namespace hcam_ops
