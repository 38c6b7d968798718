// CPU kernels of the FGD loss: the one-pass statistics over tiles of
// positions (parallel over (sample, tile)), the per-sample finisher, and the
// elementwise backward (parallel over channel rows). The algorithm is the
// CUDA kernels' own (fgd_math.h), with a narrower tile.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "convert.h"
#include "../fgd_loss.h"

namespace hcam_ops::cpu {

namespace {

// Positions per tile: four accumulators of this width stay in L1 while the
// tile's channel rows stream past.
constexpr int64_t kTile = 64;

template <typename scalar_t>
void stats_pass(const FgdInputs& in, const FgdParams& p, const at::Tensor& col, const at::Tensor& part,
                const at::Tensor& tile_max) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  const int64_t tiles = part.size(1);
  const scalar_t* S = in.student.data_ptr<scalar_t>();
  const scalar_t* T = in.teacher.data_ptr<scalar_t>();
  const acc_t* fg = in.fg.data_ptr<acc_t>();
  const acc_t* bg = in.bg.data_ptr<acc_t>();
  acc_t* colp = col.data_ptr<acc_t>();
  acc_t* partp = part.data_ptr<acc_t>();
  acc_t* tmax = tile_max.data_ptr<acc_t>();
  const acc_t inv_ts = static_cast<acc_t>(p.inv_ts), inv_c = acc_t(1) / static_cast<acc_t>(C);
  at::parallel_for(0, B * tiles, 1, [&](int64_t begin, int64_t end) {
    acc_t at_[kTile], as_[kTile], mt_[kTile], ms_[kTile], wf[kTile], wb[kTile];
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / tiles, t = bt % tiles, h0 = t * kTile;
      const int64_t n = std::min(kTile, HW - h0);
      std::fill_n(at_, n, acc_t(0));
      std::fill_n(as_, n, acc_t(0));
      std::fill_n(mt_, n, acc_t(0));
      std::fill_n(ms_, n, acc_t(0));
      acc_t* pr = partp + (b * tiles + t) * kNumPart * C;
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* s = S + (b * C + c) * HW + h0;
        const scalar_t* tt = T + (b * C + c) * HW + h0;
        acc_t sat = 0, sas = 0, st = 0, ss = 0;
#pragma omp simd reduction(+ : sat, sas, st, ss)
        for (int64_t j = 0; j < n; ++j) {
          const acc_t x = static_cast<acc_t>(s[j]), y = static_cast<acc_t>(tt[j]);
          const acc_t ax = std::abs(x), ay = std::abs(y);
          at_[j] += ay;
          as_[j] += ax;
          mt_[j] += y;
          ms_[j] += x;
          sat += ay;
          sas += ax;
          st += y;
          ss += x;
        }
        pr[kPartAbsT * C + c] = sat;
        pr[kPartAbsS * C + c] = sas;
        pr[kPartT * C + c] = st;
        pr[kPartS * C + c] = ss;
      }
      acc_t m = -std::numeric_limits<acc_t>::infinity();
      acc_t* cl = colp + b * kNumCol * HW + h0;
      for (int64_t j = 0; j < n; ++j) {
        at_[j] *= inv_c;
        as_[j] *= inv_c;
        cl[kColAbsT * HW + j] = at_[j];
        cl[kColAbsS * HW + j] = as_[j];
        cl[kColT * HW + j] = mt_[j] * inv_c;
        cl[kColS * HW + j] = ms_[j] * inv_c;
        m = std::max(m, fgd_exponent(at_[j], as_[j], inv_ts, p.combined));
      }
      tmax[b * tiles + t] = m;
      for (int64_t j = 0; j < n; ++j) {
        const acc_t e = std::exp(fgd_exponent(at_[j], as_[j], inv_ts, p.combined) - m);
        wf[j] = fg[b * HW + h0 + j] * e;
        wb[j] = bg[b * HW + h0 + j] * e;
      }
      // The tile's rows were just read: this second sweep hits the cache.
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* s = S + (b * C + c) * HW + h0;
        const scalar_t* tt = T + (b * C + c) * HW + h0;
        acc_t qf = 0, qb = 0;
#pragma omp simd reduction(+ : qf, qb)
        for (int64_t j = 0; j < n; ++j) {
          const acc_t d = static_cast<acc_t>(s[j]) - static_cast<acc_t>(tt[j]);
          qf += wf[j] * d * d;
          qb += wb[j] * d * d;
        }
        pr[kPartFg * C + c] = qf;
        pr[kPartBg * C + c] = qb;
      }
    }
  });
}

