// The CPU's feature passes for cam_gather and the fused CAM-KL op
// (../cam_passes.h), compiled at every level (isa.h) in cam_passes_kernel.cpp.
#pragma once

#include "../cam_passes.h"
#include "isa.h"

namespace hcam_ops::cpu {

// The passes of one level: the kernels of cam_gather and cam_kl of that
// level take them, and the baseline registration the active level's.
template <Isa>
const CamPasses* cam_passes();

}  // namespace hcam_ops::cpu
