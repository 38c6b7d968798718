// The emulator's runtime, as the prelude and the launch helper call it: a
// launch runs every block of a grid (blocks spread over OS threads, the
// threads of a block as fibers on one of them, scheduler.cpp), and the
// points where a CUDA thread can wait (the block barrier, the warp
// collectives) are calls into the block's scheduler.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace hcam_emu {

// What threadIdx, blockIdx, blockDim and gridDim read in the running fiber.
struct ThreadCoords {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// The coordinates of the fiber running on this OS thread (set by the
// scheduler before it switches to a fiber).
inline thread_local const ThreadCoords* tls_coords = nullptr;

// The limits of the device the emulator stands for (an NVIDIA H200, sm_90).
struct Limits {
  static constexpr int kSms = 132;
  static constexpr int kWarp = 32;
  static constexpr int kThreadsPerBlock = 1024;
  static constexpr int kBlockDimZ = 64;
  static constexpr unsigned kGridDimX = 0x7fffffffu;
  static constexpr unsigned kGridDimYZ = 65535u;
  static constexpr int kSharedPerBlock = 48 * 1024;        // without opting in
  static constexpr int kSharedPerBlockOptin = 227 * 1024;  // cudaFuncSetAttribute's ceiling
};

// Runs body(closure) as every thread of a grid<<<grid, block, dynamic_smem>>>
// of the kernel `func` (named `kernel` in errors). Returns when every block has
// finished; raises std::runtime_error, naming the kernel and the block, for a
// launch beyond the device's limits or a fault of the kernel's threads (threads
// of a block at different barriers, a thread that exits while others wait at
// a barrier, a warp collective whose lanes cannot all arrive, deadlock).
void launch(const char* kernel, const void* func, dim3 grid, dim3 block, size_t dynamic_smem,
            void (*body)(void* closure), void* closure);

// The same, for a callable run as `body()` by every thread (the launch
// helper's and the tests' way to hand over a kernel and its arguments).
template <typename F>
void launch(const char* kernel, const void* func, dim3 grid, dim3 block, size_t dynamic_smem, F& body) {
  launch(kernel, func, grid, block, dynamic_smem, [](void* closure) { (*static_cast<F*>(closure))(); }, &body);
}

// __syncthreads() at file:line.
void syncthreads(const char* file, int line);

// The warp collectives, with CUDA's semantics for a warp of 32: every lane
// named in `mask` must reach a collective of the same kind with the same mask.
uint64_t shfl_xor(unsigned mask, uint64_t bits, int lane_mask, int width, const char* file, int line);
unsigned ballot(unsigned mask, bool predicate, const char* file, int line);

// The block's dynamic shared memory (poisoned with 0xff bytes at block start,
// so a read before a write reads NaN).
void* dynamic_shared_memory();

}  // namespace hcam_emu
