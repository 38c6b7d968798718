// The CPU's precision policy for multi-label ArcFace (arcface_precision.h).
// CPU BLAS libraries have no fast float16/bfloat16 GEMM on most CPUs (PyTorch
// falls back to a scalar loop there), and the kernels accumulate in float32 anyway: on CPU the op runs
// on float32 copies (but for the bfloat16 gradient products below) and rounds
// its outputs once. Compiled once, at the baseline level: it only calls ATen.
#include "arcface_precision.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/ops/mm.h>

#include <optional>
#include <string>

namespace hcam_ops::cpu {

namespace {

// Whether this CPU's oneDNN has bfloat16 matrix products (AVX-512 or AMX;
// torch's own test, asked once). There the two gradient products run in
// bfloat16 (twice the products per instruction of float32): their outputs are bfloat16 anyway
// and they accumulate in float32, while the cosines, which the margin and the
// loss read, still come from a float32 product.
bool bf16_gemm() {
  static const bool fast = [] {
    const auto op = c10::Dispatcher::singleton().findOp({"mkldnn::_is_mkldnn_bf16_supported", ""});
    return op.has_value() && op->typed<bool()>().call();
  }();
  return fast;
}

// torch's oneDNN linear, where torch is built with it (x86 wheels): found
// once; called boxed, as its C++ signature is not part of torch's API. Taken
// only with the schema we call it with, (X, W, B?, attr, scalars, algorithm?)
// -> Tensor: a torch that changes it falls back to at::mm.
const c10::OperatorHandle* onednn_linear() {
  static const std::optional<c10::OperatorHandle> op = [] {
    auto h = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
    if (h.has_value()) {
      const auto& schema = h->schema();
      if (schema.arguments().size() != 6 || schema.returns().size() != 1) return std::optional<c10::OperatorHandle>();
    }
    return h;
  }();
  return op.has_value() ? &*op : nullptr;
}

at::Tensor float_labels(const at::Tensor& labels) {
  return labels.scalar_type() == at::kBool ? labels : labels.to(at::kFloat);
}

}  // namespace

ArcFaceOperands arcface_operands(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& labels) {
  const auto t = features.scalar_type();
  if (t != at::kHalf && t != at::kBFloat16) return {features, weight, labels, {}, {}};
  // bfloat16 products where they pay: below ~4M multiply-adds (B * K * D,
  // each product's count with one chunk) oneDNN's bfloat16 set-up costs more
  // than the float32 products take.
  const bool large = features.size(0) * weight.size(0) * features.size(1) >= (int64_t{1} << 22);
  const bool bf16 = t == at::kBFloat16 && large && bf16_gemm();
  return {features.to(at::kFloat), weight.to(at::kFloat), float_labels(labels), bf16 ? features : at::Tensor(),
          bf16 ? weight : at::Tensor()};
}


at::Tensor arcface_linear(const at::Tensor& a, const at::Tensor& w) {
  const auto* op = onednn_linear();
  // Below ~4M multiply-adds (this product's M * K * N) oneDNN's per-call
  // set-up (a primitive per shape) costs more than it saves.
  const bool large = a.size(0) * a.size(1) * w.size(0) >= (int64_t{1} << 22);
  if (op == nullptr || !large || a.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat ||
      !at::globalContext().userEnabledMkldnn()) {
    return at::mm(a, w.t());
  }
  torch::jit::Stack stack{a, w, c10::IValue(), std::string("none"), c10::List<std::optional<at::Scalar>>(),
                          c10::IValue()};
  try {
    op->callBoxed(&stack);
  } catch (const c10::Error&) {
    // A oneDNN that refuses these operands (a layout, an ISA): the plain product.
    return at::mm(a, w.t());
  }
  return std::move(stack.back()).toTensor();
}

}  // namespace hcam_ops::cpu
