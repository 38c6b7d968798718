// CPU kernels of cam_gather and the feature passes of the fused CAM-KL op.
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
#include "cam_passes.h"
#include "vec.h"

namespace hcam_ops::cpu {

namespace CPU_CAPABILITY {

namespace {


template <typename scalar_t>
std::vector<const scalar_t*> weight_rows_of(const Levels& lv, int64_t b, int64_t count) {
  std::vector<const scalar_t*> rows(count);
  for (int64_t l = 0; l < count; ++l) {
    const int64_t k = lv.index[l][b * lv.index_stride];
    rows[l] = lv.weights[l].data_ptr<scalar_t>() + k * lv.weights[l].size(1);
  }
  return rows;
}

// Register blocks of the forward pass: kRows feature rows (positions) against
// kCols weight rows (levels), or kCols vectors of positions against kRows
// channels. Independent accumulators keep the FMA units busy (one accumulator
// per dot product waits out the FMA latency: 2x slower), and each load is used
// kCols or kRows times.
constexpr int kRows = 4, kCols = 2;

// out[p * L + l] = <x[p], w[l]> over C for the kRows x kCols block; the rows
// and columns past the block's real size repeat its last one (their results
// are dropped by the caller).
template <typename scalar_t>
void dot_block(const scalar_t* const* x, const scalar_t* const* w, int64_t C,
               at::opmath_type<scalar_t> (&out)[kRows][kCols]) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t V = Vec::size();
  Vec acc[kRows][kCols];
  for (int p = 0; p < kRows; ++p)
    for (int l = 0; l < kCols; ++l) acc[p][l] = Vec(acc_t(0));
  int64_t c = 0;
  for (; c + V <= C; c += V) {
    Vec wv[kCols];
    for (int l = 0; l < kCols; ++l) wv[l] = load_acc(w[l] + c);
    for (int p = 0; p < kRows; ++p) {
      const Vec xv = load_acc(x[p] + c);
      for (int l = 0; l < kCols; ++l) acc[p][l] = at::vec::fmadd(xv, wv[l], acc[p][l]);
    }
  }
  if (c < C) {
    Vec wv[kCols];
    for (int l = 0; l < kCols; ++l) wv[l] = load_acc(w[l] + c, C - c);
    for (int p = 0; p < kRows; ++p) {
      const Vec xv = load_acc(x[p] + c, C - c);
      for (int l = 0; l < kCols; ++l) acc[p][l] = at::vec::fmadd(xv, wv[l], acc[p][l]);
    }
  }
  for (int p = 0; p < kRows; ++p)
    for (int l = 0; l < kCols; ++l) out[p][l] = sum_lanes(acc[p][l]);
}

// Channels first: out[l][j] = sum_c w[l][c] * x[c * N + j] for kRows vectors of
// positions from x (len of them real) and kCols levels, the accumulators held
// in registers over the whole channel loop.
template <typename scalar_t>
void axpy_block(const scalar_t* x, int64_t N, int64_t len, const scalar_t* const* w, int64_t C,
                at::opmath_type<scalar_t>* const* out) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t V = Vec::size();
  Vec acc[kCols][kRows];
  for (int l = 0; l < kCols; ++l)
    for (int j = 0; j < kRows; ++j) acc[l][j] = Vec(acc_t(0));
  const int64_t full = len / V, tail = len % V;
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* xr = x + c * N;
    Vec xv[kRows];
    for (int j = 0; j < kRows; ++j) {
      xv[j] = j < full ? load_acc(xr + j * V) : j == full && tail ? load_acc(xr + j * V, tail) : Vec(acc_t(0));
    }
    for (int l = 0; l < kCols; ++l) {
      const Vec wv(static_cast<acc_t>(w[l][c]));
      for (int j = 0; j < kRows; ++j) acc[l][j] = at::vec::fmadd(xv[j], wv, acc[l][j]);
    }
  }
  for (int l = 0; l < kCols; ++l) {
    for (int j = 0; j < kRows && j * V < len; ++j) acc[l][j].store(out[l] + j * V, std::min(V, len - j * V));
  }
}

