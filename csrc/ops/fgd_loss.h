// FGD feature-distillation loss: the per-device kernels behind the host
// driver (fgd_loss.cpp). Same contract on both devices; see fgd_math.h.
#pragma once

#include <ATen/core/Tensor.h>

#include "fgd_math.h"

#include "cpu/isa.h"

namespace hcam_ops {

// Contiguous views the kernels work on.
struct FgdInputs {
  at::Tensor student, teacher;  // [B, C, HW], same dtype
  at::Tensor fg, bg;            // [B, HW], accumulation dtype
  at::Tensor fp;                // [B, HW], accumulation dtype; undefined without an fp mask
};

// fgd_forward fills col [B, 4, HW], row [B, 4, C], sample [B, 10] and
// per_sample [B, 6] (each sample's terms times p.scale; accumulation dtype).
// fgd_backward writes d student [B, C, HW] for the upstream gradients g [6]
// (accumulation dtype, on the device).
namespace cpu {
// One specialisation per compiled level (cpu/isa.h); call through HCAM_CPU_DISPATCH.
template <Isa>
void fgd_forward(const FgdInputs& in, const FgdParams& p, const at::Tensor& col, const at::Tensor& row,
                 const at::Tensor& sample, const at::Tensor& per_sample);
template <Isa>
void fgd_backward(const FgdInputs& in, const FgdParams& p, const at::Tensor& g, const at::Tensor& col,
                  const at::Tensor& row, const at::Tensor& sample, const at::Tensor& grad_student);
}  // namespace cpu

namespace cuda {
void fgd_forward(const FgdInputs& in, const FgdParams& p, const at::Tensor& col, const at::Tensor& row,
                 const at::Tensor& sample, const at::Tensor& per_sample);
void fgd_backward(const FgdInputs& in, const FgdParams& p, const at::Tensor& g, const at::Tensor& col,
                  const at::Tensor& row, const at::Tensor& sample, const at::Tensor& grad_student);
}  // namespace cuda

}  // namespace hcam_ops
