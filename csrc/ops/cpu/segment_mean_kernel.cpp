// CPU kernels of segment_mean: parallel over samples (and blocks of channels
// when there are few); each task walks the pixels in order and adds each
// pixel's channels to its segment's row (a contiguous, vectorised add).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "convert.h"
#include "../common.h"
#include "vec.h"
#include "../segment_mean.h"
#include "isa.h"

namespace hcam_ops::cpu {

// The entry points, declared for every level (isa.h): this file's compilation
// at CPU_CAPABILITY defines that level's, the baseline one registers the active one.
template <Isa>
void segment_mean_forward(const at::Tensor& x, const at::Tensor& segments, const at::Tensor& mean,
                          const at::Tensor& counts);
template <Isa>
void segment_mean_backward(const at::Tensor& grad, const at::Tensor& segments, const at::Tensor& counts,
                           const at::Tensor& dx);

namespace {

using namespace CPU_CAPABILITY;  // vec.h, at this file's level

// Channels per task: whole rows where the samples alone give 128 tasks (two
// per core of a 64-core server; a fixed count, not the thread count), so
// each task reads its pixels as one sequential stream (slices of rows read
// side by side lose the hardware prefetcher), else the rows split into
// blocks of a multiple of 64 channels. Each channel's sums run in pixel
// order whatever the blocks.
int64_t channel_block(int64_t B, int64_t C) {
  constexpr int64_t want = 128;
  if (B >= want) return C;
  const int64_t blocks = std::min<int64_t>((want + B - 1) / B, (C + 63) / 64);
  return ((C + blocks - 1) / blocks + 63) / 64 * 64;
}

template <typename scalar_t, typename index_t>
void forward_impl(const at::Tensor& x, const at::Tensor& segments, const at::Tensor& mean, const at::Tensor& counts) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t V = Vec::size();
  const int64_t B = x.size(0), P = x.size(1), C = x.size(2), S = mean.size(1);
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const index_t* sp = segments.data_ptr<index_t>();
  scalar_t* mp = mean.data_ptr<scalar_t>();
  int64_t* cp = counts.data_ptr<int64_t>();
  const int64_t width = channel_block(B, C);
  const int64_t blocks = (C + width - 1) / width;
  at::parallel_for(0, B * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sums;
    std::vector<int64_t> cnt(S);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks, c0 = (task % blocks) * width;
      const int64_t n = std::min(width, C - c0);
      sums.assign(S * n, acc_t(0));
      std::fill(cnt.begin(), cnt.end(), 0);
      for (int64_t p = 0; p < P; ++p) {
        const int64_t s = static_cast<int64_t>(sp[b * P + p]);
        if (s < 0 || s >= S) continue;
        ++cnt[s];
        const scalar_t* row = xp + (b * P + p) * C + c0;
        acc_t* dst = sums.data() + s * n;
        int64_t j = 0;
        for (; j + V <= n; j += V) (Vec::loadu(dst + j) + load_acc(row + j)).store(dst + j);
        if (j < n) (Vec::loadu(dst + j, n - j) + load_acc(row + j, n - j)).store(dst + j, n - j);
      }
      for (int64_t s = 0; s < S; ++s) {
        const Vec inv(cnt[s] > 0 ? acc_t(1) / static_cast<acc_t>(cnt[s]) : acc_t(0));
        scalar_t* out = mp + (b * S + s) * C + c0;
        const acc_t* src = sums.data() + s * n;
        for (int64_t j = 0; j < n; j += V)
          store_acc(out + j, Vec::loadu(src + j, std::min(V, n - j)) * inv, std::min(V, n - j));
        if (c0 == 0) cp[b * S + s] = cnt[s];
      }
    }
  });
}

// grad [B, S, C] is read through its strides: the gradient of a sum over
// the means (an expanded scalar, strides 0) or of a transposed consumer needs
// no contiguous copy of [B, S, C] first.
template <typename scalar_t, typename index_t>
void backward_impl(const at::Tensor& grad, const at::Tensor& segments, const at::Tensor& counts, const at::Tensor& dx) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t V = Vec::size();
  const int64_t B = dx.size(0), P = dx.size(1), C = dx.size(2), S = grad.size(1);
  const int64_t gb = grad.stride(0), gs = grad.stride(1), gc = grad.stride(2);
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
      const scalar_t* g = gp + b * gb + s * gs;
      if (gc == 1) {
        for (int64_t c = 0; c < C; c += V) {
          const int64_t m = std::min(V, C - c);
          store_acc(out + c, load_acc(g + c, m) * Vec(inv), m);
        }
      } else if (gc == 0) {
        std::fill_n(out, C, to_scalar<scalar_t>(static_cast<acc_t>(g[0]) * inv));
      } else {
        for (int64_t c = 0; c < C; ++c) out[c] = to_scalar<scalar_t>(static_cast<acc_t>(g[c * gc]) * inv);
      }
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
  m.impl("segment_mean", device_entry<&hcam_ops::segment_mean, &kKernels>);
  m.impl("segment_mean_backward", device_entry<&hcam_ops::segment_mean_backward, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
