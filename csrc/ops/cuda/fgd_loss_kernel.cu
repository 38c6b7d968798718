// CUDA kernels of the FGD loss (fgd_math.h has the algorithm):
//  - stats: a block per (sample, tile of 32 * VEC positions), every channel;
//    a warp per channel row at a time, each lane VEC positions by one 16-byte
//    load. Per-channel sums by warp shuffles, per-position sums through shared
//    memory; a second sweep over the tile, channels in reverse (the rows
//    read last first, the likeliest to be in L2), forms the masked squared
//    errors with the tile's spatial weights.
//  - finish: a block per sample; reduces the tiles in order (deterministic),
//    both softmaxes and the six terms, in double.
//  - backward: per-channel and per-position coefficients, then one
//    elementwise pass reading S and T and writing d S.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <limits>

#include "../common.h"
#include "../fgd_loss.h"
#include "block_reduce.cuh"
#include "launch.h"
#include "vec_load.cuh"

namespace hcam_ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const scalar_t* __restrict__ S, const scalar_t* __restrict__ T, const acc_t* __restrict__ fg,
                 const acc_t* __restrict__ bg, const acc_t* __restrict__ fp, int64_t C, int64_t HW, int64_t tiles,
                 FgdParams p, bool vec_ok, acc_t* __restrict__ col, acc_t* __restrict__ part,
                 acc_t* __restrict__ tile_max) {
  constexpr int kTile = 32 * VEC;
  constexpr int kQ = 2 * kNumMask;  // (mask, exponential) pairs
  __shared__ acc_t colsum[kWarps][kNumCol][kTile];
  __shared__ acc_t wts[kQ][kTile];
  __shared__ Vals<acc_t, 2> red[32];
  const int64_t b = blockIdx.x / tiles, t = blockIdx.x % tiles;
  const int64_t h0 = t * kTile;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pos = h0 + lane * VEC;
  acc_t* pr = part + (b * tiles + t) * kNumPart * C;

  acc_t cs[kNumCol][VEC];
#pragma unroll
  for (int k = 0; k < kNumCol; ++k) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) cs[k][i] = acc_t(0);
  }
  for (int64_t c = warp; c < C; c += kWarps) {
    acc_t x[VEC], y[VEC];
    load_pack_or_zeros<VEC>(S + (b * C + c) * HW, pos, HW, vec_ok, x);
    load_pack_or_zeros<VEC>(T + (b * C + c) * HW, pos, HW, vec_ok, y);
    Vals<acc_t, 4> r{{acc_t(0), acc_t(0), acc_t(0), acc_t(0)}};
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const acc_t ax = abs(x[i]), ay = abs(y[i]);
      cs[kColAbsT][i] += ay;
      cs[kColAbsS][i] += ax;
      cs[kColT][i] += y[i];
      cs[kColS][i] += x[i];
      r.v[0] += ay;
      r.v[1] += ax;
      r.v[2] += y[i];
      r.v[3] += x[i];
    }
    r = warp_allreduce(r, SumOp{});
    if (lane == 0) {
      pr[kPartAbsT * C + c] = r.v[0];
      pr[kPartAbsS * C + c] = r.v[1];
      pr[kPartT * C + c] = r.v[2];
      pr[kPartS * C + c] = r.v[3];
    }
  }
