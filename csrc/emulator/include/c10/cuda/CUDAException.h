// The emulator's stand-in for c10/cuda/CUDAException.h: the same two checks.
// An emulated launch that fails raises from the launch itself, so the launch
// check has nothing left to find.
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#define C10_CUDA_CHECK(EXPR)                                                                               \
  do {                                                                                                     \
    const cudaError_t hcam_emu_err = (EXPR);                                                               \
    TORCH_CHECK(hcam_emu_err == cudaSuccess, "CUDA error (emulated): ", cudaGetErrorString(hcam_emu_err)); \
  } while (0)

#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