template <typename scalar_t>
void cam_pass_impl(const FeatureView& v, const Levels& lv, const at::Tensor& cams) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = v.B, N = v.N, C = v.C, L = lv.size();
  const scalar_t* x = v.data.data_ptr<scalar_t>();
  acc_t* out = cams.data_ptr<acc_t>();
  if (!v.channels_first) {
    // Rows are positions: blocks of kRows positions of one sample against
    // kCols levels at a time.
    at::parallel_for(0, B * N, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end;) {
        const int64_t b = i / N, stop = std::min(end, (b + 1) * N);
        const auto w = weight_rows_of<scalar_t>(lv, b, L);
        while (i < stop) {
          const int64_t rows = std::min<int64_t>(kRows, stop - i);
          const scalar_t* xr[kRows];
          for (int p = 0; p < kRows; ++p) xr[p] = x + (i + std::min<int64_t>(p, rows - 1)) * C;
          for (int64_t l0 = 0; l0 < L; l0 += kCols) {
            const int64_t cols = std::min<int64_t>(kCols, L - l0);
            const scalar_t* wl[kCols];
            for (int l = 0; l < kCols; ++l) wl[l] = w[l0 + std::min<int64_t>(l, cols - 1)];
            acc_t dots[kRows][kCols];
            dot_block<scalar_t>(xr, wl, C, dots);
            for (int64_t p = 0; p < rows; ++p)
              for (int64_t l = 0; l < cols; ++l) out[(b * L + l0 + l) * N + (i + p - b * N)] = dots[p][l];
          }
          i += rows;
        }
      }
    });
    return;
  }
  // Rows are channels: tiles of kRows vectors of positions.
  const int64_t tile = kRows * acc_vec<scalar_t>::size();
  const int64_t tiles = (N + tile - 1) / tile;
  at::parallel_for(0, B * tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / tiles, n0 = (t % tiles) * tile, len = std::min(tile, N - n0);
      const auto w = weight_rows_of<scalar_t>(lv, b, L);
      for (int64_t l0 = 0; l0 < L; l0 += kCols) {
        const int64_t cols = std::min<int64_t>(kCols, L - l0);
        const scalar_t* wl[kCols];
        acc_t* ol[kCols];
        for (int l = 0; l < kCols; ++l) {
          // A repeated level writes the same values twice.
          const int64_t lc = l0 + std::min<int64_t>(l, cols - 1);
          wl[l] = w[lc];
          ol[l] = out + (b * L + lc) * N + n0;
        }
        axpy_block<scalar_t>(x + b * C * N + n0, N, len, wl, C, ol);
      }
    }
  });
}

