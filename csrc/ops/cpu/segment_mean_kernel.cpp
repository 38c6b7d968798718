// CPU kernels of segment_mean: parallel over (sample, block of channels); each
// task walks the pixels in order and adds each pixel's channel slice to its
// segment's row (a contiguous, vectorised add).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "convert.h"
#include "../common.h"
#include "../segment_mean.h"
#include "isa.h"

namespace hcam_ops::cpu {

namespace {

constexpr int64_t kChannelBlock = 64;

template <typename scalar_t, typename index_t>
void forward_impl(const at::Tensor& x, const at::Tensor& segments, const at::Tensor& mean, const at::Tensor& counts) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = x.size(0), P = x.size(1), C = x.size(2), S = mean.size(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const index_t* sp = segments.data_ptr<index_t>();
  scalar_t* mp = mean.data_ptr<scalar_t>();
  int64_t* cp = counts.data_ptr<int64_t>();
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sums;
    std::vector<int64_t> cnt(S);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, c0 = (task % blocks) * kChannelBlock;
      const int64_t n = std::min(kChannelBlock, C - c0);
      sums.assign(S * n, acc_t(0));
      std::fill(cnt.begin(), cnt.end(), 0);
      for (int64_t p = 0; p < P; ++p) {
        const int64_t s = static_cast<int64_t>(sp[b * P + p]);
        if (s < 0 || s >= S) continue;
        ++cnt[s];
        const scalar_t* row = xp + (b * P + p) * C + c0;
        acc_t* dst = sums.data() + s * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) dst[j] += static_cast<acc_t>(row[j]);
      }
      for (int64_t s = 0; s < S; ++s) {
        const acc_t inv = cnt[s] > 0 ? acc_t(1) / static_cast<acc_t>(cnt[s]) : acc_t(0);
        scalar_t* out = mp + (b * S + s) * C + c0;
        for (int64_t j = 0; j < n; ++j) out[j] = to_scalar<scalar_t>(sums[s * n + j] * inv);
        if (c0 == 0) cp[b * S + s] = cnt[s];
      }
    }
  });
}

template <typename scalar_t, typename index_t>
void backward_impl(const at::Tensor& grad, const at::Tensor& segments, const at::Tensor& counts, const at::Tensor& dx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = dx.size(0), P = dx.size(1), C = dx.size(2), S = grad.size(1);
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  const index_t* sp = segments.data_ptr<index_t>();
  const int64_t* cp = counts.data_ptr<int64_t>();
  scalar_t* dp = dx.data_ptr<scalar_t>();
  at::parallel_for(0, B * P, 64, [&](int64_t begin, int64_t end) {
    for (int64_t bp = begin; bp < end; ++bp) {
      const int64_t b = bp / P, s = static_cast<int64_t>(sp[bp]);
      scalar_t* out = dp + bp * C;
      if (s < 0 || s >= S || cp[b * S + s] == 0) {
        std::fill_n(out, C, scalar_t(0));
        continue;
      }
      const acc_t inv = acc_t(1) / static_cast<acc_t>(cp[b * S + s]);
      const scalar_t* g = gp + (b * S + s) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) out[c] = to_scalar<scalar_t>(static_cast<acc_t>(g[c]) * inv);
    }
  });
}

}  // namespace

template <>
void segment_mean_forward<Isa::CPU_CAPABILITY>(const at::Tensor& x, const at::Tensor& segments, const at::Tensor& mean,
                                               const at::Tensor& counts) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "segment_mean", [&] {
    AT_DISPATCH_INDEX_TYPES(segments.scalar_type(), "segment_mean",
                            [&] { forward_impl<scalar_t, index_t>(x, segments, mean, counts); });
  });
}

template <>
void segment_mean_backward<Isa::CPU_CAPABILITY>(const at::Tensor& grad, const at::Tensor& segments,
                                                const at::Tensor& counts, const at::Tensor& dx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dx.scalar_type(), "segment_mean_backward", [&] {
    AT_DISPATCH_INDEX_TYPES(segments.scalar_type(), "segment_mean_backward",
                            [&] { backward_impl<scalar_t, index_t>(grad, segments, counts, dx); });
  });
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const SegmentMeanKernels kKernels{HCAM_CPU_DISPATCH(segment_mean_forward), HCAM_CPU_DISPATCH(segment_mean_backward)};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("segment_mean_forward", device_entry<&hcam_ops::segment_mean_forward, &kKernels>);
  m.impl("segment_mean_backward", device_entry<&hcam_ops::segment_mean_backward, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
