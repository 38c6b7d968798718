// CUDA passes over the features, shared by cam_gather and the fused CAM-KL op
// (../cam_passes.h).
//
// The features are a [B, R, S] buffer of rows with S contiguous elements
// (FeatureView). A CAM contracts over channels and a weight gradient over
// positions, so each pass is one of two shapes:
//   rowdot: contract along the contiguous dim; one warp per row, lanes over
//           16-byte packs, a shuffle reduction at the end;
//   coldot: contract along the strided dim; one thread per 16-byte pack of
//           columns, looping over a split of the rows (partial results per
//           split, summed later in a fixed order).
// Both can also write the outer-product gradient dx[r, s] = sum_l u_l[r] v_l[s]
// in the same pass, when one pass holds every level; past that (cam_gather
// with more than kPassLevels levels) outer_kernel writes it for all levels at
// once, so dx is rounded to the features' dtype once.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "../cam_pass_entries.h"
#include "../cam_math.h"
#include "block_reduce.cuh"
#include "cam_passes.h"
#include "launch.h"
#include "vec_load.cuh"

namespace hcam_ops::cuda {

namespace {

constexpr int kThreads = 256;
// Blocks per SM that rowdot and outer_kernel promise ptxas: with no minimum,
// ptxas (CUDA 13) squeezes them into 32 registers for full occupancy and
// spills; two still leave it the registers they need (at most 90).
constexpr int kMinBlocks = 2;

template <typename T>
__device__ __forceinline__ T nan_value() {
  return std::numeric_limits<T>::quiet_NaN();
}

// out[b, out_offset + l, r] = sum_s x[b, r, s] * v_l[s]           for l < L
// dx[b, r, s] =                sum_l u_l[r] * v_l[s]                 when kDx
// v_l, u_l: the per-sample rows of vsrc and usrc, times their factors. A
// missing row (class index out of range) gives NaN instead of a read.
template <typename scalar_t, typename acc_t, int VEC, typename VSrc, typename USrc, bool kDx>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    rowdot_kernel(const scalar_t* __restrict__ x, int64_t R, int64_t S, int L, VSrc vsrc, USrc usrc,
                  acc_t* __restrict__ out, int64_t out_levels, int64_t out_offset, scalar_t* __restrict__ dx,
                  int64_t row_blocks) {
  const int warps = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // 32-bit: the grid is below 2^31 blocks (checked_grid), and a 64-bit
  // division is a called routine that costs spills around it.
  const unsigned rb = static_cast<unsigned>(row_blocks);
  const int64_t b = blockIdx.x / rb;
  const int64_t r = static_cast<int64_t>(blockIdx.x % rb) * warps + warp;
  if (r >= R) return;  // whole warps leave: the shuffles below stay full

  using v_t = typename VSrc::value_t;
  const v_t* v[kPassLevels];
  acc_t u[kPassLevels];
  const acc_t vf = vsrc.template factor<acc_t>(b);
#pragma unroll
  for (int l = 0; l < kPassLevels; ++l) {
    v[l] = l < L ? vsrc.row(b, l) : nullptr;
    u[l] = acc_t(0);
    if (kDx && l < L) {
      const auto* ur = usrc.row(b, l);
      u[l] = ur ? static_cast<acc_t>(ur[r]) * usrc.template factor<acc_t>(b) : nan_value<acc_t>();
    }
  }

  acc_t acc[kPassLevels];
#pragma unroll
  for (int l = 0; l < kPassLevels; ++l) acc[l] = acc_t(0);
  const scalar_t* xr = x + (b * R + r) * S;
  scalar_t* dr = kDx ? dx + (b * R + r) * S : nullptr;
  for (int64_t s = static_cast<int64_t>(lane) * VEC; s < S; s += 32 * VEC) {
    const auto xp = load_pack<VEC>(xr + s);
    acc_t d[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) d[j] = acc_t(0);
#pragma unroll
    for (int l = 0; l < kPassLevels; ++l) {
      if (l < L && v[l] != nullptr) {
        const auto vp = load_pack<VEC>(v[l] + s);
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const acc_t vv = static_cast<acc_t>(vp.v[j]) * vf;
          acc[l] += static_cast<acc_t>(xp.v[j]) * vv;
          if (kDx) d[j] += u[l] * vv;
        }
      }
    }
    if (kDx) {
      Pack<scalar_t, VEC> o;
#pragma unroll
      for (int j = 0; j < VEC; ++j) o.v[j] = static_cast<scalar_t>(d[j]);
      store_pack<VEC>(dr + s, o);
    }
  }
#pragma unroll
  for (int l = 0; l < kPassLevels; ++l) {
    if (l < L) {
      const acc_t total = warp_allreduce(acc[l], SumOp{});
      if (lane == 0) {
        out[(b * out_levels + out_offset + l) * R + r] = v[l] ? total : nan_value<acc_t>();
      }
    }
  }
}

// out[b, split, out_offset + l, s] = sum over rows r of the split of x[b, r, s] * u_l[r]
// dx[b, r, s] =                      sum_l u_l[r] * v_l[s]                       when kDx
template <typename scalar_t, typename acc_t, int VEC, typename USrc, typename VSrc, bool kDx>
__global__ void __launch_bounds__(kThreads)
    coldot_kernel(const scalar_t* __restrict__ x, int64_t R, int64_t S, int L, USrc usrc, VSrc vsrc,
                  acc_t* __restrict__ out, int64_t out_levels, int64_t out_offset, scalar_t* __restrict__ dx,
                  int64_t col_blocks, int64_t splits, int64_t split_rows) {
  int64_t blk = blockIdx.x;
  const int64_t cb = blk % col_blocks;
  blk /= col_blocks;
  const int64_t sp = blk % splits, b = blk / splits;
  const int64_t s = (cb * blockDim.x + threadIdx.x) * VEC;
  if (s >= S) return;
  const int64_t r0 = sp * split_rows, r1 = min(R, r0 + split_rows);

  using u_t = typename USrc::value_t;
  const u_t* u[kPassLevels];
  const acc_t uf = usrc.template factor<acc_t>(b);
  acc_t vv[kPassLevels][VEC];
  acc_t acc[kPassLevels][VEC];
#pragma unroll
  for (int l = 0; l < kPassLevels; ++l) {
    u[l] = l < L ? usrc.row(b, l) : nullptr;
    const auto* vr = (kDx && l < L) ? vsrc.row(b, l) : nullptr;
    const acc_t vf = vsrc.template factor<acc_t>(b);
    Pack<typename VSrc::value_t, VEC> vp;
    if (vr) vp = load_pack<VEC>(vr + s);
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      acc[l][j] = acc_t(0);
      vv[l][j] = vr ? static_cast<acc_t>(vp.v[j]) * vf : (kDx && l < L ? nan_value<acc_t>() : acc_t(0));
    }
  }

