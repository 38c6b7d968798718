// CUDA farthest point sampling: one block per sample, the picks in sequence.
// Per pick the chosen point is staged in shared memory, a warp per point sums
// its squared distance over channels (lanes along channels, coalesced), and a
// block arg-max with the shared tie rule (lower index) picks the next.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>

#include <limits>

#include "../common.h"
#include "../farthest_point_sample.h"
#include "block_reduce.cuh"
#include "launch.h"

namespace hcam_ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    fps_kernel(const scalar_t* __restrict__ points, const bool* __restrict__ mask, int64_t N, int64_t C, int64_t K,
               int64_t start, at::opmath_type<scalar_t>* __restrict__ dist_all, int64_t* __restrict__ idx) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t* last = dynamic_shared<acc_t>();  // the staged point, C values
  __shared__ acc_t warp_d[kWarps];
  __shared__ int64_t warp_i[kWarps];
  __shared__ int64_t cur;
  const int64_t b = blockIdx.x;
  const scalar_t* p = points + b * N * C;
  const bool* m = mask ? mask + b * N : nullptr;
  acc_t* dist = dist_all + b * N;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const acc_t inf = std::numeric_limits<acc_t>::infinity();

  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    dist[j] = (m && !m[j]) ? -inf : inf;
  }
  if (threadIdx.x == 0) {
    cur = fps_first(m, N, start);
    idx[b * K] = cur;
  }
  __syncthreads();
  for (int64_t i = 1; i < K; ++i) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) last[c] = static_cast<acc_t>(p[cur * C + c]);
    __syncthreads();
    acc_t best_d = -inf;
    int64_t best_i = N;
    for (int64_t j = warp; j < N; j += kWarps) {
      acc_t dj = dist[j];
      if (!(m && !m[j])) {
        acc_t d = 0;
        for (int64_t c = lane; c < C; c += 32) {
          const acc_t v = static_cast<acc_t>(p[j * C + c]) - last[c];
          d += v * v;
        }
        d = warp_allreduce(d, SumOp{});
        if (d < dj) dj = d;
        if (lane == 0) dist[j] = dj;
      }
      if (fps_better(dj, j, best_d, best_i)) {
        best_d = dj;
        best_i = j;
      }
    }
    if (lane == 0) {
      warp_d[warp] = best_d;
      warp_i[warp] = best_i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < kWarps; ++w) {
        if (fps_better(warp_d[w], warp_i[w], best_d, best_i)) {
          best_d = warp_d[w];
          best_i = warp_i[w];
        }
      }
      cur = best_i;
      idx[b * K + i] = best_i;
    }
    __syncthreads();
  }
}

}  // namespace

void farthest_point_sample(const at::Tensor& points, const at::Tensor& mask, int64_t start, const at::Tensor& idx) {
  const int64_t B = points.size(0), N = points.size(1), C = points.size(2), K = idx.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, points.scalar_type(), "farthest_point_sample", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto kernel = fps_kernel<scalar_t>;
    // The staged point (dynamic) and the kernel's own arrays (static) share
    // the block's shared memory. Past the default per-block limit (48 KiB for
    // both together) the kernel opts in to the device's larger one.
    cudaFuncAttributes attr;
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
    const int device = current_device();
    int per_block = 0, optin = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&per_block, cudaDevAttrMaxSharedMemoryPerBlock, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    const size_t smem = static_cast<size_t>(C) * sizeof(acc_t);
    const size_t max_dynamic = static_cast<size_t>(optin) - attr.sharedSizeBytes;
    TORCH_CHECK(smem <= max_dynamic, "farthest_point_sample: at most ", max_dynamic / sizeof(acc_t), " channels of ",
                points.scalar_type(), " on this CUDA device (", optin, " bytes of shared memory per block), got ", C);
    if (attr.sharedSizeBytes + smem > static_cast<size_t>(per_block)) {
      // The device's whole limit rather than this call's need: the setting
      // is per kernel, and a smaller one could undercut a concurrent call.
      C10_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(max_dynamic)));
    }
    auto dist = at::empty({B, N}, points.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    launch<fps_kernel<scalar_t>>(checked_grid(B), kThreads, smem, points.data_ptr<scalar_t>(),
                                 mask.defined() ? mask.data_ptr<bool>() : nullptr, N, C, K, start,
                                 dist.data_ptr<acc_t>(), idx.data_ptr<int64_t>());
  });
}

namespace {
constexpr FarthestPointSampleKernels kKernels{&farthest_point_sample};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("farthest_point_sample", cuda_entry<&hcam_ops::farthest_point_sample, &kKernels>());
}

}  // namespace hcam_ops::cuda
