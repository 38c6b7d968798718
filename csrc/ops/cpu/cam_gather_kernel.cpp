// CPU kernels of cam_gather: the feature passes, shared with the fused CAM-KL op.
// Parallel over samples and tiles of the independent dimension; the inner loops
// run over contiguous memory as flat `omp simd` loops (dot products, axpys),
// one loop per level, which GCC vectorises.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <vector>

#include "convert.h"
#include "../cam_features.h"
#include "../cam_gather.h"
#include "cam_passes.h"
#include "isa.h"

namespace hcam_ops::cpu {

namespace CPU_CAPABILITY {

namespace {

constexpr int64_t kTile = 256;  // columns per task of a channels-first pass

template <typename scalar_t>
std::vector<const scalar_t*> weight_rows_of(const Levels& lv, int64_t b, int64_t count) {
  std::vector<const scalar_t*> rows(count);
  for (int64_t l = 0; l < count; ++l) {
    const int64_t k = lv.index[l][b * lv.index_stride];
    rows[l] = lv.weights[l].data_ptr<scalar_t>() + k * lv.weights[l].size(1);
  }
  return rows;
}

template <typename scalar_t>
void cam_pass_impl(const FeatureView& v, const Levels& lv, const at::Tensor& cams) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = v.B, N = v.N, C = v.C, L = lv.size();
  const scalar_t* x = v.data.data_ptr<scalar_t>();
  acc_t* out = cams.data_ptr<acc_t>();
  if (!v.channels_first) {
    // Rows are positions: one dot product over C per (position, level).
    at::parallel_for(0, B * N, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {
        const int64_t b = i / N;
        const auto w = weight_rows_of<scalar_t>(lv, b, L);
        for (; i < end && i / N == b; ++i) {
          const int64_t n = i % N;
          const scalar_t* xr = x + i * C;
          for (int64_t l = 0; l < L; ++l) {
            const scalar_t* wl = w[l];
            acc_t s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t c = 0; c < C; ++c) s += static_cast<acc_t>(xr[c]) * static_cast<acc_t>(wl[c]);
            out[(b * L + l) * N + n] = s;
          }
        }
      }
    });
    return;
  }
  // Rows are channels: accumulate weight[c] * row c into a tile of positions.
  const int64_t tiles = (N + kTile - 1) / kTile;
  at::parallel_for(0, B * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(kTile * L);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / tiles, n0 = (t % tiles) * kTile, len = std::min(kTile, N - n0);
      const auto w = weight_rows_of<scalar_t>(lv, b, L);
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* xr = x + (b * C + c) * N + n0;
        for (int64_t l = 0; l < L; ++l) {
          const acc_t wc = static_cast<acc_t>(w[l][c]);
          acc_t* a = acc.data() + l * kTile;
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) {
            a[j] += wc * static_cast<acc_t>(xr[j]);
          }
        }
      }
      for (int64_t l = 0; l < L; ++l) {
        std::copy(acc.data() + l * kTile, acc.data() + l * kTile + len, out + (b * L + l) * N + n0);
      }
    }
  });
}

