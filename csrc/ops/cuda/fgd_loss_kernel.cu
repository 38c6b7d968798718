// CUDA kernels of the FGD loss (fgd_math.h has the algorithm):
//  - stats: a block per (sample, tile of 32 * VEC positions), every channel;
//    a warp per channel row at a time, each lane VEC positions by one 16-byte
//    load. Per-channel sums by warp shuffles, per-position sums through shared
//    memory; a second sweep over the tile (just read, so from L2) forms the
//    masked squared errors with the tile's spatial weights.
//  - finish: a block per sample; reduces the tiles in order (deterministic),
//    both softmaxes and the five terms, in double.
//  - backward: per-channel and per-position coefficients, then one
//    elementwise pass reading S and T and writing d S.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>

#include "../fgd_loss.h"
#include "block_reduce.cuh"
#include "cam_passes.h"
#include "vec_load.cuh"

namespace hcam_ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const scalar_t* __restrict__ S, const scalar_t* __restrict__ T, const acc_t* __restrict__ fg,
                 const acc_t* __restrict__ bg, int64_t C, int64_t HW, int64_t tiles, acc_t inv_ts, bool combined,
                 bool vec_ok, acc_t* __restrict__ col, acc_t* __restrict__ part, acc_t* __restrict__ tile_max) {
  constexpr int kTile = 32 * VEC;
  __shared__ acc_t colsum[kWarps][kNumCol][kTile];
  __shared__ acc_t wts[2][kTile];
  __shared__ Vals<acc_t, 1> red[32];
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

  // Channel means per position, and the tile's largest weight exponent.
  const acc_t inv_c = acc_t(1) / static_cast<acc_t>(C);
  acc_t e = -std::numeric_limits<acc_t>::infinity();
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
    e = fgd_exponent(m[kColAbsT], m[kColAbsS], inv_ts, combined);
  }
  const acc_t tm = block_allreduce(Vals<acc_t, 1>{{e}}, MaxOp{}, red).v[0];
  if (j < kTile) {
    const acc_t w = mine ? exp(e - tm) : acc_t(0);
    wts[0][j] = mine ? fg[b * HW + h0 + j] * w : acc_t(0);
    wts[1][j] = mine ? bg[b * HW + h0 + j] * w : acc_t(0);
  }
  if (threadIdx.x == 0) tile_max[b * tiles + t] = tm;
  __syncthreads();

  for (int64_t c = warp; c < C; c += kWarps) {
    acc_t x[VEC], y[VEC];
    load_pack_or_zeros<VEC>(S + (b * C + c) * HW, pos, HW, vec_ok, x);
    load_pack_or_zeros<VEC>(T + (b * C + c) * HW, pos, HW, vec_ok, y);
    Vals<acc_t, 2> q{{acc_t(0), acc_t(0)}};
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const acc_t d = x[i] - y[i];
      q.v[0] += wts[0][lane * VEC + i] * d * d;
      q.v[1] += wts[1][lane * VEC + i] * d * d;
    }
    q = warp_allreduce(q, SumOp{});
    if (lane == 0) {
      pr[kPartFg * C + c] = q.v[0];
      pr[kPartBg * C + c] = q.v[1];
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

template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    finish_kernel(int64_t C, int64_t HW, int64_t tiles, FgdParams p, acc_t* __restrict__ part,
                  const acc_t* __restrict__ tile_max, const acc_t* __restrict__ col, acc_t* __restrict__ row,
                  acc_t* __restrict__ sample, acc_t* __restrict__ out) {
  __shared__ Vals<double, 5> red[32];
  const int64_t b = blockIdx.x;
  const acc_t* cl = col + b * kNumCol * HW;
  acc_t* rw = row + b * kNumRow * C;
  acc_t* ss = sample + b * kNumSample;
  const double dC = static_cast<double>(C), dHW = static_cast<double>(HW);
  auto* red2 = reinterpret_cast<Vals<double, 2>*>(red);
  auto* red3 = reinterpret_cast<Vals<double, 3>*>(red);

  // Spatial softmaxes, from the values as stored (acc_t), as the backward
  // will read them.
  const auto sn = block_softmax_pair(cl + kColAbsT * HW, cl + kColAbsS * HW, HW, p.inv_ts, red2);
  acc_t sp_stats[kNumSample];
  sp_stats[kMaxTs] = static_cast<acc_t>(sn.max_t);
  sp_stats[kSumTs] = static_cast<acc_t>(sn.sum_t);
  sp_stats[kMaxSs] = static_cast<acc_t>(sn.max_s);
  sp_stats[kSumSs] = static_cast<acc_t>(sn.sum_s);
  acc_t wm, wd;
  fgd_weight_norm<acc_t>(sp_stats, p.combined, wm, wd);

  // Channel means, and the masked errors with the tiles rescaled to the
  // global maximum; the errors are parked in tile 0's slots.
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    double s[kNumRow] = {0, 0, 0, 0};
    double qf = 0, qb = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const acc_t* pr = part + (b * tiles + t) * kNumPart * C;
      const double f = exp(static_cast<double>(tile_max[b * tiles + t]) - wm);
#pragma unroll
      for (int k = 0; k < kNumRow; ++k) s[k] += pr[k * C + c];
      qf += pr[kPartFg * C + c] * f;
      qb += pr[kPartBg * C + c] * f;
    }
    acc_t* p0 = part + b * tiles * kNumPart * C;
    p0[kPartFg * C + c] = static_cast<acc_t>(qf);
    p0[kPartBg * C + c] = static_cast<acc_t>(qb);
#pragma unroll
    for (int k = 0; k < kNumRow; ++k) rw[k * C + c] = static_cast<acc_t>(s[k] / dHW);
  }
  __syncthreads();  // the channel means are read across threads below
  const auto cn = block_softmax_pair(rw + kRowAbsT * C, rw + kRowAbsS * C, C, p.inv_tc, red2);

  Vals<double, 5> acc{{0, 0, 0, 0, 0}};  // fg, bg, attention (channel), K_c, channel
  const acc_t* p0 = part + b * tiles * kNumPart * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const auto [a_t, p_s, sg] =
        fgd_attention(rw[kRowAbsT * C + c], rw[kRowAbsS * C + c], p.inv_tc, cn.max_t, cn.sum_t, cn.max_s, cn.sum_s, dC);
    acc.v[0] += a_t * p0[kPartFg * C + c];
    acc.v[1] += a_t * p0[kPartBg * C + c];
    acc.v[2] += fabs(dC * p_s - a_t);
    acc.v[3] += p_s * dC * sg;
    acc.v[4] += fabs(static_cast<double>(rw[kRowT * C + c]) - rw[kRowS * C + c]);
  }
  acc = block_allreduce(acc, SumOp{}, red);
  Vals<double, 3> sp{{0, 0, 0}};  // attention (spatial), K_s, spatial
  for (int64_t j = threadIdx.x; j < HW; j += blockDim.x) {
    const auto [a_t, p_s, sg] = fgd_attention(cl[kColAbsT * HW + j], cl[kColAbsS * HW + j], p.inv_ts, sn.max_t,
                                              sn.sum_t, sn.max_s, sn.sum_s, dHW);
    sp.v[0] += fabs(dHW * p_s - a_t);
    sp.v[1] += p_s * dHW * sg;
    sp.v[2] += fabs(static_cast<double>(cl[kColT * HW + j]) - cl[kColS * HW + j]);
  }
  sp = block_allreduce(sp, SumOp{}, red3);
  if (threadIdx.x == 0) {
    ss[kMaxTs] = sp_stats[kMaxTs];
    ss[kSumTs] = sp_stats[kSumTs];
    ss[kMaxSs] = sp_stats[kMaxSs];
    ss[kSumSs] = sp_stats[kSumSs];
    ss[kMaxTc] = static_cast<acc_t>(cn.max_t);
    ss[kSumTc] = static_cast<acc_t>(cn.sum_t);
    ss[kMaxSc] = static_cast<acc_t>(cn.max_s);
    ss[kSumSc] = static_cast<acc_t>(cn.sum_s);
    ss[kKc] = static_cast<acc_t>(acc.v[3]);
    ss[kKs] = static_cast<acc_t>(sp.v[1]);
    acc_t* o = out + b * kNumTerms;
    o[kFg] = static_cast<acc_t>(p.scale[kFg] * acc.v[0] * dHW / wd);
    o[kBg] = static_cast<acc_t>(p.scale[kBg] * acc.v[1] * dHW / wd);
    o[kAttention] = static_cast<acc_t>(p.scale[kAttention] * (acc.v[2] + sp.v[0]));
    o[kChannel] = static_cast<acc_t>(p.scale[kChannel] * acc.v[4]);
    o[kSpatial] = static_cast<acc_t>(p.scale[kSpatial] * sp.v[2]);
  }
}