template <typename T>
SoftmaxPair softmax_pair(const T* t, const T* s, int64_t n, double inv_temp) {
  SoftmaxPair r{-INFINITY, 0.0, -INFINITY, 0.0};
  for (int64_t i = 0; i < n; ++i) {
    r.max_t = std::max(r.max_t, t[i] * inv_temp);
    r.max_s = std::max(r.max_s, s[i] * inv_temp);
  }
  for (int64_t i = 0; i < n; ++i) {
    r.sum_t += std::exp(t[i] * inv_temp - r.max_t);
    r.sum_s += std::exp(s[i] * inv_temp - r.max_s);
  }
  return r;
}

// Per sample: the tiles reduced in order, both softmaxes, the five terms, and
// the statistics the backward needs. Sums in double.
template <typename acc_t>
void finish(const FgdParams& p, int64_t C, int64_t HW, const at::Tensor& part, const at::Tensor& tile_max,
            const at::Tensor& col, const at::Tensor& row, const at::Tensor& sample, const at::Tensor& per_sample) {
  const int64_t B = col.size(0), tiles = part.size(1);
  const acc_t* partp = part.data_ptr<acc_t>();
  const acc_t* tmax = tile_max.data_ptr<acc_t>();
  const acc_t* colp = col.data_ptr<acc_t>();
  acc_t* rowp = row.data_ptr<acc_t>();
  acc_t* ssp = sample.data_ptr<acc_t>();
  acc_t* out = per_sample.data_ptr<acc_t>();
  const double inv_ts = p.inv_ts, inv_tc = p.inv_tc;
  const double dC = static_cast<double>(C), dHW = static_cast<double>(HW);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> qf(C), qb(C), sums(kNumRow * C);
    for (int64_t b = begin; b < end; ++b) {
      const acc_t* cl = colp + b * kNumCol * HW;
      acc_t* rw = rowp + b * kNumRow * C;
      acc_t* ss = ssp + b * kNumSample;
      // Spatial softmaxes of the channel means of |T| and |S|.
      const auto sp_norm = softmax_pair(cl + kColAbsT * HW, cl + kColAbsS * HW, HW, inv_ts);
      const double mt = sp_norm.max_t, zt = sp_norm.sum_t, ms = sp_norm.max_s, zs = sp_norm.sum_s;
      ss[kMaxTs] = mt;
      ss[kSumTs] = zt;
      ss[kMaxSs] = ms;
      ss[kSumSs] = zs;
      acc_t wm, wd;
      fgd_weight_norm<acc_t>(ss, p.combined, wm, wd);
      // Channel means and the masked errors, tiles rescaled to the global maximum.
      std::fill(qf.begin(), qf.end(), 0.0);
      std::fill(qb.begin(), qb.end(), 0.0);
      std::fill(sums.begin(), sums.end(), 0.0);
      for (int64_t t = 0; t < tiles; ++t) {
        const acc_t* pr = partp + (b * tiles + t) * kNumPart * C;
        const double f = std::exp(static_cast<double>(tmax[b * tiles + t]) - wm);
        for (int64_t k = 0; k < kNumRow; ++k) {
          for (int64_t c = 0; c < C; ++c) sums[k * C + c] += pr[k * C + c];
        }
        for (int64_t c = 0; c < C; ++c) {
          qf[c] += pr[kPartFg * C + c] * f;
          qb[c] += pr[kPartBg * C + c] * f;
        }
      }
      for (int64_t k = 0; k < kNumRow * C; ++k) rw[k] = static_cast<acc_t>(sums[k] / dHW);
      // Channel softmaxes.
      const auto ch_norm = softmax_pair(rw + kRowAbsT * C, rw + kRowAbsS * C, C, inv_tc);
      const double mtc = ch_norm.max_t, ztc = ch_norm.sum_t, msc = ch_norm.max_s, zsc = ch_norm.sum_s;
      double lf = 0, lb = 0, att = 0, kc = 0, ch = 0;
      for (int64_t c = 0; c < C; ++c) {
        const auto [a_t, p_s, sg] =
            fgd_attention(rw[kRowAbsT * C + c], rw[kRowAbsS * C + c], inv_tc, mtc, ztc, msc, zsc, dC);
        lf += a_t * qf[c];
        lb += a_t * qb[c];
        att += std::abs(dC * p_s - a_t);
        kc += p_s * dC * sg;
        ch += std::abs(static_cast<double>(rw[kRowT * C + c]) - rw[kRowS * C + c]);
      }
      double ks = 0, sp = 0;
      for (int64_t j = 0; j < HW; ++j) {
        const auto [a_t, p_s, sg] =
            fgd_attention(cl[kColAbsT * HW + j], cl[kColAbsS * HW + j], inv_ts, mt, zt, ms, zs, dHW);
        att += std::abs(dHW * p_s - a_t);
        ks += p_s * dHW * sg;
        sp += std::abs(static_cast<double>(cl[kColT * HW + j]) - cl[kColS * HW + j]);
      }
      ss[kMaxTc] = mtc;
      ss[kSumTc] = ztc;
      ss[kMaxSc] = msc;
      ss[kSumSc] = zsc;
      ss[kKc] = kc;
      ss[kKs] = ks;
      acc_t* o = out + b * kNumTerms;
      o[kFg] = p.scale[kFg] * lf * dHW / wd;
      o[kBg] = p.scale[kBg] * lb * dHW / wd;
      o[kAttention] = p.scale[kAttention] * att;
      o[kChannel] = p.scale[kChannel] * ch;
      o[kSpatial] = p.scale[kSpatial] * sp;
    }
  });
}