  const scalar_t* xc = x + b * R * S + s;
  scalar_t* dc = kDx ? dx + b * R * S + s : nullptr;
#pragma unroll 4
  for (int64_t r = r0; r < r1; ++r) {
    const auto xp = load_pack<VEC>(xc + r * S);
    acc_t d[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) d[j] = acc_t(0);
#pragma unroll
    for (int l = 0; l < kPassLevels; ++l) {
      if (l < L && u[l] != nullptr) {
        const acc_t ul = static_cast<acc_t>(u[l][r]) * uf;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          acc[l][j] += ul * static_cast<acc_t>(xp.v[j]);
          if (kDx) d[j] += ul * vv[l][j];
        }
      }
    }
    if (kDx) {
      Pack<scalar_t, VEC> o;
#pragma unroll
      for (int j = 0; j < VEC; ++j) o.v[j] = static_cast<scalar_t>(d[j]);
      store_pack<VEC>(dc + r * S, o);
    }
  }
#pragma unroll
  for (int l = 0; l < kPassLevels; ++l) {
    if (l < L) {
      acc_t* o = out + ((b * splits + sp) * out_levels + out_offset + l) * S + s;
#pragma unroll
      for (int j = 0; j < VEC; ++j) o[j] = u[l] ? acc[l][j] : nan_value<acc_t>();
    }
  }
}