#pragma unroll
  for (int k = 0; k < kNumCol; ++k) {
#pragma unroll
    for (int i = 0; i < VEC; ++i) colsum[warp][k][lane * VEC + i] = cs[k][i];
  }
  __syncthreads();

  // Channel means per position, and the tile's largest weight exponents.
  const acc_t inv_c = acc_t(1) / static_cast<acc_t>(C);
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  acc_t e[2] = {kNegInf, kNegInf};
  const int j = threadIdx.x;
  const bool mine = j < kTile && h0 + j < HW;
  if (mine) {
    acc_t m[kNumCol];
#pragma unroll
    for (int k = 0; k < kNumCol; ++k) {
      acc_t s = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) s += colsum[w][k][j];
      m[k] = s * inv_c;
      col[(b * kNumCol + k) * HW + h0 + j] = m[k];
    }
    fgd_exponents(m[kColAbsT], m[kColAbsS], static_cast<acc_t>(p.inv_ts), p.mode, e);
  }
  const auto tm = block_allreduce(Vals<acc_t, 2>{{e[0], e[1]}}, MaxOp{}, red);
  if (j < kTile) {
    const bool mix = p.mode == kSpatialStudentMix;
    const acc_t x0 = mine ? exp(e[0] - tm.v[0]) : acc_t(0);
    const acc_t x1 = mine && mix ? exp(e[1] - tm.v[1]) : acc_t(0);
    const acc_t* masks[kNumMask] = {fg, bg, fp};
#pragma unroll
    for (int k = 0; k < kNumMask; ++k) {
      const acc_t mk = mine && masks[k] != nullptr ? masks[k][b * HW + h0 + j] : acc_t(0);
      const bool weighted = fgd_mask_spatial(p, k);
      wts[2 * k][j] = weighted ? mk * x0 : mk;
      wts[2 * k + 1][j] = weighted ? mk * x1 : acc_t(0);
    }
  }
  if (threadIdx.x == 0) {
    tile_max[(b * tiles + t) * 2] = tm.v[0];
    tile_max[(b * tiles + t) * 2 + 1] = tm.v[1];
  }
  __syncthreads();

  // The second sweep walks the channels backwards: the rows the first sweep
  // read last are the likeliest still in L2 when a thousand resident blocks
  // share it (docs/traffic.md). Each channel's sum is the same either way.
  for (int64_t c = C - 1 - warp; c >= 0; c -= kWarps) {
    acc_t x[VEC], y[VEC];
    load_pack_or_zeros<VEC>(S + (b * C + c) * HW, pos, HW, vec_ok, x);
    load_pack_or_zeros<VEC>(T + (b * C + c) * HW, pos, HW, vec_ok, y);
    Vals<acc_t, kQ> q;
#pragma unroll
    for (int k = 0; k < kQ; ++k) q.v[k] = acc_t(0);
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const acc_t d = x[i] - y[i];
      const acc_t d2 = d * d;
#pragma unroll
      for (int k = 0; k < kQ; ++k) q.v[k] += wts[k][lane * VEC + i] * d2;
    }
    q = warp_allreduce(q, SumOp{});
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < kQ; ++k) pr[(kPartQ + k) * C + c] = q.v[k];
    }
  }
}

// SoftmaxPair of two rows of n values by block reductions; every thread gets it.
template <typename T>
__device__ SoftmaxPair block_softmax_pair(const T* t, const T* s, int64_t n, double inv_temp, Vals<double, 2>* red) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  Vals<double, 2> m{{-kInf, -kInf}};
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    m.v[0] = max(m.v[0], t[i] * inv_temp);
    m.v[1] = max(m.v[1], s[i] * inv_temp);
  }
  m = block_allreduce(m, MaxOp{}, red);
  Vals<double, 2> z{{0.0, 0.0}};
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    z.v[0] += exp(t[i] * inv_temp - m.v[0]);
    z.v[1] += exp(s[i] * inv_temp - m.v[1]);
  }
  z = block_allreduce(z, SumOp{}, red);
  return {m.v[0], z.v[0], m.v[1], z.v[1]};
}

// The finish kernel's reduction scratch: one slot per warp for each width of
// reduction it makes, in one piece of shared memory (a union: reading one
// Vals type through a pointer to another would break strict aliasing).
union FinishScratch {
  Vals<double, 2> two[32];
  Vals<double, 3> three[32];
  Vals<double, 6> six[32];
};

