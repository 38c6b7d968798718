// Multi-label ArcFace: the per-device kernels the host driver
// (multilabel_arcface.cpp) calls around its matrix products.
#pragma once

#include <ATen/core/Tensor.h>

#include "arcface_math.h"

#include "cpu/isa.h"

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
namespace cpu {
// One specialisation per compiled level (cpu/isa.h); call through HCAM_CPU_DISPATCH.
template <Isa>
at::Tensor arcface_inv_norms(const at::Tensor& x);
template <Isa>
void arcface_chunk(const ArcFaceChunk& c, const ArcFaceParams& p);
template <Isa>
void arcface_project(const at::Tensor& src, const at::Tensor& x, double scale, const at::Tensor& dst);
}  // namespace cpu

namespace cuda {
at::Tensor arcface_inv_norms(const at::Tensor& x);
void arcface_chunk(const ArcFaceChunk& c, const ArcFaceParams& p);
void arcface_project(const at::Tensor& src, const at::Tensor& x, double scale, const at::Tensor& dst);
}  // namespace cuda

}  // namespace hcam_ops
