// Launch sizes shared by the CUDA kernels.
#pragma once

#include <cstdint>

namespace hcam_ops::cuda {

// Streaming multiprocessors of `device`, read once per process.
int num_sms(int device);

// A 1-D grid size, checked against the launch limit.
int64_t checked_grid(int64_t blocks);

}  // namespace hcam_ops::cuda
