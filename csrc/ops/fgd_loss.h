// FGD feature-distillation loss: the device-independent driver (fgd_loss.cpp)
// and the kernels each device supplies to it. Same contract on both devices;
// see fgd_math.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "fgd_math.h"

namespace hcam_ops {

// Contiguous views the kernels work on.
struct FgdInputs {
  at::Tensor student, teacher;  // [B, C, HW], same dtype
  at::Tensor fg, bg;            // [B, HW], accumulation dtype
  at::Tensor fp;                // [B, HW], accumulation dtype; undefined without an fp mask
};

// forward fills col [B, 4, HW], row [B, 4, C], sample [B, 10] and
// per_sample [B, 6] (each sample's terms times p.scale; accumulation dtype).
// backward writes d student [B, C, HW] for the upstream gradients g [6]
// (accumulation dtype, on the device).
struct FgdLossKernels {
  void (*forward)(const FgdInputs& in, const FgdParams& p, const at::Tensor& col, const at::Tensor& row,
                  const at::Tensor& sample, const at::Tensor& per_sample);
  void (*backward)(const FgdInputs& in, const FgdParams& p, const at::Tensor& g, const at::Tensor& col,
                   const at::Tensor& row, const at::Tensor& sample, const at::Tensor& grad_student);
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fgd_loss(
    const FgdLossKernels* kernels, const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& fg_mask,
    const at::Tensor& bg_mask, const std::optional<at::Tensor>& fp_mask, double spatial_temperature,
    double channel_temperature, at::ArrayRef<double> weights, int64_t spatial_mode, double spatial_student_ratio,
    bool spatial_mask, bool channel_mask);

at::Tensor fgd_loss_backward(const FgdLossKernels* kernels, const at::Tensor& grad, const at::Tensor& student,
                             const at::Tensor& teacher, const at::Tensor& fg_mask, const at::Tensor& bg_mask,
                             const std::optional<at::Tensor>& fp_mask, const at::Tensor& col, const at::Tensor& row,
                             const at::Tensor& sample, double spatial_temperature, double channel_temperature,
                             at::ArrayRef<double> weights, int64_t spatial_mode, double spatial_student_ratio,
                             bool spatial_mask, bool channel_mask);

}  // namespace hcam_ops