// Backward of kRows positions: for every channel c,
//   dr[p][c] = sum_l g[p][l] * w[l][c]      (the features' gradient)
//   part[l][c] += sum_p g[p][l] * x[p][c]   (the weight gradient's partial sums)
// in one sweep over the channels; w and part are [L, C] in the accumulation
// dtype, g is [kRows, L]. Every row is read and written: the caller points
// missing rows at a real row with a zero g and at a scratch row for dr, so the
// loops have constant trip counts and the vectors stay in registers (branches
// on the row count put them on the stack: 2x slower).
template <typename scalar_t>
void grad_block(const scalar_t* const* x, scalar_t* const* dr, const at::opmath_type<scalar_t>* w,
                const at::opmath_type<scalar_t>* g, int64_t L, int64_t C, at::opmath_type<scalar_t>* part) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t V = Vec::size();
  auto sweep = [&](int64_t c, auto load_x, auto load, auto store_dr, auto store) {
    Vec xv[kRows], d[kRows];
    for (int p = 0; p < kRows; ++p) {
      xv[p] = load_x(x[p] + c);
      d[p] = Vec(acc_t(0));
    }
    for (int64_t l = 0; l < L; ++l) {
      const Vec wl = load(w + l * C + c);
      acc_t* pl = part + l * C + c;
      Vec pv = load(pl);
      for (int p = 0; p < kRows; ++p) {
        const Vec gp(g[p * L + l]);
        d[p] = at::vec::fmadd(gp, wl, d[p]);
        pv = at::vec::fmadd(gp, xv[p], pv);
      }
      store(pl, pv);
    }
    for (int p = 0; p < kRows; ++p) store_dr(dr[p] + c, d[p]);
  };
  int64_t c = 0;
  for (; c + V <= C; c += V) {
    sweep(
        c, [](const scalar_t* q) { return load_acc(q); }, [](const acc_t* q) { return Vec::loadu(q); },
        [](scalar_t* q, const Vec& v) { store_acc(q, v); }, [](acc_t* q, const Vec& v) { v.store(q); });
  }
  if (c < C) {
    const int64_t m = C - c;
    sweep(
        c, [m](const scalar_t* q) { return load_acc(q, m); }, [m](const acc_t* q) { return Vec::loadu(q, m); },
        [m](scalar_t* q, const Vec& v) { store_acc(q, v, m); }, [m](acc_t* q, const Vec& v) { v.store(q, m); });
  }
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
      std::vector<acc_t> wv(L * C), gn(kRows * L);
      std::vector<scalar_t> scratch(C);  // dr of the missing rows of a block
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / splits, s = t % splits;
        const auto w = weight_rows_of<scalar_t>(lv, b, L);
        for (int64_t l = 0; l < L; ++l) {
          for (int64_t c = 0; c < C; ++c) wv[l * C + c] = static_cast<acc_t>(w[l][c]);
        }
        const acc_t f = factor(b);
        acc_t* pt = p + t * L * C;
        const int64_t stop = std::min(N, (s + 1) * chunk);
        for (int64_t n = s * chunk; n < stop; n += kRows) {
          // kRows positions at a time: each weight and partial-sum vector is
          // loaded once for all of them. Missing rows repeat the last one
          // with a zero coefficient (no share in the partial sums).
          const int64_t rows = std::min<int64_t>(kRows, stop - n);
          const scalar_t* xr[kRows];
          scalar_t* dr[kRows];
          for (int p = 0; p < kRows; ++p) {
            const int64_t np = n + std::min<int64_t>(p, rows - 1);
            xr[p] = x + (b * N + np) * C;
            dr[p] = p < rows ? dx + (b * N + np) * C : scratch.data();
            for (int64_t l = 0; l < L; ++l) gn[p * L + l] = p < rows ? g[(b * L + l) * N + np] * f : acc_t(0);
          }
          grad_block<scalar_t>(xr, dr, wv.data(), gn.data(), L, C, pt);
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

at::Tensor cam_gather_cpu(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& index) {
  const auto v = view_features(features, "cam_gather");
  const auto lv = levels_of_index(weight, index, v, features, "cam_gather");
  auto cams = at::empty({v.B, lv.size(), v.N}, features.options().dtype(acc_type_of(features.scalar_type())));
  if (v.B == 0) return cams.to(features.scalar_type());
  check_index_range(lv, v.B, "cam_gather");
  cam_pass(v, lv, cams);
  return cams.to(features.scalar_type());
}

std::tuple<at::Tensor, at::Tensor> cam_gather_backward_cpu(const at::Tensor& grad, const at::Tensor& features,
                                                           const at::Tensor& weight, const at::Tensor& index) {
  const auto v = view_features(features, "cam_gather_backward");
  const auto lv = levels_of_index(weight, index, v, features, "cam_gather_backward");
  TORCH_CHECK(grad.dim() == 3 && grad.size(0) == v.B && grad.size(1) == lv.size() && grad.size(2) == v.N,
              "cam_gather_backward: grad must be [B, L, N] = [", v.B, ", ", lv.size(), ", ", v.N, "], got ",
              grad.sizes());
  auto [dx, dx_rows] = empty_features_grad(features, v);
  auto dw = at::zeros_like(lv.weights[0]);
  if (v.B == 0) return {dx, dw};
  check_index_range(lv, v.B, "cam_gather_backward");
  const auto coef = grad.to(acc_type_of(features.scalar_type())).contiguous();
  const auto partial = grad_pass(v, lv, coef, std::nullopt, dx_rows);
  class_reduce(partial, lv, 0, lv.size(), dw);
  return {dx, dw};
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

template <>
void register_cam_gather_kernels<Isa::CPU_CAPABILITY>(torch::Library& m) {
  m.impl("cam_gather", &CPU_CAPABILITY::cam_gather_cpu);
  m.impl("cam_gather_backward", &CPU_CAPABILITY::cam_gather_backward_cpu);
}

}  // namespace hcam_ops::cpu
