// CUDA kernels of segment_mean. Forward: a block per (sample, segment, slice of
// channels); the block scans the sample's segment map a chunk at a time,
// compacts the pixels of its segment into shared memory in pixel order (warp
// ballots), and its threads, one channel each, sum those pixels' rows
// (coalesced along channels). No atomics: deterministic. Backward: a block
// per pixel gathers its segment's gradient row.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>

#include "../common.h"
#include "../segment_mean.h"
#include "block_reduce.cuh"
#include "launch.h"

namespace hcam_ops::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kPerThread = 4;  // channels per thread: a block covers 512

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const scalar_t* __restrict__ x, const index_t* __restrict__ seg, int64_t P, int64_t C, int64_t S,
                   scalar_t* __restrict__ mean, int64_t* __restrict__ counts) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ int64_t list[kThreads];
  __shared__ int warp_count[kWarps];
  const int64_t b = blockIdx.x / S, s = blockIdx.x % S;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * kThreads * kPerThread + threadIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  acc_t acc[kPerThread];
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) acc[i] = acc_t(0);
  int64_t count = 0;
  for (int64_t p0 = 0; p0 < P; p0 += kThreads) {
    const int64_t p = p0 + threadIdx.x;
    const bool match = p < P && static_cast<int64_t>(seg[b * P + p]) == s;
    const unsigned mask = __ballot_sync(kFullMask, match);
    if (lane == 0) warp_count[warp] = __popc(mask);
    __syncthreads();
    int offset = 0, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      offset += w < warp ? warp_count[w] : 0;
      total += warp_count[w];
    }
    if (match) list[offset + __popc(mask & ((1u << lane) - 1u))] = p;
    __syncthreads();
    for (int q = 0; q < total; ++q) {
      const scalar_t* row = x + (b * P + list[q]) * C;
#pragma unroll
      for (int i = 0; i < kPerThread; ++i) {
        const int64_t c = c0 + i * kThreads;
        if (c < C) acc[i] += static_cast<acc_t>(row[c]);
      }
    }
    count += total;
    __syncthreads();  // list and warp_count are rewritten by the next chunk
  }
  const acc_t inv = count > 0 ? acc_t(1) / static_cast<acc_t>(count) : acc_t(0);
#pragma unroll
  for (int i = 0; i < kPerThread; ++i) {
    const int64_t c = c0 + i * kThreads;
    if (c < C) mean[(b * S + s) * C + c] = static_cast<scalar_t>(acc[i] * inv);
  }
  if (blockIdx.y == 0 && threadIdx.x == 0) counts[b * S + s] = count;
}

// A block per pixel row (b, p): its segment is read once, its channels by
// the threads (no 64-bit division per element).
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const scalar_t* __restrict__ grad, const index_t* __restrict__ seg,
                    const int64_t* __restrict__ counts, int64_t P, int64_t C, int64_t S, scalar_t* __restrict__ dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t bp = blockIdx.x, b = bp / P;
  const int64_t s = static_cast<int64_t>(seg[bp]);
  const int64_t n = (s >= 0 && s < S) ? counts[b * S + s] : 0;
  scalar_t* out = dx + bp * C;
  if (n == 0) {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[c] = scalar_t(0);
    return;
  }
  const acc_t inv = acc_t(1) / static_cast<acc_t>(n);
  const scalar_t* g = grad + (b * S + s) * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    out[c] = static_cast<scalar_t>(static_cast<acc_t>(g[c]) * inv);
  }
}

}  // namespace

void segment_mean_forward(const at::Tensor& x, const at::Tensor& segments, const at::Tensor& mean,
                          const at::Tensor& counts) {
  const int64_t B = x.size(0), P = x.size(1), C = x.size(2), S = mean.size(1);
  const int64_t slices = (C + kThreads * kPerThread - 1) / (kThreads * kPerThread);
  TORCH_CHECK(slices <= 65535, "segment_mean: too many channels for one launch: ", C);
  const dim3 grid(static_cast<unsigned>(checked_grid(B * S)), static_cast<unsigned>(slices));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "segment_mean", [&] {
    AT_DISPATCH_INDEX_TYPES(segments.scalar_type(), "segment_mean", [&] {
      launch<forward_kernel<scalar_t, index_t>>(grid, kThreads, 0, x.data_ptr<scalar_t>(), segments.data_ptr<index_t>(),
                                                P, C, S, mean.data_ptr<scalar_t>(), counts.data_ptr<int64_t>());
    });
  });
}

void segment_mean_backward(const at::Tensor& grad_strided, const at::Tensor& segments, const at::Tensor& counts,
                           const at::Tensor& dx) {
  const auto grad = grad_strided.contiguous();  // the kernel reads rows of C
  const int64_t B = dx.size(0), P = dx.size(1), C = dx.size(2), S = grad.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dx.scalar_type(), "segment_mean_backward", [&] {
    AT_DISPATCH_INDEX_TYPES(segments.scalar_type(), "segment_mean_backward", [&] {
      launch<backward_kernel<scalar_t, index_t>>(checked_grid(B * P), kThreads, 0, grad.data_ptr<scalar_t>(),
                                                 segments.data_ptr<index_t>(), counts.data_ptr<int64_t>(), P, C, S,
                                                 dx.data_ptr<scalar_t>());
    });
  });
}

namespace {
constexpr SegmentMeanKernels kKernels{&segment_mean_forward, &segment_mean_backward};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("segment_mean", cuda_entry<&hcam_ops::segment_mean, &kKernels>());
  m.impl("segment_mean_backward", cuda_entry<&hcam_ops::segment_mean_backward, &kKernels>());
}

}  // namespace hcam_ops::cuda
