// Kernels with access patterns whose traffic is known by hand, on the
// emulator alone (test_traffic.py builds this file with clang++ and the
// traced build's flags, against the emulator's runtime): each case runs one
// launch in a traffic session and prints its counters, one "key value" a line.
//   traffic_harness <case> [l2_bytes]
#include "prelude.h"
// The prelude first: the header under test is CUDA source.
#include "vec_load.cuh"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

template <auto Kernel, typename... Args>
void run(const char* name, dim3 grid, dim3 block, Args... args) {
  auto body = [&] { Kernel(args...); };
  hcam_emu::launch(name, reinterpret_cast<const void*>(Kernel), grid, block, 0, body);
}

// y[i] = x[i * stride], one element per thread.
__global__ void strided_copy(const float* x, float* y, int n, int stride) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[static_cast<size_t>(i) * stride];
}

// 16-byte packs: thread i copies elements 4i..4i+3.
__global__ void pack_copy(const float* x, float* y, int packs) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < packs) hcam_ops::cuda::store_pack<4>(y + 4 * i, hcam_ops::cuda::load_pack<4>(x + 4 * i));
}

// Every thread adds to one counter.
__global__ void count_all(int* counter) {
  atomicAdd(counter, 1);
}

// Reads x (n floats) `passes` times, one grid-stride sweep each, and writes one sum per thread.
__global__ void sweeps(const float* x, int n, int passes, float* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x, T = gridDim.x * blockDim.x;
  float s = 0;
  for (int p = 0; p < passes; ++p) {
    for (int i = t; i < n; i += T) s += x[i];
  }
  out[t] = s;
}

// Each block reads its own n floats `passes` times.
__global__ void private_sweeps(const float* x, int n, int passes, float* out) {
  const float* mine = x + static_cast<size_t>(blockIdx.x) * n;
  float s = 0;
  for (int p = 0; p < passes; ++p) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += mine[i];
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

void print(const hcam_emu::traffic::LaunchCount& c) {
  const char* kinds[3] = {"load", "store", "atomic"};
  std::printf("launches 1\n");
  for (int k = 0; k < 3; ++k) {
    std::printf("requests_%s %llu\n", kinds[k], static_cast<unsigned long long>(c.requests[k]));
    std::printf("requested_%s %llu\n", kinds[k], static_cast<unsigned long long>(c.requested_bytes[k]));
    std::printf("sectors_%s %llu\n", kinds[k], static_cast<unsigned long long>(c.sectors[k]));
  }
  std::printf("unique_read %llu\n", static_cast<unsigned long long>(c.unique_sectors_read));
  std::printf("unique_written %llu\n", static_cast<unsigned long long>(c.unique_sectors_written));
  std::printf("dram_read %llu\n", static_cast<unsigned long long>(c.dram_read_bytes));
  std::printf("dram_write %llu\n", static_cast<unsigned long long>(c.dram_write_bytes));
  std::printf("buffers %zu\n", c.buffers.size());
}

// 128-byte aligned storage, registered as global memory.
struct Buffer {
  std::vector<float> storage;
  float* data;
  explicit Buffer(size_t n) : storage(n + 32, 1.0f) {
    auto p = reinterpret_cast<uintptr_t>(storage.data());
    data = reinterpret_cast<float*>((p + 127) / 128 * 128);
    hcam_emu::traffic::add_buffer(data, n * sizeof(float));
  }
  ~Buffer() { hcam_emu::traffic::remove_buffer(data); }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string c = argv[1];
  if (argc > 2) hcam_emu::traffic::set_l2_bytes(std::stoull(argv[2]));
  if (!hcam_emu::traffic::traced()) {
    std::printf("not traced\n");
    return 3;
  }
  int stride = 0;
  if (c.rfind("stride", 0) == 0) stride = std::stoi(c.substr(6));
  hcam_emu::traffic::begin();
  if (stride > 0) {
    // 1000 threads (4 blocks of 256, the last partial), a warp-level request per 32.
    const int n = 1000;
    Buffer x(static_cast<size_t>(n) * stride), y(n);
    run<strided_copy>("strided_copy", 4, 256, x.data, y.data, n, stride);
  } else if (c == "packs") {
    const int packs = 512;
    Buffer x(4 * packs), y(4 * packs);
    run<pack_copy>("pack_copy", 2, 256, x.data, y.data, packs);
  } else if (c == "atomics") {
    Buffer counter(1);
    run<count_all>("count_all", 3, 64, reinterpret_cast<int*>(counter.data));
  } else if (c == "sweeps") {
    // 1 MiB read three times by 2 x 128 threads.
    const int n = 1 << 18;
    Buffer x(n), out(256);
    run<sweeps>("sweeps", 2, 128, x.data, n, 3, out.data);
  } else if (c == "private") {
    // 2 blocks, 512 KiB each, read three times.
    const int n = 1 << 17;
    Buffer x(2 * n), out(256);
    run<private_sweeps>("private_sweeps", 2, 128, x.data, n, 3, out.data);
  } else if (c == "unregistered") {
    // Memory that is not a registered buffer is not counted.
    std::vector<float> x(1024), y(1024);
    run<strided_copy>("strided_copy", 4, 256, x.data(), y.data(), 1000, 1);
  } else {
    hcam_emu::traffic::end();
    return 2;
  }
  const auto launches = hcam_emu::traffic::end();
  if (launches.size() != 1) return 1;
  print(launches[0]);
  return 0;
}
