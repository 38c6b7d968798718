// CPU kernels of the FGD loss: the one-pass statistics over tiles of
// positions (parallel over (sample, tile)), the finisher (parallel over
// blocks of positions and of channels), and the elementwise backward
// (parallel over channel rows). Every split is fixed by the shape, never by
// the thread count. The algorithm is the CUDA kernels' own (fgd_math.h),
// with a narrower tile.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "convert.h"
#include "../common.h"
#include "vec.h"
#include "../fgd_loss.h"
#include "isa.h"

namespace hcam_ops::cpu {

// The entry points, declared for every level (isa.h): this file's compilation
// at CPU_CAPABILITY defines that level's, the baseline one registers the active one.
template <Isa>
void fgd_forward(const FgdInputs& in, const FgdParams& p, const at::Tensor& col, const at::Tensor& row,
                 const at::Tensor& sample, const at::Tensor& per_sample);
template <Isa>
void fgd_backward(const FgdInputs& in, const FgdParams& p, const at::Tensor& g, const at::Tensor& col,
                  const at::Tensor& row, const at::Tensor& sample, const at::Tensor& grad_student);

namespace {

using namespace CPU_CAPABILITY;  // vec.h, at this file's level

// Positions per tile: the tile's column sums and spatial weights (about
// 10 * kTile floats) stay in L1 while its channel rows stream past, and each
// channel's sums over the tile cost one horizontal reduction per 256 positions.
constexpr int64_t kTile = 256;

// Sweep over the vectors of a tile's rows: full vectors, then a masked tail
// (body(j, count) gets the position and how many are real).
template <typename Vec, typename F>
inline void for_vectors(int64_t n, F body) {
  constexpr int64_t V = Vec::size();
  int64_t j = 0;
  for (; j + V <= n; j += V) body(j, V);
  if (j < n) body(j, n - j);
}

// q[a] = sum_j w[a][j] * (s[j] - t[j])^2 over a tile row, for NA weights
// held in registers (a runtime count would keep the sums on the stack).
template <int NA, typename scalar_t>
void masked_errors_n(const scalar_t* s, const scalar_t* t, int64_t n, const at::opmath_type<scalar_t>* const* w,
                     at::opmath_type<scalar_t>* q) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  Vec acc[NA];
  for (int a = 0; a < NA; ++a) acc[a] = Vec(acc_t(0));
  for_vectors<Vec>(n, [&](int64_t j, int64_t m) {
    // Masked loads give zeros past the tile, which add nothing.
    const Vec x = load_acc(s + j, m);
    const Vec y = load_acc(t + j, m);
    const Vec d = x - y, d2 = d * d;
    // The weights past the tile are stale (and may be NaN): masked too.
    for (int a = 0; a < NA; ++a) {
      acc[a] = at::vec::fmadd(load_acc(w[a] + j, m), d2, acc[a]);
    }
  });
  for (int a = 0; a < NA; ++a) q[a] = sum_lanes(acc[a]);
}

template <typename scalar_t>
void masked_errors(int num, const scalar_t* s, const scalar_t* t, int64_t n, const at::opmath_type<scalar_t>* const* w,
                   at::opmath_type<scalar_t>* q) {
  switch (num) {  // fg and bg are always there; student_mix and fp add up to four
    case 2:
      return masked_errors_n<2>(s, t, n, w, q);
    case 3:
      return masked_errors_n<3>(s, t, n, w, q);
    case 4:
      return masked_errors_n<4>(s, t, n, w, q);
    case 5:
      return masked_errors_n<5>(s, t, n, w, q);
    default:
      return masked_errors_n<2 * kNumMask>(s, t, n, w, q);
  }
}

template <typename scalar_t>
void stats_pass(const FgdInputs& in, const FgdParams& p, const at::Tensor& col, const at::Tensor& part,
                const at::Tensor& tile_max) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  const int64_t tiles = part.size(1);
  const scalar_t* S = in.student.data_ptr<scalar_t>();
  const scalar_t* T = in.teacher.data_ptr<scalar_t>();
  const acc_t* masks[kNumMask] = {in.fg.data_ptr<acc_t>(), in.bg.data_ptr<acc_t>(),
                                  p.has_fp ? in.fp.data_ptr<acc_t>() : nullptr};
  acc_t* colp = col.data_ptr<acc_t>();
  acc_t* partp = part.data_ptr<acc_t>();
  acc_t* tmax = tile_max.data_ptr<acc_t>();
  const acc_t inv_ts = static_cast<acc_t>(p.inv_ts), inv_c = acc_t(1) / static_cast<acc_t>(C);
  const bool mix = p.mode == kSpatialStudentMix;
  // The (mask, exponential) weights that can be non-zero: the second
  // exponential only in student_mix, the fp mask only when given.
  int active[2 * kNumMask], num_active = 0;
  for (int k = 0; k < kNumMask; ++k) {
    if (!masks[k]) continue;
    active[num_active++] = 2 * k;
    if (mix && fgd_mask_spatial(p, k)) active[num_active++] = 2 * k + 1;
  }
  at::parallel_for(0, B * tiles, 1, [&](int64_t begin, int64_t end) {
    alignas(64) acc_t at_[kTile], as_[kTile], mt_[kTile], ms_[kTile], e0[kTile], e1[kTile];
    alignas(64) acc_t w[2 * kNumMask][kTile];  // per (mask, exponential): mask * its spatial weight
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
        Vec sat(acc_t(0)), sas(acc_t(0)), st(acc_t(0)), ss(acc_t(0));
        for_vectors<Vec>(n, [&](int64_t j, int64_t m) {
          // Masked loads give zeros past the tile, which add nothing.
          const Vec x = load_acc(s + j, m);
          const Vec y = load_acc(tt + j, m);
          const Vec ax = x.abs(), ay = y.abs();
          (Vec::loadu(at_ + j) + ay).store(at_ + j);
          (Vec::loadu(as_ + j) + ax).store(as_ + j);
          (Vec::loadu(mt_ + j) + y).store(mt_ + j);
          (Vec::loadu(ms_ + j) + x).store(ms_ + j);
          sat = sat + ay;
          sas = sas + ax;
          st = st + y;
          ss = ss + x;
        });
        pr[kPartAbsT * C + c] = sum_lanes(sat);
        pr[kPartAbsS * C + c] = sum_lanes(sas);
        pr[kPartT * C + c] = sum_lanes(st);
        pr[kPartS * C + c] = sum_lanes(ss);
      }
      acc_t m0 = -std::numeric_limits<acc_t>::infinity(), m1 = m0;
      acc_t* cl = colp + b * kNumCol * HW + h0;
      for (int64_t j = 0; j < n; ++j) {
        at_[j] *= inv_c;
        as_[j] *= inv_c;
        cl[kColAbsT * HW + j] = at_[j];
        cl[kColAbsS * HW + j] = as_[j];
        cl[kColT * HW + j] = mt_[j] * inv_c;
        cl[kColS * HW + j] = ms_[j] * inv_c;
        acc_t e[2];
        fgd_exponents(at_[j], as_[j], inv_ts, p.mode, e);
        e0[j] = e[0];
        e1[j] = e[1];
        m0 = std::max(m0, e[0]);
        m1 = std::max(m1, e[1]);
      }
      tmax[(b * tiles + t) * 2] = m0;
      tmax[(b * tiles + t) * 2 + 1] = m1;
      for (int64_t j = 0; j < n; ++j) {
        const acc_t x0 = std::exp(e0[j] - m0), x1 = mix ? std::exp(e1[j] - m1) : acc_t(0);
        for (int k = 0; k < kNumMask; ++k) {
          const acc_t mk = masks[k] ? masks[k][b * HW + h0 + j] : acc_t(0);
          const bool weighted = fgd_mask_spatial(p, k);
          w[2 * k][j] = weighted ? mk * x0 : mk;
          w[2 * k + 1][j] = weighted ? mk * x1 : acc_t(0);
        }
      }
      // The masked squared errors, one sum per active weight (the others are
      // zero). The tile's rows were just read: this second sweep hits the cache.
      for (int k = 0; k < 2 * kNumMask; ++k) {
        for (int64_t c = 0; c < C; ++c) pr[(kPartQ + k) * C + c] = acc_t(0);
      }
      const acc_t* wa[2 * kNumMask];
      for (int a = 0; a < num_active; ++a) wa[a] = w[active[a]];
      for (int64_t c = 0; c < C; ++c) {
        acc_t q[2 * kNumMask];
        const int64_t row = (b * C + c) * HW + h0;
        masked_errors(num_active, S + row, T + row, n, wa, q);
        for (int a = 0; a < num_active; ++a) pr[(kPartQ + active[a]) * C + c] = q[a];
      }
    }
  });
}

