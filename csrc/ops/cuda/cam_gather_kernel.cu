// CUDA kernels of cam_gather: the shared feature passes (cam_passes_kernel.cu).
#include <torch/library.h>

#include "../cam_gather.h"
#include "../common.h"
#include "cam_passes.h"

namespace hcam_ops::cuda {

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("cam_gather", cuda_entry<&hcam_ops::cam_gather, &kCamPasses>());
  m.impl("cam_gather_backward", cuda_entry<&hcam_ops::cam_gather_backward, &kCamPasses>());
}

}  // namespace hcam_ops::cuda