template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    finish_kernel(int64_t C, int64_t HW, int64_t tiles, FgdParams p, acc_t* __restrict__ part,
                  const acc_t* __restrict__ tile_max, const acc_t* __restrict__ col, acc_t* __restrict__ row,
                  acc_t* __restrict__ sample, acc_t* __restrict__ out) {
  __shared__ FinishScratch red;
  const int64_t b = blockIdx.x;
  const acc_t* cl = col + b * kNumCol * HW;
  acc_t* rw = row + b * kNumRow * C;
  acc_t* ss = sample + b * kNumSample;
  const double dC = static_cast<double>(C), dHW = static_cast<double>(HW);

  // Spatial softmaxes, from the values as stored (acc_t), as the backward
  // will read them.
  const auto sn = block_softmax_pair(cl + kColAbsT * HW, cl + kColAbsS * HW, HW, p.inv_ts, red.two);
  acc_t sp_stats[kNumSample];
  sp_stats[kMaxTs] = static_cast<acc_t>(sn.max_t);
  sp_stats[kSumTs] = static_cast<acc_t>(sn.sum_t);
  sp_stats[kMaxSs] = static_cast<acc_t>(sn.max_s);
  sp_stats[kSumSs] = static_cast<acc_t>(sn.sum_s);
  const auto wn = fgd_weight_norm<acc_t>(sp_stats, p, dHW);

  // Channel means, and the masked errors with the tiles rescaled to the
  // global maxima (unweighted errors have nothing to rescale), each already
  // summed over positions with its spatial weight (fgd_masked_error); parked
  // in tile 0's first kNumMask error slots.
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    double s[kNumRow] = {0, 0, 0, 0};
    double q[2 * kNumMask] = {0, 0, 0, 0, 0, 0};
    for (int64_t t = 0; t < tiles; ++t) {
      const acc_t* pr = part + (b * tiles + t) * kNumPart * C;
      const acc_t* tm = tile_max + (b * tiles + t) * 2;
      const double f[2] = {exp(static_cast<double>(tm[0]) - wn.m[0]), exp(static_cast<double>(tm[1]) - wn.m[1])};
#pragma unroll
      for (int k = 0; k < kNumRow; ++k) s[k] += pr[k * C + c];
#pragma unroll
      for (int k = 0; k < 2 * kNumMask; ++k) {
        q[k] += pr[(kPartQ + k) * C + c] * (fgd_mask_spatial(p, k / 2) ? f[k % 2] : 1.0);
      }
    }
    acc_t* p0 = part + b * tiles * kNumPart * C;
#pragma unroll
    for (int k = 0; k < kNumMask; ++k) p0[(kPartQ + k) * C + c] = static_cast<acc_t>(fgd_masked_error(q, k, wn, p));
#pragma unroll
    for (int k = 0; k < kNumRow; ++k) rw[k * C + c] = static_cast<acc_t>(s[k] / dHW);
  }
  __syncthreads();  // the channel means are read across threads below
  const auto cn = block_softmax_pair(rw + kRowAbsT * C, rw + kRowAbsS * C, C, p.inv_tc, red.two);

  Vals<double, 6> acc{{0, 0, 0, 0, 0, 0}};  // fg, bg, fp, attention (channel), K_c, channel
  const acc_t* p0 = part + b * tiles * kNumPart * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const auto [a_t, p_s, sg] =
        fgd_attention(rw[kRowAbsT * C + c], rw[kRowAbsS * C + c], p.inv_tc, cn.max_t, cn.sum_t, cn.max_s, cn.sum_s, dC);
    const double cw = p.channel_mask ? a_t : 1.0;  // fg and bg; fp always weighs by A_c(T)
    acc.v[0] += cw * p0[(kPartQ + kMaskFg) * C + c];
    acc.v[1] += cw * p0[(kPartQ + kMaskBg) * C + c];
    acc.v[2] += a_t * p0[(kPartQ + kMaskFp) * C + c];
    acc.v[3] += fabs(dC * p_s - a_t);
    acc.v[4] += p_s * dC * sg;
    acc.v[5] += fabs(static_cast<double>(rw[kRowT * C + c]) - rw[kRowS * C + c]);
  }
  acc = block_allreduce(acc, SumOp{}, red.six);
  Vals<double, 3> sp{{0, 0, 0}};  // attention (spatial), K_s, spatial
  for (int64_t j = threadIdx.x; j < HW; j += blockDim.x) {
    const auto [a_t, p_s, sg] = fgd_attention(cl[kColAbsT * HW + j], cl[kColAbsS * HW + j], p.inv_ts, sn.max_t,
                                              sn.sum_t, sn.max_s, sn.sum_s, dHW);
    sp.v[0] += fabs(dHW * p_s - a_t);
    sp.v[1] += p_s * dHW * sg;
    sp.v[2] += fabs(static_cast<double>(cl[kColT * HW + j]) - cl[kColS * HW + j]);
  }
  sp = block_allreduce(sp, SumOp{}, red.three);
  if (threadIdx.x == 0) {
    ss[kMaxTs] = sp_stats[kMaxTs];
    ss[kSumTs] = sp_stats[kSumTs];
    ss[kMaxSs] = sp_stats[kMaxSs];
    ss[kSumSs] = sp_stats[kSumSs];
    ss[kMaxTc] = static_cast<acc_t>(cn.max_t);
    ss[kSumTc] = static_cast<acc_t>(cn.sum_t);
    ss[kMaxSc] = static_cast<acc_t>(cn.max_s);
    ss[kSumSc] = static_cast<acc_t>(cn.sum_s);
    ss[kKc] = static_cast<acc_t>(acc.v[4]);
    ss[kKs] = static_cast<acc_t>(sp.v[1]);
    acc_t* o = out + b * kNumTerms;
    o[kFg] = static_cast<acc_t>(p.scale[kFg] * acc.v[0]);
    o[kBg] = static_cast<acc_t>(p.scale[kBg] * acc.v[1]);
    o[kAttention] = static_cast<acc_t>(p.scale[kAttention] * (acc.v[3] + sp.v[0]));
    o[kChannel] = static_cast<acc_t>(p.scale[kChannel] * acc.v[5]);
    o[kSpatial] = static_cast<acc_t>(p.scale[kSpatial] * sp.v[2]);
    o[kFp] = static_cast<acc_t>(p.scale[kFp] * acc.v[2]);
  }
}