// Positions per task of finish's sweeps over a sample's map, and channels per
// task of its tile reduction: fixed sizes, not the thread count, so the
// partial sums (combined in block order) are the same bits at any thread
// count, and a batch of 2-8 maps still gives a 64-core server work
// (B * HW / kBlock tasks: 16 per 128 x 128 map).
constexpr int64_t kBlock = 1024;
constexpr int64_t kChannelBlock = 32;

// Per sample: the tiles reduced in order, both softmaxes, the six terms, and
// the statistics the backward needs. Sums in double. Parallel over (sample,
// block of positions) and (sample, block of channels); only O(C) and
// O(HW / kBlock) work per sample runs per sample.
template <typename acc_t>
void finish(const FgdParams& p, int64_t C, int64_t HW, const at::Tensor& part, const at::Tensor& tile_max,
            const at::Tensor& col, const at::Tensor& row, const at::Tensor& sample, const at::Tensor& per_sample) {
  const int64_t B = col.size(0), tiles = part.size(1);
  const int64_t nb = (HW + kBlock - 1) / kBlock, ncb = (C + kChannelBlock - 1) / kChannelBlock;
  const acc_t* partp = part.data_ptr<acc_t>();
  const acc_t* tmax = tile_max.data_ptr<acc_t>();
  const acc_t* colp = col.data_ptr<acc_t>();
  acc_t* rowp = row.data_ptr<acc_t>();
  acc_t* ssp = sample.data_ptr<acc_t>();
  acc_t* out = per_sample.data_ptr<acc_t>();
  const double inv_ts = p.inv_ts, inv_tc = p.inv_tc;
  const double dC = static_cast<double>(C), dHW = static_cast<double>(HW);
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // Per (sample, block): the spatial logits' maxima (t, s), then their
  // exponential sums (t, s), then the attention, K_s and spatial sums.
  std::vector<double> bmax(B * nb * 2), bsum(B * nb * 2), bterm(B * nb * 3);
  // Per sample: the spatial softmaxes' maxima and sums (t, s), in double for
  // the sweeps below (sample's float copy is for the backward).
  std::vector<double> spatial(B * 4);
  // Per sample and channel: the masked errors, rescaled (2 * kNumMask rows).
  std::vector<double> qbuf(B * 2 * kNumMask * C);
  auto block_of = [&](int64_t i, int64_t& b, int64_t& j0, int64_t& j1) {
    b = i / nb;
    j0 = (i % nb) * kBlock;
    j1 = std::min(HW, j0 + kBlock);
  };
  // 1. Block maxima of the spatial logits of |T| and |S| (a max is exact in any order).
  at::parallel_for(0, B * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t b, j0, j1;
      block_of(i, b, j0, j1);
      const acc_t* cl = colp + b * kNumCol * HW;
      double mt = -kInf, ms = -kInf;
      for (int64_t j = j0; j < j1; ++j) {
        mt = std::max(mt, cl[kColAbsT * HW + j] * inv_ts);
        ms = std::max(ms, cl[kColAbsS * HW + j] * inv_ts);
      }
      bmax[2 * i] = mt;
      bmax[2 * i + 1] = ms;
    }
  });
  for (int64_t b = 0; b < B; ++b) {
    double mt = -kInf, ms = -kInf;
    for (int64_t i = b * nb; i < (b + 1) * nb; ++i) {
      mt = std::max(mt, bmax[2 * i]);
      ms = std::max(ms, bmax[2 * i + 1]);
    }
    spatial[4 * b] = mt;
    spatial[4 * b + 2] = ms;
  }
  // 2. Block sums of the exponentials (NaN is carried by exp, as in the reference).
  at::parallel_for(0, B * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t b, j0, j1;
      block_of(i, b, j0, j1);
      const acc_t* cl = colp + b * kNumCol * HW;
      const double mt = spatial[4 * b], ms = spatial[4 * b + 2];
      double zt = 0, zs = 0;
      for (int64_t j = j0; j < j1; ++j) {
        zt += std::exp(cl[kColAbsT * HW + j] * inv_ts - mt);
        zs += std::exp(cl[kColAbsS * HW + j] * inv_ts - ms);
      }
      bsum[2 * i] = zt;
      bsum[2 * i + 1] = zs;
    }
  });
  // 3. The spatial softmaxes' normalisers, blocks added in order.
  for (int64_t b = 0; b < B; ++b) {
    acc_t* ss = ssp + b * kNumSample;
    double zt = 0, zs = 0;
    for (int64_t i = b * nb; i < (b + 1) * nb; ++i) {
      zt += bsum[2 * i];
      zs += bsum[2 * i + 1];
    }
    spatial[4 * b + 1] = zt;
    spatial[4 * b + 3] = zs;
    ss[kMaxTs] = spatial[4 * b];
    ss[kSumTs] = zt;
    ss[kMaxSs] = spatial[4 * b + 2];
    ss[kSumSs] = zs;
  }
  // 4. Channel means and the masked errors per channel, tiles in order and
  // rescaled to the global maxima (unweighted errors have nothing to rescale).
  at::parallel_for(0, B * ncb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / ncb, c0 = (i % ncb) * kChannelBlock, c1 = std::min(C, c0 + kChannelBlock);
      const auto wn = fgd_weight_norm<acc_t>(ssp + b * kNumSample, p, dHW);
      double sums[kNumRow][kChannelBlock] = {}, q[2 * kNumMask][kChannelBlock] = {};
      for (int64_t t = 0; t < tiles; ++t) {
        const acc_t* pr = partp + (b * tiles + t) * kNumPart * C;
        const acc_t* tm = tmax + (b * tiles + t) * 2;
        const double f[2] = {std::exp(static_cast<double>(tm[0]) - wn.m[0]),
                             std::exp(static_cast<double>(tm[1]) - wn.m[1])};
        for (int k = 0; k < kNumRow; ++k) {
          for (int64_t c = c0; c < c1; ++c) sums[k][c - c0] += pr[k * C + c];
        }
        for (int k = 0; k < 2 * kNumMask; ++k) {
          const double fk = fgd_mask_spatial(p, k / 2) ? f[k % 2] : 1.0;
          for (int64_t c = c0; c < c1; ++c) q[k][c - c0] += pr[(kPartQ + k) * C + c] * fk;
        }
      }
      acc_t* rw = rowp + b * kNumRow * C;
      for (int k = 0; k < kNumRow; ++k) {
        for (int64_t c = c0; c < c1; ++c) rw[k * C + c] = static_cast<acc_t>(sums[k][c - c0] / dHW);
      }
      double* qb = qbuf.data() + b * 2 * kNumMask * C;
      for (int k = 0; k < 2 * kNumMask; ++k) {
        for (int64_t c = c0; c < c1; ++c) qb[k * C + c] = q[k][c - c0];
      }
    }
  });
  // 5. The spatial terms' block sums.
  at::parallel_for(0, B * nb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      int64_t b, j0, j1;
      block_of(i, b, j0, j1);
      const acc_t* cl = colp + b * kNumCol * HW;
      const double* sb = spatial.data() + 4 * b;
      const double mt = sb[0], zt = sb[1], ms = sb[2], zs = sb[3];
      double att = 0, ks = 0, sp = 0;
      for (int64_t j = j0; j < j1; ++j) {
        const auto [a_t, p_s, sg] =
            fgd_attention(cl[kColAbsT * HW + j], cl[kColAbsS * HW + j], inv_ts, mt, zt, ms, zs, dHW);
        att += std::abs(dHW * p_s - a_t);
        ks += p_s * dHW * sg;
        sp += std::abs(static_cast<double>(cl[kColT * HW + j]) - cl[kColS * HW + j]);
      }
      bterm[3 * i] = att;
      bterm[3 * i + 1] = ks;
      bterm[3 * i + 2] = sp;
    }
  });
  // 6. Per sample: the channel softmaxes and the terms (O(C) work).
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const acc_t* rw = rowp + b * kNumRow * C;
      acc_t* ss = ssp + b * kNumSample;
      const double* qb = qbuf.data() + b * 2 * kNumMask * C;
      const auto wn = fgd_weight_norm<acc_t>(ss, p, dHW);
      double mtc = -kInf, msc = -kInf, ztc = 0, zsc = 0;
      for (int64_t c = 0; c < C; ++c) {
        mtc = std::max(mtc, rw[kRowAbsT * C + c] * inv_tc);
        msc = std::max(msc, rw[kRowAbsS * C + c] * inv_tc);
      }
      for (int64_t c = 0; c < C; ++c) {
        ztc += std::exp(rw[kRowAbsT * C + c] * inv_tc - mtc);
        zsc += std::exp(rw[kRowAbsS * C + c] * inv_tc - msc);
      }
      double lm[kNumMask] = {0, 0, 0}, att = 0, kc = 0, ch = 0;
      for (int64_t c = 0; c < C; ++c) {
        const auto [a_t, p_s, sg] =
            fgd_attention(rw[kRowAbsT * C + c], rw[kRowAbsS * C + c], inv_tc, mtc, ztc, msc, zsc, dC);
        double qc[2 * kNumMask];
        for (int k = 0; k < 2 * kNumMask; ++k) qc[k] = qb[k * C + c];
        for (int k = 0; k < kNumMask; ++k) {
          const double cw = (k == kMaskFp || p.channel_mask) ? a_t : 1.0;
          lm[k] += cw * fgd_masked_error(qc, k, wn, p);
        }
        att += std::abs(dC * p_s - a_t);
        kc += p_s * dC * sg;
        ch += std::abs(static_cast<double>(rw[kRowT * C + c]) - rw[kRowS * C + c]);
      }
      double ks = 0, sp = 0;
      for (int64_t i = b * nb; i < (b + 1) * nb; ++i) {
        att += bterm[3 * i];
        ks += bterm[3 * i + 1];
        sp += bterm[3 * i + 2];
      }
      ss[kMaxTc] = mtc;
      ss[kSumTc] = ztc;
      ss[kMaxSc] = msc;
      ss[kSumSc] = zsc;
      ss[kKc] = kc;
      ss[kKs] = ks;
      acc_t* o = out + b * kNumTerms;
      o[kFg] = p.scale[kFg] * lm[kMaskFg];
      o[kBg] = p.scale[kBg] * lm[kMaskBg];
      o[kAttention] = p.scale[kAttention] * att;
      o[kChannel] = p.scale[kChannel] * ch;
      o[kSpatial] = p.scale[kSpatial] * sp;
      o[kFp] = p.scale[kFp] * lm[kMaskFp];
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
  const acc_t* fp = p.has_fp ? in.fp.data_ptr<acc_t>() : nullptr;
  // Coefficients (P, P', alpha, gamma) per channel and (Q, Q', beta, delta) per position.
  auto rc = at::empty({B, 4, C}, col.options());
  auto cc = at::empty({B, 4, HW}, col.options());
  acc_t* rcp = rc.data_ptr<acc_t>();
  acc_t* ccp = cc.data_ptr<acc_t>();
  // Independent per (sample, channel) and per (sample, position): two flat
  // sweeps (B * HW positions is the long one: exponentials per position).
  at::parallel_for(0, B * C, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / C, c = i % C;
      const auto k = fgd_channel_coefs(rowp + b * kNumRow * C, ssp + b * kNumSample, gp, C, HW, c, p);
      acc_t* r = rcp + b * 4 * C;
      r[c] = k.scale;
      r[C + c] = k.scale_fp;
      r[2 * C + c] = k.sign_coef;
      r[3 * C + c] = k.shift;
    }
  });
  at::parallel_for(0, B * HW, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / HW, j = i % HW;
      const acc_t fpj = fp ? fp[i] : acc_t(0);
      const auto k =
          fgd_position_coefs(colp + b * kNumCol * HW, ssp + b * kNumSample, gp, fg[i], bg[i], fpj, C, HW, j, p);
      acc_t* q = ccp + b * 4 * HW;
      q[j] = k.scale;
      q[HW + j] = k.scale_fp;
      q[2 * HW + j] = k.sign_coef;
      q[3 * HW + j] = k.shift;
    }
  });
  const scalar_t* S = in.student.data_ptr<scalar_t>();
  const scalar_t* T = in.teacher.data_ptr<scalar_t>();
  scalar_t* dS = grad_student.data_ptr<scalar_t>();
  at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bc = begin; bc < end; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      const acc_t* r = rcp + b * 4 * C;
      const acc_t pc = r[c], pf = r[C + c], al = r[2 * C + c], ga_ = r[3 * C + c];
      const acc_t* q = ccp + b * 4 * HW;
      const scalar_t* s = S + bc * HW;
      const scalar_t* t = T + bc * HW;
      scalar_t* d = dS + bc * HW;
#pragma omp simd
      for (int64_t j = 0; j < HW; ++j) {
        const acc_t x = static_cast<acc_t>(s[j]);
        d[j] = to_scalar<scalar_t>((pc * q[j] + pf * q[HW + j]) * (x - static_cast<acc_t>(t[j])) +
                                   fgd_sign(x) * (al + q[2 * HW + j]) + ga_ + q[3 * HW + j]);
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
  auto tile_max = at::empty({B, tiles, 2}, col.options());
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

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const FgdLossKernels kKernels{HCAM_CPU_DISPATCH(fgd_forward), HCAM_CPU_DISPATCH(fgd_backward)};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("fgd_loss", device_entry<&hcam_ops::fgd_loss, &kKernels>);
  m.impl("fgd_loss_backward", device_entry<&hcam_ops::fgd_loss_backward, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
