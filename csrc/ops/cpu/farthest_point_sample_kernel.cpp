// CPU farthest point sampling: parallel over samples; per pick, one pass over
// the points updates each point's distance to the chosen set and finds the
// farthest (distances are vectorised sums over channels).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../common.h"
#include "../farthest_point_sample.h"
#include "isa.h"
#include "vec.h"

namespace hcam_ops::cpu {

// The entry points, declared for every level (isa.h): this file's compilation
// at CPU_CAPABILITY defines that level's, the baseline one registers the active one.
template <Isa>
void farthest_point_sample(const at::Tensor& points, const at::Tensor& mask, int64_t start, const at::Tensor& idx);

namespace CPU_CAPABILITY {
namespace {

// Points measured per sweep over the channels: that many independent vector
// accumulators (the FMA latency is hidden) share each load of the last
// sampled point.
constexpr int64_t kPoints = 4;

// d[t] = min(d[t], ||q_t - last||^2) for the np points starting at q (rows of
// C), vectorised over channels; masked points keep their distance. The
// accumulators are named registers and the rows' pointers are set up once:
// an array of accumulators indexed in the loop was kept on the stack and
// stored every step.
template <int64_t np, typename scalar_t, typename acc_t>
inline void update_distances(const scalar_t* q, const acc_t* last, int64_t C, const bool* live, acc_t* d) {
  static_assert(np == 1 || np == 4, "points per sweep: 1 or 4");
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t W = Vec::size();
  const scalar_t* q0 = q;
  const scalar_t* q1 = q + (np > 1 ? C : 0);
  const scalar_t* q2 = q + (np > 1 ? 2 * C : 0);
  const scalar_t* q3 = q + (np > 1 ? 3 * C : 0);
  Vec a0(acc_t(0)), a1(acc_t(0)), a2(acc_t(0)), a3(acc_t(0));
  int64_t c = 0;
  for (; c + W <= C; c += W) {
    const Vec l = Vec::loadu(last + c);
    const Vec v0 = load_acc(q0 + c) - l;
    a0 = at::vec::fmadd(v0, v0, a0);
    if constexpr (np > 1) {
      const Vec v1 = load_acc(q1 + c) - l;
      const Vec v2 = load_acc(q2 + c) - l;
      const Vec v3 = load_acc(q3 + c) - l;
      a1 = at::vec::fmadd(v1, v1, a1);
      a2 = at::vec::fmadd(v2, v2, a2);
      a3 = at::vec::fmadd(v3, v3, a3);
    }
  }
  const Vec acc[4] = {a0, a1, a2, a3};
  for (int64_t t = 0; t < np; ++t) {
    if (live != nullptr && !live[t]) continue;
    acc_t s = sum_lanes(acc[t]);
    for (int64_t cc = c; cc < C; ++cc) {
      const acc_t v = static_cast<acc_t>(q[t * C + cc]) - last[cc];
      s += v * v;
    }
    if (s < d[t]) d[t] = s;
  }
}

template <typename scalar_t>
void fps_impl(const at::Tensor& points, const at::Tensor& mask, int64_t start, const at::Tensor& idx) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = points.size(0), N = points.size(1), C = points.size(2), K = idx.size(1);
  const scalar_t* pp = points.data_ptr<scalar_t>();
  const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
  int64_t* ip = idx.data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> dist(N), last(C);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* p = pp + b * N * C;
      const bool* m = mp ? mp + b * N : nullptr;
      for (int64_t j = 0; j < N; ++j) {
        dist[j] = (m && !m[j]) ? -std::numeric_limits<acc_t>::infinity() : std::numeric_limits<acc_t>::infinity();
      }
      int64_t cur = fps_first(m, N, start);
      ip[b * K] = cur;
      for (int64_t i = 1; i < K; ++i) {
        for (int64_t c = 0; c < C; ++c) last[c] = static_cast<acc_t>(p[cur * C + c]);
        int64_t j = 0;
        for (; j + kPoints <= N; j += kPoints) {
          update_distances<kPoints>(p + j * C, last.data(), C, m ? m + j : nullptr, dist.data() + j);
        }
        for (; j < N; ++j) update_distances<1>(p + j * C, last.data(), C, m ? m + j : nullptr, dist.data() + j);
        // The farthest point: O(N) against the O(N * C) distances above.
        acc_t best_d = -std::numeric_limits<acc_t>::infinity();
        int64_t best_i = N;
        for (int64_t j = 0; j < N; ++j) {
          if (fps_better(dist[j], j, best_d, best_i)) {
            best_d = dist[j];
            best_i = j;
          }
        }
        cur = best_i;
        ip[b * K + i] = cur;
      }
    }
  });
}

}  // namespace
}  // namespace CPU_CAPABILITY

template <>
void farthest_point_sample<Isa::CPU_CAPABILITY>(const at::Tensor& points, const at::Tensor& mask, int64_t start,
                                                const at::Tensor& idx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, points.scalar_type(), "farthest_point_sample",
                                  [&] { CPU_CAPABILITY::fps_impl<scalar_t>(points, mask, start, idx); });
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const FarthestPointSampleKernels kKernels{HCAM_CPU_DISPATCH(farthest_point_sample)};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("farthest_point_sample", device_entry<&hcam_ops::farthest_point_sample, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