// cams[b, j] = sum over splits, in split order, of partial[b, split, j]
// (j over the [L, S] CAMs of a sample): the coldot splits of the forward.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    split_sum_kernel(const acc_t* __restrict__ partial, int64_t splits, int64_t per_sample, int64_t total,
                     acc_t* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t b = i / per_sample, j = i % per_sample;
  const acc_t* p = partial + b * splits * per_sample + j;
  acc_t sum = p[0];
  for (int64_t sp = 1; sp < splits; ++sp) sum += p[sp * per_sample];
  out[i] = sum;
}

// Level l of sample b reads row index[b * index_stride + l] of one weight
// [num_rows, row_len]: cam_gather's levels, however many (WeightRows holds one
// pass's worth). No row for an index out of range, as in WeightRows.
template <typename T>
struct IndexRows {
  using value_t = T;
  const T* base;
  const int64_t* index;
  int64_t num_rows;
  int64_t index_stride;
  int64_t row_len;

  __device__ const T* row(int64_t b, int l) const {
    const int64_t k = index[b * index_stride + l];
    return (k >= 0 && k < num_rows) ? base + k * row_len : nullptr;
  }
  template <typename A>
  __device__ A factor(int64_t) const {
    return A(1);
  }
};

// dx[b, r, s] = sum over l < L, in order, of u_l[r] * v_l[s] (each times its
// source's factor, as the fused passes scale them), rounded once. A thread per
// pack of VEC columns; a missing row gives NaN as in the fused passes.
template <typename scalar_t, typename acc_t, int VEC, typename USrc, typename VSrc>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    outer_kernel(int64_t R, int64_t S, int L, USrc usrc, VSrc vsrc, scalar_t* __restrict__ dx, int64_t sample_blocks) {
  const unsigned sb = static_cast<unsigned>(sample_blocks);  // 32-bit: see rowdot
  const int64_t b = blockIdx.x / sb;
  const int64_t packs = S / VEC;
  const int64_t t = static_cast<int64_t>(blockIdx.x % sb) * blockDim.x + threadIdx.x;
  if (t >= R * packs) return;
  const int64_t r = t / packs, s = (t % packs) * VEC;
  const acc_t uf = usrc.template factor<acc_t>(b), vf = vsrc.template factor<acc_t>(b);
  acc_t d[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) d[j] = acc_t(0);
  for (int l = 0; l < L; ++l) {
    const auto* ur = usrc.row(b, l);
    const auto* vr = vsrc.row(b, l);
    if (ur == nullptr || vr == nullptr) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) d[j] = nan_value<acc_t>();
      continue;
    }
    const acc_t ul = static_cast<acc_t>(ur[r]) * uf;
    const auto vp = load_pack<VEC>(vr + s);
#pragma unroll
    for (int j = 0; j < VEC; ++j) d[j] += ul * (static_cast<acc_t>(vp.v[j]) * vf);
  }
  Pack<scalar_t, VEC> o;
#pragma unroll
  for (int j = 0; j < VEC; ++j) o.v[j] = static_cast<scalar_t>(d[j]);
  store_pack<VEC>(dx + (b * R + r) * S + s, o);
}

// dw[k, c] = sum over entries e with idx[e] == k, in increasing e, of
// sum over splits of partial[b, split, l, c], with b = e / per_sample and
// l = l0 + e % per_sample. The block gathers its class's entries in order
// (warp ballots), then each thread sums its column: deterministic, no atomics.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    class_reduce_kernel(const acc_t* __restrict__ partial, int64_t splits, int64_t Lp, int64_t C,
                        const int64_t* __restrict__ idx, int64_t entries, int64_t per_sample, int64_t l0,
                        int64_t col_blocks, scalar_t* __restrict__ dw) {
  __shared__ int64_t hits[kThreads];
  __shared__ int warp_hits[kThreads / 32];
  const int64_t k = blockIdx.x / col_blocks;
  const int64_t c = (blockIdx.x % col_blocks) * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  acc_t acc = 0;
  for (int64_t base = 0; base < entries; base += blockDim.x) {
    const int64_t e = base + threadIdx.x;
    const bool hit = e < entries && idx[e] == k;
    const unsigned mask = __ballot_sync(kFullMask, hit);
    if (lane == 0) warp_hits[warp] = __popc(mask);
    __syncthreads();
    int offset = 0, total = 0;
    for (int w = 0; w < warps; ++w) {
      offset += w < warp ? warp_hits[w] : 0;
      total += warp_hits[w];
    }
    if (hit) hits[offset + __popc(mask & ((1u << lane) - 1u))] = e;
    __syncthreads();
    if (c < C) {
      for (int i = 0; i < total; ++i) {
        const int64_t h = hits[i];
        const int64_t b = h / per_sample, l = l0 + h % per_sample;
        const acc_t* p = partial + (b * splits * Lp + l) * C + c;
        for (int64_t sp = 0; sp < splits; ++sp) acc += p[sp * Lp * C];
      }
    }
    __syncthreads();
  }
  if (c < C) dw[k * C + c] = static_cast<scalar_t>(acc);
}

