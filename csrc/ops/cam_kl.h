// cam_kl: the device-independent driver of the fused CAM-KL loss (cam_kl.cpp)
// and the kernels each device supplies to it (cpu/, cuda/cam_kl_kernel).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <tuple>
#include <vector>

#include "cam_passes.h"

namespace hcam_ops {

struct CamKlKernels {
  const CamPasses* passes;
  // Per sample b, over its CAMs cams[b] [L, N] (accumulation dtype) of the
  // levels fine to coarse: kl[b] (the features' dtype) = the KL summed over
  // adjacent (fine, coarse) pairs, coef[b] [L-1, N] = d KL / d fine CAM.
  void (*kl_rows)(const at::Tensor& cams, double temperature, double eps, bool f2c, const at::Tensor& kl,
                  const at::Tensor& coef);
};

std::tuple<at::Tensor, at::Tensor> cam_kl(const CamKlKernels* kernels, const at::Tensor& features,
                                          at::TensorList weights, at::TensorList indices, double temperature,
                                          double eps, c10::string_view direction);

// output_mask: which of (d features, d weights) to return; one not asked for
// is an undefined tensor (None in Python), or an empty list for the weights.
std::tuple<at::Tensor, std::vector<at::Tensor>> cam_kl_backward(const CamKlKernels* kernels, const at::Tensor& grad_kl,
                                                                const at::Tensor& features, at::TensorList weights,
                                                                at::TensorList indices, const at::Tensor& coef,
                                                                std::array<bool, 2> output_mask);

}  // namespace hcam_ops