// Per-channel (P, P', alpha, gamma) into rc [B, 4, C] and per-position
// (Q, Q', beta, delta) into cc [B, 4, HW]: one thread each.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    coef_kernel(int64_t B, int64_t C, int64_t HW, FgdParams p, const acc_t* __restrict__ g,
                const acc_t* __restrict__ fg, const acc_t* __restrict__ bg, const acc_t* __restrict__ fp,
                const acc_t* __restrict__ col, const acc_t* __restrict__ row, const acc_t* __restrict__ sample,
                acc_t* __restrict__ rc, acc_t* __restrict__ cc) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < B * C) {
    const int64_t b = i / C, c = i % C;
    const auto k = fgd_channel_coefs(row + b * kNumRow * C, sample + b * kNumSample, g, C, HW, c, p);
    acc_t* r = rc + b * 4 * C;
    r[c] = static_cast<acc_t>(k.scale);
    r[C + c] = static_cast<acc_t>(k.scale_fp);
    r[2 * C + c] = static_cast<acc_t>(k.sign_coef);
    r[3 * C + c] = static_cast<acc_t>(k.shift);
  } else if (i < B * C + B * HW) {
    const int64_t e = i - B * C, b = e / HW, j = e % HW;
    const acc_t fpe = fp != nullptr ? fp[e] : acc_t(0);
    const auto k =
        fgd_position_coefs(col + b * kNumCol * HW, sample + b * kNumSample, g, fg[e], bg[e], fpe, C, HW, j, p);
    acc_t* q = cc + b * 4 * HW;
    q[j] = static_cast<acc_t>(k.scale);
    q[HW + j] = static_cast<acc_t>(k.scale_fp);
    q[2 * HW + j] = static_cast<acc_t>(k.sign_coef);
    q[3 * HW + j] = static_cast<acc_t>(k.shift);
  }
}

// dS = (P_c Q_hw + P'_c Q'_hw) (S - T) + sign(S) (alpha_c + beta_hw) + gamma_c + delta_hw.
// grid.x: channel rows (b, c); grid.y: chunks of kThreads * VEC positions.
// The four position coefficients are read in packs too (q_vec): read one
// element at a time, a warp's request spans VEC times the bytes it uses
// (25% sector efficiency in fp32, 12.5% in bf16), and every channel row
// reads them again.
template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    grad_kernel(const scalar_t* __restrict__ S, const scalar_t* __restrict__ T, int64_t C, int64_t HW, bool vec_ok,
                bool q_vec, const acc_t* __restrict__ rc, const acc_t* __restrict__ cc, scalar_t* __restrict__ dS) {
  const int64_t bc = blockIdx.x, b = bc / C, c = bc % C;
  const int64_t pos = (static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x) * VEC;
  if (pos >= HW) return;
  const acc_t* r = rc + b * 4 * C;
  const acc_t pc = r[c], pf = r[C + c], al = r[2 * C + c], ga = r[3 * C + c];
  const acc_t* q = cc + b * 4 * HW;
  acc_t x[VEC], y[VEC], qs[4][VEC];
  load_pack_or_zeros<VEC>(S + bc * HW, pos, HW, vec_ok, x);
  load_pack_or_zeros<VEC>(T + bc * HW, pos, HW, vec_ok, y);
#pragma unroll
  for (int k = 0; k < 4; ++k) load_pack_or_zeros<VEC>(q + k * HW, pos, HW, q_vec, qs[k]);
  Pack<scalar_t, VEC> out;
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    // past HW: computed from zeros, never stored
    out.v[i] = static_cast<scalar_t>((pc * qs[0][i] + pf * qs[1][i]) * (x[i] - y[i]) +
                                     fgd_sign(x[i]) * (al + qs[2][i]) + ga + qs[3][i]);
  }
  scalar_t* d = dS + bc * HW;
  if (vec_ok && pos + VEC <= HW) {
    store_pack<VEC>(d + pos, out);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      if (pos + i < HW) d[pos + i] = out.v[i];
    }
  }
}

}  // namespace

