// The emulator's stand-in for c10/cuda/CUDAStream.h: one stream, the
// emulator's launches being synchronous.
#pragma once

#include <cuda_runtime.h>

namespace c10::cuda {

class CUDAStream {
 public:
  cudaStream_t stream() const { return nullptr; }
  operator cudaStream_t() const { return nullptr; }
};

inline CUDAStream getCurrentCUDAStream(int = -1) {
  return {};
}

}  // namespace c10::cuda
