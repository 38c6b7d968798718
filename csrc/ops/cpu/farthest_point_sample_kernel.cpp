// CPU farthest point sampling: parallel over samples; per pick, one pass over
// the points updates each point's distance to the chosen set and finds the
// farthest (distances are vectorised sums over channels).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <limits>
#include <vector>

#include "../farthest_point_sample.h"

namespace hcam_ops::cpu {

namespace {

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
        acc_t best_d = -std::numeric_limits<acc_t>::infinity();
        int64_t best_i = N;
        for (int64_t j = 0; j < N; ++j) {
          if (!(m && !m[j])) {
            const scalar_t* q = p + j * C;
            acc_t d = 0;
#pragma omp simd reduction(+ : d)
            for (int64_t c = 0; c < C; ++c) {
              const acc_t v = static_cast<acc_t>(q[c]) - last[c];
              d += v * v;
            }
            if (d < dist[j]) dist[j] = d;
          }
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

void farthest_point_sample(const at::Tensor& points, const at::Tensor& mask, int64_t start, const at::Tensor& idx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, points.scalar_type(), "farthest_point_sample",
                                  [&] { fps_impl<scalar_t>(points, mask, start, idx); });
}

}  // namespace hcam_ops::cpu
