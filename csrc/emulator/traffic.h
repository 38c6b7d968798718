// Memory traffic of emulated kernels (docs/traffic.md): every global load,
// store and atomic of a kernel's threads, grouped into the warp-level requests
// a GPU's load/store unit would issue, counted in 32-byte sectors, and run
// through a model of the L2 cache for the DRAM bytes.
//
// The emulated CUDA sources are compiled by clang with
// -fsanitize-coverage=trace-loads,trace-stores (setup.py): clang calls
// __sanitizer_cov_load4(addr) and its kin before every load and store they
// make. The 16-byte packs of vec_load.cuh and the atomics are reported here
// explicitly, as one access each, since the host compiler splits a pack into
// scalar moves and does not report atomic read-modify-writes. Only addresses
// inside registered buffers count as global memory (in the extension: every
// tensor the CPU allocator hands out once a session has been opened,
// torch/recording_allocator.h), never a fiber's stack, shared memory or the
// emulator's own data.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hcam_emu::traffic {

enum Kind : uint8_t { kLoad = 0, kStore = 1, kAtomic = 2 };

// What a session measured of one tensor (an allocation) in one launch.
struct BufferCount {
  uintptr_t base = 0;
  uint64_t bytes = 0;  // the allocation's size
  uint64_t requests[3] = {0, 0, 0};
  uint64_t requested_bytes[3] = {0, 0, 0};
  uint64_t sectors[3] = {0, 0, 0};
  uint64_t unique_sectors_read = 0, unique_sectors_written = 0;
};

// One kernel launch.
struct LaunchCount {
  std::string kernel;
  dim3 grid, block;
  uint64_t requests[3] = {0, 0, 0};         // warp-level requests, by Kind
  uint64_t requested_bytes[3] = {0, 0, 0};  // bytes the threads asked for
  uint64_t sectors[3] = {0, 0, 0};          // 32-byte sectors per request, summed: L1 <-> L2 traffic
  uint64_t unique_sectors_read = 0;         // distinct sectors read (atomics included)
  uint64_t unique_sectors_written = 0;      // distinct sectors written (atomics included)
  uint64_t dram_read_bytes = 0;             // the L2 model's misses
  uint64_t dram_write_bytes = 0;            // the L2 model's write-backs (evictions, and the flush at the end)
  std::vector<BufferCount> buffers;
};

// Whether this build's emulated kernels report their loads and stores
// (compiled by clang with load/store tracing).
bool traced();

// Global memory: a buffer of `bytes` from `base` (until removed).
void add_buffer(const void* base, size_t bytes);
void remove_buffer(const void* base);

// Opens a session on this thread: from now on its emulated launches are
// counted (one OS thread runs each launch's blocks in order, so the L2 model
// sees them in the emulator's block order). Raises if one is open already.
void begin();
// Closes the session and returns its launches, in order.
std::vector<LaunchCount> end();
// Whether a session is open (on any thread).
bool active();

// The L2 model's size in bytes (default 50 MiB; 128-byte lines, LRU).
void set_l2_bytes(uint64_t bytes);

// The emulator's hooks (launch.cpp).
void launch_begin(const char* kernel, dim3 grid, dim3 block);
void block_begin(unsigned threads);
void block_end();
void launch_end();

// One access by the running emulated thread, from code location `pc`.
void record(const void* addr, uint32_t bytes, Kind kind, const void* pc);

// A pack of `bytes` moved as one access: copies and records it (called by
// vec_load.cuh's load_pack and store_pack in a traced build).
__attribute__((noinline)) void load_bytes(void* dst, const void* src, size_t bytes);
__attribute__((noinline)) void store_bytes(void* dst, const void* src, size_t bytes);
__attribute__((noinline)) void atomic(const void* addr, uint32_t bytes);

}  // namespace hcam_emu::traffic