template <typename scalar_t>
at::Tensor grad_pass_impl(const FeatureView& v, const Levels& lv, const at::Tensor& coef,
                          const std::optional<at::Tensor>& scale, const at::Tensor& dx_rows) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = v.B, N = v.N, C = v.C, L = coef.size(1);
  const scalar_t* x = v.data.data_ptr<scalar_t>();
  scalar_t* dx = dx_rows.data_ptr<scalar_t>();
  const acc_t* g = coef.data_ptr<acc_t>();
  const scalar_t* sc = scale ? scale->data_ptr<scalar_t>() : nullptr;
  auto factor = [&](int64_t b) { return sc ? static_cast<acc_t>(sc[b]) : acc_t(1); };

  if (!v.channels_first) {
    // Rows are positions: split them so that every core has work; each task
    // owns one [L, C] slice of the partial weight gradients.
    const int64_t chunk = rows_per_split(N, B, 4 * at::get_num_threads(), 64);
    const int64_t splits = (N + chunk - 1) / chunk;
    auto partial = at::zeros({B, splits, L, C}, coef.options());
    acc_t* p = partial.data_ptr<acc_t>();
    at::parallel_for(0, B * splits, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> wv(L * C), gn(L), drow(C);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / splits, s = t % splits;
        const auto w = weight_rows_of<scalar_t>(lv, b, L);
        for (int64_t l = 0; l < L; ++l) {
          for (int64_t c = 0; c < C; ++c) wv[l * C + c] = static_cast<acc_t>(w[l][c]);
        }
        const acc_t f = factor(b);
        acc_t* pt = p + t * L * C;
        for (int64_t n = s * chunk; n < std::min(N, (s + 1) * chunk); ++n) {
          const scalar_t* xr = x + (b * N + n) * C;
          scalar_t* dr = dx + (b * N + n) * C;
          for (int64_t l = 0; l < L; ++l) gn[l] = g[(b * L + l) * N + n] * f;
          const acc_t* wp = wv.data();
          const acc_t* gp = gn.data();
          // One flat loop per level: a level loop inside the channel loop
          // does not vectorise (measured 4x slower).
          acc_t* d = drow.data();
          const acc_t g0 = gp[0];
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) d[c] = g0 * wp[c];
          for (int64_t l = 1; l < L; ++l) {
            const acc_t gl = gp[l];
            const acc_t* wl = wp + l * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) d[c] += gl * wl[c];
          }
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dr[c] = to_scalar<scalar_t>(d[c]);
          for (int64_t l = 0; l < L; ++l) {
            acc_t* pl = pt + l * C;
            const acc_t gv = gp[l];
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) pl[c] += gv * static_cast<acc_t>(xr[c]);
          }
        }
      }
    });
    return partial;
  }
  // Rows are channels: row c of sample b gives partial[b, 0, l, c] whole.
  auto partial = at::empty({B, 1, L, C}, coef.options());
  acc_t* p = partial.data_ptr<acc_t>();
  at::parallel_for(0, B * C, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> drow(N);
    for (int64_t i = begin; i < end;) {
      const int64_t b = i / C;
      const auto w = weight_rows_of<scalar_t>(lv, b, L);
      const acc_t f = factor(b);
      for (; i < end && i / C == b; ++i) {
        const int64_t c = i % C;
        const scalar_t* xr = x + i * N;
        scalar_t* dr = dx + i * N;
        std::fill(drow.begin(), drow.end(), acc_t(0));
        for (int64_t l = 0; l < L; ++l) {
          const acc_t wc = static_cast<acc_t>(w[l][c]) * f;
          const acc_t* gr = g + (b * L + l) * N;
          acc_t* d = drow.data();
#pragma omp simd
          for (int64_t n = 0; n < N; ++n) d[n] += wc * gr[n];
        }
        for (int64_t n = 0; n < N; ++n) dr[n] = to_scalar<scalar_t>(drow[n]);
        for (int64_t l = 0; l < L; ++l) {
          const acc_t* gr = g + (b * L + l) * N;
          acc_t s = 0;
#pragma omp simd reduction(+ : s)
          for (int64_t n = 0; n < N; ++n) s += static_cast<acc_t>(xr[n]) * gr[n];
          p[(b * L + l) * C + c] = s * f;
        }
      }
    }
  });
  return partial;
}

template <typename scalar_t>
void class_reduce_impl(const at::Tensor& partial, const Levels& lv, int64_t l0, int64_t l1, const at::Tensor& dw) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = partial.size(0), S = partial.size(1), L = partial.size(2), C = partial.size(3), K = dw.size(0);
  // Counting sort of the (sample, level) entries by class keeps each class's
  // sum in sample order whatever the thread count.
  std::vector<int64_t> start(K + 1, 0), order(B * (l1 - l0));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = l0; l < l1; ++l) ++start[lv.index[l][b * lv.index_stride] + 1];
  for (int64_t k = 0; k < K; ++k) start[k + 1] += start[k];
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t l = l0; l < l1; ++l) order[fill[lv.index[l][b * lv.index_stride]]++] = b * L + l;
  }
  const acc_t* p = partial.data_ptr<acc_t>();
  scalar_t* out = dw.data_ptr<scalar_t>();
  at::parallel_for(0, K, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t k = begin; k < end; ++k) {
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t e = start[k]; e < start[k + 1]; ++e) {
        const int64_t b = order[e] / L, l = order[e] % L;
        for (int64_t s = 0; s < S; ++s) {
          const acc_t* row = p + ((b * S + s) * L + l) * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acc[c] += row[c];
        }
      }
      for (int64_t c = 0; c < C; ++c) out[k * C + c] = static_cast<scalar_t>(acc[c]);
    }
  });
}

}  // namespace

void cam_pass(const FeatureView& v, const Levels& levels, const at::Tensor& cams) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "cam_pass",
                                  [&] { cam_pass_impl<scalar_t>(v, levels, cams); });
}

at::Tensor grad_pass(const FeatureView& v, const Levels& levels, const at::Tensor& coef,
                     const std::optional<at::Tensor>& scale, const at::Tensor& dx_rows) {
  at::Tensor partial;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.data.scalar_type(), "grad_pass",
                                  [&] { partial = grad_pass_impl<scalar_t>(v, levels, coef, scale, dx_rows); });
  return partial;
}

void class_reduce(const at::Tensor& partial, const Levels& levels, int64_t l0, int64_t l1, const at::Tensor& dw) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dw.scalar_type(), "class_reduce",
                                  [&] { class_reduce_impl<scalar_t>(partial, levels, l0, l1, dw); });
}

}  // namespace CPU_CAPABILITY

template <Isa>
CamPasses cam_passes();

template <>
CamPasses cam_passes<Isa::CPU_CAPABILITY>() {
  return CPU_CAPABILITY::kCamPasses;
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's passes (isa.h), chosen when the library is loaded.
const CamPasses kPasses = HCAM_CPU_DISPATCH(cam_passes)();
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("cam_gather", device_entry<&hcam_ops::cam_gather, &kPasses>);
  m.impl("cam_gather_backward", device_entry<&hcam_ops::cam_gather_backward, &kPasses>);
}
#endif

}  // namespace hcam_ops::cpu
