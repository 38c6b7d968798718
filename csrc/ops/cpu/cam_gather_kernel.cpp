// CPU kernels of cam_gather: the shared feature passes (cam_passes_kernel.cpp)
// of the active level.
#include <torch/library.h>

#include "../cam_gather.h"
#include "../common.h"
#include "cam_passes.h"
#include "isa.h"

namespace hcam_ops::cpu {

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's passes (isa.h), chosen when the library is loaded.
const CamPasses kPasses = *HCAM_CPU_DISPATCH(cam_passes)();
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("cam_gather", device_entry<&hcam_ops::cam_gather, &kPasses>);
  m.impl("cam_gather_backward", device_entry<&hcam_ops::cam_gather_backward, &kPasses>);
}
#endif

}  // namespace hcam_ops::cpu
