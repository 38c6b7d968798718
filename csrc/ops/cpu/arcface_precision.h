// The CPU's precision policy for multi-label ArcFace (ArcFaceKernels::operands,
// ../multilabel_arcface.h), defined in arcface_precision.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include "../multilabel_arcface.h"

namespace hcam_ops::cpu {

// float16 / bfloat16 inputs as float32 copies (labels other than bool too),
// with the bfloat16 originals for the gradient products where this CPU has
// bfloat16 matrix products; other dtypes as they are.
ArcFaceOperands arcface_operands(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& labels);

// a @ w^T. float32: oneDNN's product (mkldnn::_linear_pointwise) where torch
// has it, twice MKL's speed on an AVX-512 AMD CPU (MKL runs its AVX2 kernel
// there); other dtypes, or no oneDNN: at::mm.
at::Tensor arcface_linear(const at::Tensor& a, const at::Tensor& w);

}  // namespace hcam_ops::cpu
