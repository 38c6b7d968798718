// Kernels on the emulator alone, without torch (test_emulator.py builds this
// file with g++): the faults the emulator must report, and block reductions
// built on csrc/ops/cuda/block_reduce.cuh, or on a mutated copy of it, to
// show that the emulated tests catch a broken barrier or shuffle.
//   harness <case>     prints "ok", or what went wrong; exit 0, 1 (wrong
//                      results) or 2 (the emulator raised; its message printed)
#include "prelude.h"
// The prelude first: the header under test is CUDA source.
#include "block_reduce.cuh"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

using hcam_ops::cuda::block_allreduce;
using hcam_ops::cuda::kFullMask;
using hcam_ops::cuda::SumOp;
using hcam_ops::cuda::Vals;
using hcam_ops::cuda::warp_allreduce;

namespace {

template <auto Kernel, typename... Args>
void run(const char* name, dim3 grid, dim3 block, size_t smem, Args... args) {
  auto body = [&] { Kernel(args...); };
  hcam_emu::launch(name, reinterpret_cast<const void*>(Kernel), grid, block, smem, body);
}

// Three block sums in a row through one scratch, as the row kernels chain
// them: each thread records what it got.
__global__ void chained_sums(const double* x, int n, double* out) {
  __shared__ double scratch[32];
  __shared__ Vals<double, 2> scratch2[32];
  const int t = threadIdx.x, T = blockDim.x;
  double a = 0, b = 0;
  for (int i = t; i < n; i += T) {
    a += x[blockIdx.x * n + i];
    b += 3 * x[blockIdx.x * n + i];
  }
  const double sa = block_allreduce(a, SumOp{}, scratch);
  const double sb = block_allreduce(b, SumOp{}, scratch);
  const auto s2 = block_allreduce(Vals<double, 2>{{a, -b}}, SumOp{}, scratch2);
  double* o = out + (static_cast<size_t>(blockIdx.x) * T + t) * 4;
  o[0] = sa;
  o[1] = sb;
  o[2] = s2.v[0];
  o[3] = s2.v[1];
}

int check_sums() {
  const int blocks = 5, threads = 256, n = 1000;
  std::vector<double> x(blocks * n), out(blocks * threads * 4, -1.0);
  for (int i = 0; i < blocks * n; ++i) x[i] = (i * 7919) % 101 - 50;  // integers: sums are exact
  run<chained_sums>("chained_sums", blocks, threads, 0, x.data(), n, out.data());
  for (int b = 0; b < blocks; ++b) {
    double s = 0;
    for (int i = 0; i < n; ++i) s += x[b * n + i];
    const double want[4] = {s, 3 * s, s, -3 * s};
    for (int t = 0; t < threads; ++t) {
      for (int k = 0; k < 4; ++k) {
        const double got = out[(static_cast<size_t>(b) * threads + t) * 4 + k];
        if (got != want[k]) {
          std::printf("wrong: block %d thread %d sum %d: %g, expected %g\n", b, t, k, got, want[k]);
          return 1;
        }
      }
    }
  }
  std::printf("ok\n");
  return 0;
}

// A value of several words of two types (the row kernels' MinMax<double>)
// and a plain double, through shfl_xor to each butterfly partner.
struct MinMaxLike {
  double mn, mx;
  int64_t imn, imx;
};

__global__ void struct_shuffles(double* out) {
  const unsigned t = threadIdx.x;
  for (int m = 1; m < 32; m <<= 1) {
    const MinMaxLike v{-1.0 * t, 2.0 * t, -3 * static_cast<int64_t>(t), 4 * static_cast<int64_t>(t)};
    const MinMaxLike r = hcam_ops::cuda::shfl_xor(v, m);
    const double d = hcam_ops::cuda::shfl_xor(0.5 * t, m);
    const unsigned src = t ^ m;
    const bool right = r.mn == -1.0 * src && r.mx == 2.0 * src && r.imn == -3 * static_cast<int64_t>(src) &&
                       r.imx == 4 * static_cast<int64_t>(src) && d == 0.5 * src;
    if (!right) out[t] = m;
  }
}

int check_struct_shuffles() {
  std::vector<double> out(64, 0.0);
  run<struct_shuffles>("struct_shuffles", 1, 64, 0, out.data());
  for (int t = 0; t < 64; ++t) {
    if (out[t] != 0.0) {
      std::printf("wrong: thread %d got the wrong value from its partner at lane mask %g\n", t, out[t]);
      return 1;
    }
  }
  std::printf("ok\n");
  return 0;
}

__global__ void barriers_differ() {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void exits_before_barrier() {
  if (threadIdx.x == 5) return;
  __syncthreads();
}

__global__ void shuffle_vs_barrier() {
  if (threadIdx.x == 3) {
    __syncthreads();
  } else {
    (void)__shfl_xor_sync(kFullMask, 1, 1);
  }
}

__global__ void full_mask_partial_warp(int* out) {
  out[threadIdx.x] = warp_allreduce(1, SumOp{});
}

__global__ void ballots(unsigned* out) {
  out[threadIdx.x] = __ballot_sync(kFullMask, (threadIdx.x & 31) % 3 == 0);
}

__global__ void counts(unsigned long long* total) {
  atomicAdd(total, 1ull);
}

__global__ void nothing() {}

__global__ void reads_dynamic(float* out) {
  out[threadIdx.x] = hcam_emu::dynamic_shared_memory() ? static_cast<float*>(hcam_emu::dynamic_shared_memory())[0] : 0;
}

int run_case(const std::string& c) {
  if (c == "sums") return check_sums();
  if (c == "struct-shuffles") return check_struct_shuffles();
  if (c == "barriers-differ") run<barriers_differ>("barriers_differ", 2, 64, 0);
  if (c == "exit-at-barrier") run<exits_before_barrier>("exits_before_barrier", 1, 64, 0);
  if (c == "deadlock") run<shuffle_vs_barrier>("shuffle_vs_barrier", 1, 32, 0);
  if (c == "partial-warp") {
    std::vector<int> out(48);
    run<full_mask_partial_warp>("full_mask_partial_warp", 1, 48, 0, out.data());
  }
  if (c == "ballot") {
    std::vector<unsigned> out(64);
    run<ballots>("ballots", 1, 64, 0, out.data());
    for (unsigned v : out) {
      if (v != 0x49249249u) {
        std::printf("wrong: ballot 0x%08x\n", v);
        return 1;
      }
    }
  }
  if (c == "atomics") {
    unsigned long long total = 0;
    run<counts>("counts", 300, 128, 0, &total);
    if (total != 300ull * 128) {
      std::printf("wrong: %llu\n", total);
      return 1;
    }
  }
  if (c == "dynamic-poisoned") {
    std::vector<float> out(32);
    run<reads_dynamic>("reads_dynamic", 1, 32, 64, out.data());
    if (!(out[0] != out[0])) {  // 0xff bytes: NaN
      std::printf("wrong: %g\n", out[0]);
      return 1;
    }
  }
  if (c == "too-many-threads") run<nothing>("nothing", 1, 1025, 0);
  if (c == "grid-y") run<nothing>("nothing", dim3(1, 65536), 32, 0);
  if (c == "empty-grid") run<nothing>("nothing", 0, 32, 0);
  if (c == "dynamic-over-default") run<nothing>("nothing", 1, 32, 48 * 1024 + 16);
  if (c == "dynamic-opted-in") {
    if (cudaFuncSetAttribute(nothing, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024) != cudaSuccess) {
      std::printf("wrong: cudaFuncSetAttribute refused\n");
      return 1;
    }
    run<nothing>("nothing", 1, 32, 100 * 1024);
  }
  std::printf("ok\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: harness <case>\n");
    return 3;
  }
  try {
    return run_case(argv[1]);
  } catch (const std::exception& e) {
    std::printf("%s\n", e.what());
    return 2;
  }
}
