// The CUDA feature passes for cam_gather and the fused CAM-KL op
// (../cam_passes.h), defined in cam_passes_kernel.cu.
#pragma once

#include "../cam_passes.h"

namespace hcam_ops::cuda {

extern const CamPasses kCamPasses;

}  // namespace hcam_ops::cuda