// Per-channel (P, alpha, gamma) into rc [B, 3, C] and per-position
// (Q, beta, delta) into cc [B, 3, HW]: one thread each.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    coef_kernel(int64_t B, int64_t C, int64_t HW, FgdParams p, const acc_t* __restrict__ g,
                const acc_t* __restrict__ fg, const acc_t* __restrict__ bg, const acc_t* __restrict__ col,
                const acc_t* __restrict__ row, const acc_t* __restrict__ sample, acc_t* __restrict__ rc,
                acc_t* __restrict__ cc) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < B * C) {
    const int64_t b = i / C, c = i % C;
    const auto k = fgd_channel_coefs(row + b * kNumRow * C, sample + b * kNumSample, g, C, HW, c, p);
    acc_t* r = rc + b * 3 * C;
    r[c] = static_cast<acc_t>(k.scale);
    r[C + c] = static_cast<acc_t>(k.sign_coef);
    r[2 * C + c] = static_cast<acc_t>(k.shift);
  } else if (i < B * C + B * HW) {
    const int64_t e = i - B * C, b = e / HW, j = e % HW;
    const auto k = fgd_position_coefs(col + b * kNumCol * HW, sample + b * kNumSample, g, fg[e], bg[e], C, HW, j, p);
    acc_t* q = cc + b * 3 * HW;
    q[j] = static_cast<acc_t>(k.scale);
    q[HW + j] = static_cast<acc_t>(k.sign_coef);
    q[2 * HW + j] = static_cast<acc_t>(k.shift);
  }
}

