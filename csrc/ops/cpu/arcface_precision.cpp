// The CPU's precision policy for multi-label ArcFace (arcface_precision.h).
// CPU BLAS libraries have no fast float16/bfloat16 GEMM on most CPUs (PyTorch
// falls back to a scalar loop there), and the kernels accumulate in float32 anyway: on CPU the op runs
// on float32 copies (but for the bfloat16 gradient products below) and rounds
// its outputs once. Compiled once, at the baseline level: it only calls ATen.
#include "arcface_precision.h"

#include <ATen/core/dispatch/Dispatcher.h>

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

at::Tensor float_labels(const at::Tensor& labels) {
  return labels.scalar_type() == at::kBool ? labels : labels.to(at::kFloat);
}

}  // namespace

ArcFaceOperands arcface_operands(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& labels) {
  const auto t = features.scalar_type();
  if (t != at::kHalf && t != at::kBFloat16) return {features, weight, labels, {}, {}};
  const bool bf16 = t == at::kBFloat16 && bf16_gemm();
  return {features.to(at::kFloat), weight.to(at::kFloat), float_labels(labels), bf16 ? features : at::Tensor(),
          bf16 ? weight : at::Tensor()};
}

}  // namespace hcam_ops::cpu
