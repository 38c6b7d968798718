// The feature passes a device supplies to the drivers of cam_gather and the
// fused CAM-KL op (cam_gather.cpp, cam_kl.cpp): their contract. The devices
// define them in cpu/cam_passes_kernel.cpp and cuda/cam_passes_kernel.cu.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "cam_features.h"

namespace hcam_ops {

struct CamPasses {
  // One read of the features: cams[b, l, n] = <features[b, n, :], weight_l[index_l[b], :]>
  // for every level. cams is [B, L, N] in the accumulation dtype.
  void (*cam_pass)(const FeatureView& v, const Levels& levels, const at::Tensor& cams);
  // One read of the features for the backward of the first coef.size(1) levels:
  //   dx[b, n, c]            = sum_l g[b, l, n] * weight_l[index_l[b], c]
  //   partial[b, s, l, c]    = sum over positions n of split s of g[b, l, n] * features[b, n, c]
  // with g = coef * scale[b] (scale: the per-sample upstream gradient, optional).
  // dx_rows is the [B, R, S] alias of the features gradient, or undefined when
  // only the weights' gradients are wanted (then no dx is written). Returns partial.
  at::Tensor (*grad_pass)(const FeatureView& v, const Levels& levels, const at::Tensor& coef,
                          const std::optional<at::Tensor>& scale, const at::Tensor& dx_rows);
  // dw[k, :] = sum over samples b and levels l in [l0, l1) with index_l[b] == k of
  // partial[b, :, l, :], summed in a fixed order (deterministic). On CUDA,
  // levels [l0, l1) must be one level, or levels sharing one [B, L] index (cam_gather).
  void (*class_reduce)(const at::Tensor& partial, const Levels& levels, int64_t l0, int64_t l1, const at::Tensor& dw);
  // The index-range policy, a property of the device (not of where the
  // tensors are: an emulated CUDA run has them on the host). The CPU checks
  // every class index before its passes (host memory: the check is free);
  // CUDA's passes write NaN for an index out of range instead, since a check
  // would cost a device sync (the Python face makes it unless check_index=False).
  bool checks_index_range;
};

}  // namespace hcam_ops
