#include "launch.h"

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

namespace hcam_ops::cuda {

int64_t checked_grid(int64_t blocks) {
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "hcam_ops: problem too large: ", blocks, " blocks");
  return blocks;
}

std::string kernel_name(const char* pretty_function) {
  // "... launch(...) [with auto Kernel = <name>; Args = {...}]" (GCC), or
  // "... [Kernel = &<name>, Args = <...>]" (Clang, which compiles the traced
  // emulated kernels).
  const std::string s(pretty_function);
  const auto at = s.find("Kernel = ");
  if (at == std::string::npos) return s;
  const auto begin = at + std::strlen("Kernel = ");
  auto end = s.find_first_of(";]", begin);
  if (const auto args = s.find(", Args = ", begin); args < end) end = args;
  std::string name = s.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
  if (!name.empty() && name[0] == '&') name.erase(0, 1);
  return name;
}

int current_device() {
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

int num_sms() {
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
  return counts.at(current_device());
}

}  // namespace hcam_ops::cuda