// Launches rowdot or coldot with 16-byte packs when every pointer and row
// allows it, else element by element.
template <typename scalar_t, typename acc_t, typename Body>
void with_pack_width(bool packs_ok, Body&& body) {
  constexpr int kVec = pack_width<scalar_t>();
  if (packs_ok) {
    body(std::integral_constant<int, kVec>{});
  } else {
    body(std::integral_constant<int, 1>{});
  }
}

bool weights_aligned(const Levels& lv, int64_t first, int64_t count, size_t bytes) {
  for (int64_t l = first; l < first + count; ++l) {
    if (!aligned_to(lv.weights[l].data_ptr(), bytes)) return false;
  }
  return true;
}

// Whether the levels are cam_gather's: one weight, level l of sample b at
// index[0][b * index_stride + l].
bool levels_share_one_index(const Levels& lv) {
  for (int64_t l = 0; l < lv.size(); ++l) {
    if (!lv.weights[l].is_same(lv.weights[0]) || lv.index[l] != lv.index[0] + l) return false;
  }
  return lv.index_stride == lv.size();
}

// The three passes for one dtype; CamPassEntries (../cam_pass_entries.h) dispatches to them.
struct Passes {
  template <typename scalar_t>
  static void cam_pass(const FeatureView& v, const Levels& lv, const at::Tensor& cams) {
    using acc_t = at::opmath_type<scalar_t>;
    using Rows = WeightRows<scalar_t>;
    const int64_t B = v.B, R = v.rows(), S = v.cols(), L = lv.size();
    const scalar_t* x = v.data.data_ptr<scalar_t>();
    acc_t* out = cams.data_ptr<acc_t>();
    constexpr int kVec = pack_width<scalar_t>();
    if (!v.channels_first) {
      // Rows are positions: a CAM value is a dot product along the row.
      for (int64_t first = 0; first < L; first += kPassLevels) {
        const int count = static_cast<int>(std::min<int64_t>(kPassLevels, L - first));
        const auto rows = lv.rows<scalar_t>(first, count);
        const bool packs_ok = S % kVec == 0 && aligned_to(x, 16) && weights_aligned(lv, first, count, 16);
        with_pack_width<scalar_t, acc_t>(packs_ok, [&](auto vec) {
          constexpr int VEC = decltype(vec)::value;
          const int64_t row_blocks = (R + kThreads / 32 - 1) / (kThreads / 32);
          launch<rowdot_kernel<scalar_t, acc_t, VEC, Rows, Rows, false>>(checked_grid(B * row_blocks), kThreads, 0, x,
                                                                         R, S, count, rows, rows, out, L, first,
                                                                         nullptr, row_blocks);
        });
      }
      return;
    }
    // Rows are channels: each thread accumulates its positions over a split of
    // them, as the grad pass splits positions. A [B, 2048, 7, 7] map has 49
    // columns per sample, so without the split a sample's 2048 channels would
    // be one thread's serial loop. Splits write partial CAMs, summed afterwards
    // in split order (deterministic).
    const bool packs_ok = S % kVec == 0 && aligned_to(x, 16);
    with_pack_width<scalar_t, acc_t>(packs_ok, [&](auto vec) {
      constexpr int VEC = decltype(vec)::value;
      const int64_t cols = S / VEC;
      // A block no wider than the columns (whole warps), and about as many
      // warps in all as the grad pass's 8 blocks of kThreads per SM.
      const int threads = static_cast<int>(std::min<int64_t>(kThreads, (cols + 31) / 32 * 32));
      const int64_t col_blocks = (cols + threads - 1) / threads;
      const int64_t target = 8 * num_sms() * (kThreads / threads);
      const int64_t split_rows = rows_per_split(R, B * col_blocks, target, 32);
      const int64_t splits = (R + split_rows - 1) / split_rows;
      // One split writes the CAMs themselves ([B, 1, L, S] is cams' layout).
      const at::Tensor partial = splits > 1 ? at::empty({B, splits, L, S}, cams.options()) : cams;
      acc_t* p = partial.data_ptr<acc_t>();
      for (int64_t first = 0; first < L; first += kPassLevels) {
        const int count = static_cast<int>(std::min<int64_t>(kPassLevels, L - first));
        const auto rows = lv.rows<scalar_t>(first, count);
        launch<coldot_kernel<scalar_t, acc_t, VEC, Rows, Rows, false>>(checked_grid(B * splits * col_blocks), threads,
                                                                       0, x, R, S, count, rows, rows, p, L, first,
                                                                       nullptr, col_blocks, splits, split_rows);
      }
      if (splits > 1) {
        const int64_t total = B * L * S;
        launch<split_sum_kernel<acc_t>>(checked_grid((total + kThreads - 1) / kThreads), kThreads, 0, p, splits, L * S,
                                        total, out);
      }
    });
  }

