// CPU passes over the features, shared by cam_gather and the fused CAM-KL op.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../cam_features.h"

// In the namespace of the level being compiled (isa.h): the passes are
// called only from the kernels compiled with them.
namespace hcam_ops::cpu::CPU_CAPABILITY {

// One read of the features: cams[b, l, n] = <features[b, n, :], weight_l[index_l[b], :]>
// for every level. cams is [B, L, N] in the accumulation dtype.
void cam_pass(const FeatureView& v, const Levels& levels, const at::Tensor& cams);

// One read of the features for the backward of the first coef.size(1) levels:
//   dx[b, n, c]            = sum_l g[b, l, n] * weight_l[index_l[b], c]
//   partial[b, s, l, c]    = sum over positions n of split s of g[b, l, n] * features[b, n, c]
// with g = coef * scale[b] (scale: the per-sample upstream gradient, optional).
// dx_rows is the [B, R, S] alias of the features gradient, or undefined when
// only the weights' gradients are wanted (then no dx is written). Returns partial.
at::Tensor grad_pass(const FeatureView& v, const Levels& levels, const at::Tensor& coef,
                     const std::optional<at::Tensor>& scale, const at::Tensor& dx_rows);

// dw[k, :] = sum over samples b and levels l in [l0, l1) with index_l[b] == k of
// partial[b, :, l, :], summed in a fixed order (deterministic).
void class_reduce(const at::Tensor& partial, const Levels& levels, int64_t l0, int64_t l1, const at::Tensor& dw);

// The three, as the drivers of cam_gather and cam_kl take them.
inline constexpr CamPasses kCamPasses{&cam_pass, &grad_pass, &class_reduce, /*checks_index_range=*/true};

}  // namespace hcam_ops::cpu::CPU_CAPABILITY
