// CPU passes over the features, shared by cam_gather and the fused CAM-KL op
// (../cam_passes.h).
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

#include <type_traits>
#include <vector>

#include "convert.h"
#include "../cam_pass_entries.h"
#include "cam_passes.h"
#include "isa.h"
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

// Sample b's weight rows of levels [0, count) in the accumulation dtype:
// the rows themselves when they have it, else widened once into buf.
template <typename scalar_t>
std::vector<const at::opmath_type<scalar_t>*> acc_weight_rows(const Levels& lv, int64_t b, int64_t count, int64_t C,
                                                              std::vector<at::opmath_type<scalar_t>>& buf) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto w = weight_rows_of<scalar_t>(lv, b, count);
  std::vector<const acc_t*> rows(count);
  for (int64_t l = 0; l < count; ++l) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      rows[l] = w[l];
    } else {
      buf.resize(count * C);
      for (int64_t c = 0; c < C; ++c) buf[l * C + c] = static_cast<acc_t>(w[l][c]);
      rows[l] = buf.data() + l * C;
    }
  }
  return rows;
}

// Register blocks. Tokens: one feature row (position) at a time against
// kCols levels, the channels split over kSplit vectors so that the
// accumulators are independent (one per dot product would wait out the
// FMA latency). One row at a time keeps the reads one sequential
// stream (blocks of rows read side by side lose the hardware
// prefetcher). Maps: kRows vectors of positions against kCols
// levels, each channel's row read once for all levels.
constexpr int kRows = 4, kCols = 2, kSplit = 4;

// Tasks the tokens' weight-gradient pass aims for across the batch: four per
// core of a 64-core server; fewer only where a split would drop below 64 rows.
constexpr int64_t kTasks = 256;

// out[l] = <x, w[l]> over C for kCols levels (w in the accumulation dtype).
template <typename scalar_t>
void dot_row(const scalar_t* x, const at::opmath_type<scalar_t>* const* w, int64_t C,
             at::opmath_type<scalar_t> (&out)[kCols]) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t V = Vec::size();
  Vec acc[kSplit][kCols];
  for (int u = 0; u < kSplit; ++u)
    for (int l = 0; l < kCols; ++l) acc[u][l] = Vec(acc_t(0));
  int64_t c = 0;
  for (; c + kSplit * V <= C; c += kSplit * V) {
    for (int u = 0; u < kSplit; ++u) {
      const Vec xv = load_acc(x + c + u * V);
      for (int l = 0; l < kCols; ++l) acc[u][l] = at::vec::fmadd(xv, Vec::loadu(w[l] + c + u * V), acc[u][l]);
    }
  }
  for (; c < C; c += V) {
    const int64_t m = std::min(V, C - c);
    const Vec xv = load_acc(x + c, m);
    for (int l = 0; l < kCols; ++l) {
      acc[0][l] = at::vec::fmadd(xv, load_acc(w[l] + c, m), acc[0][l]);
    }
  }
  for (int l = 0; l < kCols; ++l) {
    Vec t = acc[0][l];
    for (int u = 1; u < kSplit; ++u) t = t + acc[u][l];
    out[l] = sum_lanes(t);
  }
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
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* xr = x + c * N;
    Vec xv[kRows];
    for (int j = 0; j < kRows; ++j) {
      xv[j] = j * V < len ? load_acc(xr + j * V, len - j * V) : Vec(acc_t(0));
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

// Backward of one position: for every channel c,
//   dr[c] = sum_l g[l] * w[l][c]         (the features' gradient)
//   part[l][c] += g[l] * x[c]            (the weight gradient's partial sums)
// in one sweep over the channels (one row at a time: see kSplit); w holds L
// rows in the accumulation dtype, part is [L, C], in L1 across the rows of a
// split. dr null: the features' gradient is not wanted (nothing written).
template <typename scalar_t>
void grad_row(const scalar_t* x, scalar_t* dr, const at::opmath_type<scalar_t>* const* w,
              const at::opmath_type<scalar_t>* g, int64_t L, int64_t C, at::opmath_type<scalar_t>* part) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t V = Vec::size();
  int64_t c = 0;
  // Pairs of vectors first: the features' gradient stored with store_acc2
  // (one conversion and one full store per 2V channels in bfloat16 / half).
  for (; c + 2 * V <= C; c += 2 * V) {
    const Vec x0 = load_acc(x + c), x1 = load_acc(x + c + V);
    Vec d0(acc_t(0)), d1(acc_t(0));
    for (int64_t l = 0; l < L; ++l) {
      const Vec gl(g[l]);
      acc_t* pl = part + l * C + c;
      if (dr) {
        d0 = at::vec::fmadd(gl, load_acc(w[l] + c), d0);
        d1 = at::vec::fmadd(gl, load_acc(w[l] + c + V), d1);
      }
      at::vec::fmadd(gl, x0, Vec::loadu(pl)).store(pl);
      at::vec::fmadd(gl, x1, Vec::loadu(pl + V)).store(pl + V);
    }
    if (dr) store_acc2(dr + c, d0, d1);
  }
  for (; c < C; c += V) {
    const int64_t m = std::min(V, C - c);
    const Vec xv = load_acc(x + c, m);
    Vec d(acc_t(0));
    for (int64_t l = 0; l < L; ++l) {
      const Vec gl(g[l]);
      acc_t* pl = part + l * C + c;
      if (dr) d = at::vec::fmadd(gl, load_acc(w[l] + c, m), d);
      const Vec pv = at::vec::fmadd(gl, xv, load_acc(pl, m));
      pv.store(pl, m);
    }
    if (dr) store_acc(dr + c, d, m);
  }
}