template <typename scalar_t>
void backward_impl(const FgdInputs& in, const FgdParams& p, const at::Tensor& g, const at::Tensor& col,
                   const at::Tensor& row, const at::Tensor& sample, const at::Tensor& grad_student) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  const acc_t* gp = g.data_ptr<acc_t>();
  const acc_t* colp = col.data_ptr<acc_t>();
  const acc_t* rowp = row.data_ptr<acc_t>();
  const acc_t* ssp = sample.data_ptr<acc_t>();
  const acc_t* fg = in.fg.data_ptr<acc_t>();
  const acc_t* bg = in.bg.data_ptr<acc_t>();
  // Coefficients (P, alpha, gamma) per channel and (Q, beta, delta) per position.
  auto rc = at::empty({B, 3, C}, col.options());
  auto cc = at::empty({B, 3, HW}, col.options());
  acc_t* rcp = rc.data_ptr<acc_t>();
  acc_t* ccp = cc.data_ptr<acc_t>();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const acc_t* ss = ssp + b * kNumSample;
      acc_t* r = rcp + b * 3 * C;
      acc_t* q = ccp + b * 3 * HW;
      for (int64_t c = 0; c < C; ++c) {
        const auto k = fgd_channel_coefs(rowp + b * kNumRow * C, ss, gp, C, HW, c, p);
        r[c] = k.scale;
        r[C + c] = k.sign_coef;
        r[2 * C + c] = k.shift;
      }
      for (int64_t j = 0; j < HW; ++j) {
        const auto k = fgd_position_coefs(colp + b * kNumCol * HW, ss, gp, fg[b * HW + j], bg[b * HW + j], C, HW, j, p);
        q[j] = k.scale;
        q[HW + j] = k.sign_coef;
        q[2 * HW + j] = k.shift;
      }
    }
  });
  const scalar_t* S = in.student.data_ptr<scalar_t>();
  const scalar_t* T = in.teacher.data_ptr<scalar_t>();
  scalar_t* dS = grad_student.data_ptr<scalar_t>();
  at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      const acc_t pc = rcp[b * 3 * C + c], al = rcp[b * 3 * C + C + c], ga_ = rcp[b * 3 * C + 2 * C + c];
      const acc_t* q = ccp + b * 3 * HW;
      const scalar_t* s = S + bc * HW;
      const scalar_t* t = T + bc * HW;
      scalar_t* d = dS + bc * HW;
#pragma omp simd
      for (int64_t j = 0; j < HW; ++j) {
        const acc_t x = static_cast<acc_t>(s[j]);
        d[j] = to_scalar<scalar_t>(pc * q[j] * (x - static_cast<acc_t>(t[j])) + fgd_sign(x) * (al + q[HW + j]) + ga_ +
                                   q[2 * HW + j]);
      }
    }
  });
}

}  // namespace

template <>
void fgd_forward<Isa::CPU_CAPABILITY>(const FgdInputs& in, const FgdParams& p, const at::Tensor& col,
                                      const at::Tensor& row, const at::Tensor& sample, const at::Tensor& per_sample) {
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  const int64_t tiles = (HW + kTile - 1) / kTile;
  auto part = at::empty({B, tiles, kNumPart, C}, col.options());
  auto tile_max = at::empty({B, tiles}, col.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.student.scalar_type(), "fgd_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    stats_pass<scalar_t>(in, p, col, part, tile_max);
    finish<acc_t>(p, C, HW, part, tile_max, col, row, sample, per_sample);
  });
}

template <>
void fgd_backward<Isa::CPU_CAPABILITY>(const FgdInputs& in, const FgdParams& p, const at::Tensor& g,
                                       const at::Tensor& col, const at::Tensor& row, const at::Tensor& sample,
                                       const at::Tensor& grad_student) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.student.scalar_type(), "fgd_backward",
                                  [&] { backward_impl<scalar_t>(in, p, g, col, row, sample, grad_student); });
}

}  // namespace hcam_ops::cpu
