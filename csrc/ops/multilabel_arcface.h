// Multi-label ArcFace: the device-independent driver (multilabel_arcface.cpp)
// and the kernels each device supplies to it, called around its matrix products.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <tuple>

#include "arcface_math.h"

namespace hcam_ops {

// One chunk of classes [k0, k0 + n) for all B samples.
struct ArcFaceChunk {
  at::Tensor dot;     // [B, n] contiguous: <f_b, w_k> of the raw rows
  at::Tensor inv_f;   // [B] accumulation dtype: 1 / max(||f_b||, 1e-12)
  at::Tensor inv_w;   // [K] accumulation dtype
  at::Tensor labels;  // [B, K] contiguous, bool or the features' dtype
  at::Tensor grad;    // [B, K] upstream gradient (reduction "none" backward) or undefined
  int64_t k0 = 0, n = 0;
  at::Tensor loss_rows;  // [B] float64: += this chunk's row sums, or undefined
  at::Tensor loss;       // [B, K] elementwise loss ("none"), or undefined
  at::Tensor logits;     // [B, K] training logits, or undefined
  at::Tensor g2;         // [B, n] contiguous: d loss / d cos * inv_f[b] * inv_w[k], or undefined
};

// inv_norms: 1 / max(||x_r||, 1e-12) per row of a contiguous [R, D] tensor.
// chunk: the fused elementwise pass over one chunk of classes.
// project: dst[r] = scale * (src[r] - (src[r] . x^_r) x^_r), x^_r = x_r / ||x_r||,
// the gradient through the normalisation; a row whose norm is clamped (<= 1e-12)
// is scaled only. dst may be src. Same contract on both devices.
// What the driver's products and kernels run on: features, weight and labels,
// and, where they are float32 copies of bfloat16 inputs whose gradient
// products run in bfloat16, those inputs (half_features, half_weight; else
// undefined).
struct ArcFaceOperands {
  at::Tensor features, weight, labels, half_features, half_weight;
};

struct ArcFaceKernels {
  at::Tensor (*inv_norms)(const at::Tensor& x);
  void (*chunk)(const ArcFaceChunk& c, const ArcFaceParams& p);
  void (*project)(const at::Tensor& src, const at::Tensor& x, double scale, const at::Tensor& dst);
  // The device's precision policy: the operands the driver runs on for the
  // inputs, float32 copies of float16 / bfloat16 ones on the CPU (its BLAS
  // has no fast half-precision product: cpu/arcface_precision.h), the inputs
  // themselves on CUDA (cuBLAS). A property of the device's kernels, not of
  // where the tensors are: an emulated CUDA run has them on the host.
  ArcFaceOperands (*operands)(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& labels);
  // The device's matrix product a @ w^T (a [M, I], w [N, I], either may be a
  // transposed view; a new contiguous [M, N] tensor), or null for at::mm.
  // The CPU's takes oneDNN's float32 product (cpu/arcface_precision.h).
  at::Tensor (*linear)(const at::Tensor& a, const at::Tensor& w) = nullptr;
};

// grad_mask (forward) and output_mask (backward): which of (d features,
// d weight) to compute; one not asked for costs nothing and comes back empty
// (forward) or undefined (backward, None in Python).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multilabel_arcface(
    const ArcFaceKernels* kernels, const at::Tensor& features, const at::Tensor& weight, const at::Tensor& labels,
    double scale, double margin, bool easy_margin, c10::string_view reduction, std::array<bool, 2> grad_mask,
    bool return_logits, int64_t chunk_size);

std::tuple<at::Tensor, at::Tensor> multilabel_arcface_backward(const ArcFaceKernels* kernels, const at::Tensor& grad,
                                                               const at::Tensor& features, const at::Tensor& weight,
                                                               const at::Tensor& labels, double scale, double margin,
                                                               bool easy_margin, int64_t chunk_size,
                                                               std::array<bool, 2> output_mask);

}  // namespace hcam_ops
