// The prelude of an emulated CUDA translation unit: included before a .cu
// file compiled as host C++ (setup.py's HCAM_OPS_CUDA=emulate), it gives the
// CUDA keywords, the built-in variables, the device math the kernels call
// unqualified and the warp and block intrinsics, each with CUDA's semantics,
// over the emulator's runtime (runtime.h).
#pragma once

#define HCAM_OPS_EMULATOR 1

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "device_math.h"
#include "intrinsics.h"
#include "runtime.h"

// Function qualifiers: every function is a host function here.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// A __shared__ variable is one per block in flight: the threads of a block
// run on one OS thread, which runs one block at a time.
#define __shared__ static thread_local

#define threadIdx (::hcam_emu::tls_coords->thread_idx)
#define blockIdx (::hcam_emu::tls_coords->block_idx)
#define blockDim (::hcam_emu::tls_coords->block_dim)
#define gridDim (::hcam_emu::tls_coords->grid_dim)

// The barrier and the warp collectives carry their call site, which the
// emulator's errors name.
#define __syncthreads() ::hcam_emu::syncthreads(__FILE__, __LINE__)
#define __shfl_xor_sync(...) ::hcam_emu::device::shfl_xor_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, predicate) ::hcam_emu::ballot((mask), (predicate) != 0, __FILE__, __LINE__)