// The three passes for one dtype; CamPassEntries (../cam_pass_entries.h) dispatches to them.
struct Passes {
  template <typename scalar_t>
  static void cam_pass(const FeatureView& v, const Levels& lv, const at::Tensor& cams) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t B = v.B, N = v.N, C = v.C, L = lv.size();
    const scalar_t* x = v.data.data_ptr<scalar_t>();
    acc_t* out = cams.data_ptr<acc_t>();
    if (!v.channels_first) {
      // Rows are positions: kCols levels at a time against each row.
      at::parallel_for(0, B * N, 64, [&](int64_t begin, int64_t end) {
        std::vector<acc_t> buf;
        for (int64_t i = begin; i < end;) {
          const int64_t b = i / N, stop = std::min(end, (b + 1) * N);
          const auto wr = acc_weight_rows<scalar_t>(lv, b, L, C, buf);
          for (; i < stop; ++i) {
            for (int64_t l0 = 0; l0 < L; l0 += kCols) {
              // A level group past L repeats its last level; the extra result is dropped.
              const int64_t cols = std::min<int64_t>(kCols, L - l0);
              const acc_t* wl[kCols];
              for (int l = 0; l < kCols; ++l) wl[l] = wr[l0 + std::min<int64_t>(l, cols - 1)];
              acc_t dots[kCols];
              dot_row<scalar_t>(x + i * C, wl, C, dots);
              for (int64_t l = 0; l < cols; ++l) out[(b * L + l0 + l) * N + (i - b * N)] = dots[l];
            }
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

  template <typename scalar_t>
  static at::Tensor grad_pass(const FeatureView& v, const Levels& lv, const at::Tensor& coef,
                              const std::optional<at::Tensor>& scale, const at::Tensor& dx_rows) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t B = v.B, N = v.N, C = v.C, L = coef.size(1);
    const scalar_t* x = v.data.data_ptr<scalar_t>();
    // Undefined dx_rows: only the weights' partial sums are wanted.
    scalar_t* dx = dx_rows.defined() ? dx_rows.data_ptr<scalar_t>() : nullptr;
    const acc_t* g = coef.data_ptr<acc_t>();
    const scalar_t* sc = scale ? scale->data_ptr<scalar_t>() : nullptr;
    auto factor = [&](int64_t b) { return sc ? static_cast<acc_t>(sc[b]) : acc_t(1); };

    if (!v.channels_first) {
      // Rows are positions: split them so that every core has work; each task
      // owns one [L, C] slice of the partial weight gradients. The split is
      // fixed (kTasks, not the thread count): class_reduce sums the slices in
      // order, so the weight gradient is the same bits at any thread count.
      const int64_t chunk = rows_per_split(N, B, kTasks, 64);
      const int64_t splits = (N + chunk - 1) / chunk;
      auto partial = at::zeros({B, splits, L, C}, coef.options());
      acc_t* p = partial.data_ptr<acc_t>();
      at::parallel_for(0, B * splits, 1, [&](int64_t begin, int64_t end) {
        std::vector<acc_t> buf, gn(L);
        for (int64_t t = begin; t < end; ++t) {
          const int64_t b = t / splits, s = t % splits;
          const auto w = acc_weight_rows<scalar_t>(lv, b, L, C, buf);
          const acc_t f = factor(b);
          acc_t* pt = p + t * L * C;
          for (int64_t n = s * chunk; n < std::min(N, (s + 1) * chunk); ++n) {
            for (int64_t l = 0; l < L; ++l) gn[l] = g[(b * L + l) * N + n] * f;
            grad_row<scalar_t>(x + (b * N + n) * C, dx ? dx + (b * N + n) * C : nullptr, w.data(), gn.data(), L, C, pt);
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
          if (dx) {
            std::fill(drow.begin(), drow.end(), acc_t(0));
            for (int64_t l = 0; l < L; ++l) {
              const acc_t wc = static_cast<acc_t>(w[l][c]) * f;
              const acc_t* gr = g + (b * L + l) * N;
              acc_t* d = drow.data();
#pragma omp simd
              for (int64_t n = 0; n < N; ++n) d[n] += wc * gr[n];
            }
            scalar_t* dr = dx + i * N;
            for (int64_t n = 0; n < N; ++n) dr[n] = to_scalar<scalar_t>(drow[n]);
          }
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
  static void class_reduce(const at::Tensor& partial, const Levels& lv, int64_t l0, int64_t l1, const at::Tensor& dw) {
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
};

}  // namespace

}  // namespace CPU_CAPABILITY

template <>
const CamPasses* cam_passes<Isa::CPU_CAPABILITY>() {
  static constexpr CamPasses kPasses = CamPassEntries<CPU_CAPABILITY::Passes>::table(/*checks_index_range=*/true);
  return &kPasses;
}

}  // namespace hcam_ops::cpu
