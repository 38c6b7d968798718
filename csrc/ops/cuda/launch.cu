#include "launch.h"

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <limits>
#include <mutex>
#include <vector>

namespace hcam_ops::cuda {

int64_t checked_grid(int64_t blocks) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "hcam_ops: problem too large: ", blocks, " blocks");
  return blocks;
}

int num_sms(int device) {
  static std::once_flag once;
  static std::vector<int> counts;
  std::call_once(once, [] {
    int n = 0;
    C10_CUDA_CHECK(cudaGetDeviceCount(&n));
    counts.resize(n);
    for (int d = 0; d < n; ++d) {
      C10_CUDA_CHECK(cudaDeviceGetAttribute(&counts[d], cudaDevAttrMultiProcessorCount, d));
    }
  });
  return counts.at(device);
}

}  // namespace hcam_ops::cuda