void fgd_forward(const FgdInputs& in, const FgdParams& p, const at::Tensor& col, const at::Tensor& row,
                 const at::Tensor& sample, const at::Tensor& per_sample) {
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.student.scalar_type(), "fgd_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int VEC = pack_width<scalar_t>();
    constexpr int64_t kTile = 32 * VEC;
    const int64_t tiles = (HW + kTile - 1) / kTile;
    auto part = at::empty({B, tiles, kNumPart, C}, col.options());
    auto tile_max = at::empty({B, tiles, 2}, col.options());
    const scalar_t* S = in.student.data_ptr<scalar_t>();
    const scalar_t* T = in.teacher.data_ptr<scalar_t>();
    const bool vec_ok = packs_fit<scalar_t>(HW, {S, T});
    launch<stats_kernel<scalar_t, acc_t, VEC>>(checked_grid(B * tiles), kThreads, 0, S, T, in.fg.data_ptr<acc_t>(),
                                               in.bg.data_ptr<acc_t>(), p.has_fp ? in.fp.data_ptr<acc_t>() : nullptr, C,
                                               HW, tiles, p, vec_ok, col.data_ptr<acc_t>(), part.data_ptr<acc_t>(),
                                               tile_max.data_ptr<acc_t>());
    launch<finish_kernel<acc_t>>(checked_grid(B), kThreads, 0, C, HW, tiles, p, part.data_ptr<acc_t>(),
                                 tile_max.data_ptr<acc_t>(), col.data_ptr<acc_t>(), row.data_ptr<acc_t>(),
                                 sample.data_ptr<acc_t>(), per_sample.data_ptr<acc_t>());
  });
}

void fgd_backward(const FgdInputs& in, const FgdParams& p, const at::Tensor& g, const at::Tensor& col,
                  const at::Tensor& row, const at::Tensor& sample, const at::Tensor& grad_student) {
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  auto rc = at::empty({B, 4, C}, col.options());
  auto cc = at::empty({B, 4, HW}, col.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.student.scalar_type(), "fgd_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int VEC = pack_width<scalar_t>();
    const int64_t n = B * (C + HW);
    launch<coef_kernel<acc_t>>(checked_grid((n + kThreads - 1) / kThreads), kThreads, 0, B, C, HW, p,
                               g.data_ptr<acc_t>(), in.fg.data_ptr<acc_t>(), in.bg.data_ptr<acc_t>(),
                               p.has_fp ? in.fp.data_ptr<acc_t>() : nullptr, col.data_ptr<acc_t>(),
                               row.data_ptr<acc_t>(), sample.data_ptr<acc_t>(), rc.data_ptr<acc_t>(),
                               cc.data_ptr<acc_t>());
    const scalar_t* S = in.student.data_ptr<scalar_t>();
    const scalar_t* T = in.teacher.data_ptr<scalar_t>();
    scalar_t* dS = grad_student.data_ptr<scalar_t>();
    const bool vec_ok = packs_fit<scalar_t>(HW, {S, T, dS});
    // cc's rows of HW in packs of VEC acc_t (VEC divides HW when vec_ok).
    const bool q_vec = vec_ok && aligned_to(cc.data_ptr<acc_t>(), sizeof(acc_t) * VEC);
    const int64_t chunks = (HW + kThreads * VEC - 1) / (kThreads * VEC);
    TORCH_CHECK(chunks <= 65535, "fgd_loss: maps with more than ", 65535ll * kThreads * VEC,
                " positions are not supported on CUDA");
    const dim3 grid(static_cast<unsigned>(checked_grid(B * C)), static_cast<unsigned>(chunks));
    launch<grad_kernel<scalar_t, acc_t, VEC>>(grid, kThreads, 0, S, T, C, HW, vec_ok, q_vec, rc.data_ptr<acc_t>(),
                                              cc.data_ptr<acc_t>(), dS);
  });
}

namespace {
constexpr FgdLossKernels kKernels{&fgd_forward, &fgd_backward};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("fgd_loss", cuda_entry<&hcam_ops::fgd_loss, &kKernels>());
  m.impl("fgd_loss_backward", cuda_entry<&hcam_ops::fgd_loss_backward, &kKernels>());
}

}  // namespace hcam_ops::cuda