// dS = P_c Q_hw (S - T) + sign(S) (alpha_c + beta_hw) + gamma_c + delta_hw.
// grid.x: channel rows (b, c); grid.y: chunks of kThreads * VEC positions.
template <typename scalar_t, typename acc_t, int VEC>
__global__ void __launch_bounds__(kThreads)
    grad_kernel(const scalar_t* __restrict__ S, const scalar_t* __restrict__ T, int64_t C, int64_t HW, bool vec_ok,
                const acc_t* __restrict__ rc, const acc_t* __restrict__ cc, scalar_t* __restrict__ dS) {
  const int64_t bc = blockIdx.x, b = bc / C, c = bc % C;
  const int64_t pos = (static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x) * VEC;
  if (pos >= HW) return;
  const acc_t pc = rc[b * 3 * C + c], al = rc[b * 3 * C + C + c], ga = rc[b * 3 * C + 2 * C + c];
  const acc_t* q = cc + b * 3 * HW;
  acc_t x[VEC], y[VEC];
  load_pack_or_zeros<VEC>(S + bc * HW, pos, HW, vec_ok, x);
  load_pack_or_zeros<VEC>(T + bc * HW, pos, HW, vec_ok, y);
  Pack<scalar_t, VEC> out;
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    const int64_t j = pos + i < HW ? pos + i : pos;  // past HW: computed, never stored
    out.v[i] =
        static_cast<scalar_t>(pc * q[j] * (x[i] - y[i]) + fgd_sign(x[i]) * (al + q[HW + j]) + ga + q[2 * HW + j]);
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
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.student.scalar_type(), "fgd_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int VEC = pack_width<scalar_t>();
    constexpr int64_t kTile = 32 * VEC;
    const int64_t tiles = (HW + kTile - 1) / kTile;
    auto part = at::empty({B, tiles, kNumPart, C}, col.options());
    auto tile_max = at::empty({B, tiles}, col.options());
    const scalar_t* S = in.student.data_ptr<scalar_t>();
    const scalar_t* T = in.teacher.data_ptr<scalar_t>();
    const bool vec_ok = packs_fit<scalar_t>(HW, {S, T});
    stats_kernel<scalar_t, acc_t, VEC><<<checked_grid(B * tiles), kThreads, 0, stream>>>(
        S, T, in.fg.data_ptr<acc_t>(), in.bg.data_ptr<acc_t>(), C, HW, tiles, static_cast<acc_t>(p.inv_ts), p.combined,
        vec_ok, col.data_ptr<acc_t>(), part.data_ptr<acc_t>(), tile_max.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finish_kernel<acc_t><<<checked_grid(B), kThreads, 0, stream>>>(
        C, HW, tiles, p, part.data_ptr<acc_t>(), tile_max.data_ptr<acc_t>(), col.data_ptr<acc_t>(),
        row.data_ptr<acc_t>(), sample.data_ptr<acc_t>(), per_sample.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void fgd_backward(const FgdInputs& in, const FgdParams& p, const at::Tensor& g, const at::Tensor& col,
                  const at::Tensor& row, const at::Tensor& sample, const at::Tensor& grad_student) {
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  auto rc = at::empty({B, 3, C}, col.options());
  auto cc = at::empty({B, 3, HW}, col.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.student.scalar_type(), "fgd_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int VEC = pack_width<scalar_t>();
    const int64_t n = B * (C + HW);
    coef_kernel<acc_t><<<checked_grid((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        B, C, HW, p, g.data_ptr<acc_t>(), in.fg.data_ptr<acc_t>(), in.bg.data_ptr<acc_t>(), col.data_ptr<acc_t>(),
        row.data_ptr<acc_t>(), sample.data_ptr<acc_t>(), rc.data_ptr<acc_t>(), cc.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const scalar_t* S = in.student.data_ptr<scalar_t>();
    const scalar_t* T = in.teacher.data_ptr<scalar_t>();
    scalar_t* dS = grad_student.data_ptr<scalar_t>();
    const bool vec_ok = packs_fit<scalar_t>(HW, {S, T, dS});
    const int64_t chunks = (HW + kThreads * VEC - 1) / (kThreads * VEC);
    TORCH_CHECK(chunks <= 65535, "fgd_loss: maps with more than ", 65535ll * kThreads * VEC,
                " positions are not supported on CUDA");
    const dim3 grid(static_cast<unsigned>(checked_grid(B * C)), static_cast<unsigned>(chunks));
    grad_kernel<scalar_t, acc_t, VEC>
        <<<grid, kThreads, 0, stream>>>(S, T, C, HW, vec_ok, rc.data_ptr<acc_t>(), cc.data_ptr<acc_t>(), dS);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace hcam_ops::cuda
