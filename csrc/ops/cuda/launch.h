// Launches of the CUDA kernels: one helper for every launch (the current
// stream, the launch check, an empty launch refused with the kernel named),
// the dynamic shared memory, and the launch sizes the kernels share.
//
// Compiled by nvcc, launch<kernel>(...) is kernel<<<...>>>(...) through a
// function pointer; compiled by the emulator (csrc/emulator, HCAM_OPS_EMULATOR
// set by its prelude) the same call runs the kernel on the emulator.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

namespace hcam_ops::cuda {

// The current device: the drivers' DeviceGuard makes it the tensors' device
// (an emulated build's host tensors run on its one emulated device).
int current_device();

// Streaming multiprocessors of the current device, read once per process.
int num_sms();

// A 1-D grid size, checked against the launch limit.
int64_t checked_grid(int64_t blocks);

// The kernel's name out of the __PRETTY_FUNCTION__ of launch<Kernel>.
std::string kernel_name(const char* pretty_function);

// kernel<<<grid, block, dynamic_smem, current stream>>>(args...), then the
// launch check. A grid or block with no threads is refused (CUDA would fail
// it as an invalid configuration, naming no kernel).
template <auto Kernel, typename... Args>
void launch(dim3 grid, dim3 block, size_t dynamic_smem, Args&&... args) {
  static const std::string name = kernel_name(__PRETTY_FUNCTION__);
  TORCH_CHECK(
      static_cast<uint64_t>(grid.x) * grid.y * grid.z > 0 && static_cast<uint64_t>(block.x) * block.y * block.z > 0,
      "hcam_ops: empty launch of ", name, ": grid (", grid.x, ", ", grid.y, ", ", grid.z, "), block (", block.x, ", ",
      block.y, ", ", block.z, ")");
#ifdef HCAM_OPS_EMULATOR
  auto run = [&] { Kernel(args...); };  // each thread gets its own copies of the parameters
  hcam_emu::launch(name.c_str(), reinterpret_cast<const void*>(Kernel), grid, block, dynamic_smem, run);
#else
  // A .h file is formatted as C++, which would split the chevrons.
  // clang-format off
  Kernel<<<grid, block, dynamic_smem, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
  // clang-format on
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

// The block's dynamic shared memory (the launch's dynamic_smem bytes), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* dynamic_shared() {
#ifdef HCAM_OPS_EMULATOR
  return static_cast<T*>(hcam_emu::dynamic_shared_memory());
#else
  extern __shared__ __align__(16) unsigned char hcam_dynamic_shared[];
  return reinterpret_cast<T*>(hcam_dynamic_shared);
#endif
}

}  // namespace hcam_ops::cuda