  template <typename scalar_t>
  static at::Tensor grad_pass(const FeatureView& v, const Levels& lv, const at::Tensor& coef,
                              const std::optional<at::Tensor>& scale, const at::Tensor& dx_rows) {
    using acc_t = at::opmath_type<scalar_t>;
    using Coef = CoefRows<acc_t, scalar_t>;
    using Rows = WeightRows<scalar_t>;
    const int64_t B = v.B, R = v.rows(), S = v.cols(), C = v.C, N = v.N, Lc = coef.size(1);
    const scalar_t* x = v.data.data_ptr<scalar_t>();
    // Undefined dx_rows: only the weights' partial sums are wanted.
    scalar_t* dx = dx_rows.defined() ? dx_rows.data_ptr<scalar_t>() : nullptr;
    const acc_t* g = coef.data_ptr<acc_t>();
    const scalar_t* sc = scale ? scale->data_ptr<scalar_t>() : nullptr;
    constexpr int kVec = pack_width<scalar_t>();
    // dx in the passes only when one pass holds every level: a second pass
    // would add to a dx already rounded to scalar_t. Otherwise outer_kernel
    // writes it after them, from all levels at once.
    const bool dx_in_pass = dx != nullptr && Lc <= kPassLevels;

    int64_t splits = 1, split_rows = R, col_blocks = 1;
    if (!v.channels_first) {
      col_blocks = ((C + kVec - 1) / kVec + kThreads - 1) / kThreads;
      split_rows = rows_per_split(R, B * col_blocks, 8 * num_sms(), 32);
      splits = (R + split_rows - 1) / split_rows;
    }
    auto partial = at::empty({B, splits, Lc, C}, coef.options());
    acc_t* p = partial.data_ptr<acc_t>();

    for (int64_t first = 0; first < Lc; first += kPassLevels) {
      const int count = static_cast<int>(std::min<int64_t>(kPassLevels, Lc - first));
      const auto rows = lv.rows<scalar_t>(first, count);
      const Coef coefs{g, Lc, first, N, sc};
      const bool packs_ok =
          S % kVec == 0 && aligned_to(x, 16) && aligned_to(dx, 16) &&
          (v.channels_first ? aligned_to(g, kVec * sizeof(acc_t)) : weights_aligned(lv, first, count, 16));
      with_pack_width<scalar_t, acc_t>(packs_ok, [&](auto vec) {
        constexpr int VEC = decltype(vec)::value;
        auto launch_pass = [&](auto with_dx) {
          constexpr bool kDx = decltype(with_dx)::value;
          scalar_t* d = kDx ? dx : nullptr;
          if (!v.channels_first) {
            // Rows are positions: threads own channel packs, loop over positions.
            const int64_t cb = (S / VEC + kThreads - 1) / kThreads;
            launch<coldot_kernel<scalar_t, acc_t, VEC, Coef, Rows, kDx>>(checked_grid(B * splits * cb), kThreads, 0, x,
                                                                         R, S, count, coefs, rows, p, Lc, first, d, cb,
                                                                         splits, split_rows);
          } else {
            // Rows are channels: a warp owns a channel and reduces along positions.
            const int64_t row_blocks = (R + kThreads / 32 - 1) / (kThreads / 32);
            launch<rowdot_kernel<scalar_t, acc_t, VEC, Coef, Rows, kDx>>(
                checked_grid(B * row_blocks), kThreads, 0, x, R, S, count, coefs, rows, p, Lc, first, d, row_blocks);
          }
        };
        if (dx_in_pass) {
          launch_pass(std::true_type{});
        } else {
          launch_pass(std::false_type{});
        }
      });
    }
    if (dx != nullptr && !dx_in_pass) {
      // Only cam_gather has more levels than a pass holds (CAM-KL's backward
      // has at most kMaxLevels), and its levels share one weight and index.
      TORCH_INTERNAL_ASSERT(levels_share_one_index(lv) && Lc == lv.size(), "grad_pass: more than ", kPassLevels,
                            " levels need one shared index");
      TORCH_CHECK(Lc <= std::numeric_limits<int>::max(), "hcam_ops: too many levels: ", Lc);
      const IndexRows<scalar_t> w{lv.weights[0].data_ptr<scalar_t>(), lv.index[0], lv.weights[0].size(0),
                                  lv.index_stride, C};
      const Coef coefs{g, Lc, 0, N, sc};
      const int L = static_cast<int>(Lc);
      const bool packs_ok = S % kVec == 0 && aligned_to(dx, 16) &&
                            (v.channels_first ? aligned_to(g, kVec * sizeof(acc_t)) : aligned_to(w.base, 16));
      with_pack_width<scalar_t, acc_t>(packs_ok, [&](auto vec) {
        constexpr int VEC = decltype(vec)::value;
        const int64_t sample_blocks = (R * (S / VEC) + kThreads - 1) / kThreads;
        if (!v.channels_first) {
          // Rows are positions: u = coefficients, v = weight rows along channels.
          launch<outer_kernel<scalar_t, acc_t, VEC, Coef, IndexRows<scalar_t>>>(
              checked_grid(B * sample_blocks), kThreads, 0, R, S, L, coefs, w, dx, sample_blocks);
        } else {
          // Rows are channels: u = weight rows, v = coefficients along positions.
          launch<outer_kernel<scalar_t, acc_t, VEC, IndexRows<scalar_t>, Coef>>(
              checked_grid(B * sample_blocks), kThreads, 0, R, S, L, w, coefs, dx, sample_blocks);
        }
      });
    }
    return partial;
  }

  template <typename scalar_t>
  static void class_reduce(const at::Tensor& partial, const Levels& lv, int64_t l0, int64_t l1, const at::Tensor& dw) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t B = partial.size(0), splits = partial.size(1), Lp = partial.size(2), C = partial.size(3),
                  K = dw.size(0), per_sample = l1 - l0;
    // Entry e of the index buffer is sample e / per_sample at level l0 + e % per_sample.
    TORCH_INTERNAL_ASSERT(lv.index_stride == per_sample,
                          "class_reduce: levels must be one level of a list, or all of one index");
    const int threads = static_cast<int>(std::min<int64_t>(kThreads, (C + 31) / 32 * 32));
    const int64_t col_blocks = (C + threads - 1) / threads;
    launch<class_reduce_kernel<scalar_t, acc_t>>(checked_grid(K * col_blocks), threads, 0, partial.data_ptr<acc_t>(),
                                                 splits, Lp, C, lv.index[l0], B * per_sample, per_sample, l0,
                                                 col_blocks, dw.data_ptr<scalar_t>());
  }
};

}  // namespace

constinit const CamPasses kCamPasses = CamPassEntries<Passes>::table(/*checks_index_range=*/false);

}  // namespace hcam_ops::cuda
