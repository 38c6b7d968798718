// FGD (docs/ops/fgd.md#fgd_loss): the layout of the statistics the fused loss keeps and
// the per-position formulas shared by the CPU and CUDA kernels.
//
// One pass over student S and teacher T ([B, C, HW]) in tiles of hw positions
// gives everything: per position the channel means (complete in a tile, since a
// tile holds every channel), per channel partial sums over the tile, and the
// tile's share of the masked squared error with the spatial weight
// exp(e_hw - M_tile) taken relative to the tile's own maximum exponent (the
// softmax over all of HW is not known yet). A per-sample finisher rescales the
// tiles to the global maximum and forms the five terms. The backward is one
// elementwise pass:
//   dS = P_c Q_hw (S - T) + sign(S) (alpha_c + beta_hw) + gamma_c + delta_hw
// with per-channel (P, alpha, gamma) and per-position (Q, beta, delta)
// coefficients built from the saved statistics and the upstream gradients.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace hcam_ops {

// Terms, in the order of the forward's output.
enum FgdTerm : int { kFg = 0, kBg, kAttention, kChannel, kSpatial, kNumTerms };

// col_stats [B, 4, HW]: channel means per position.
enum FgdCol : int { kColAbsT = 0, kColAbsS, kColT, kColS, kNumCol };
// row_stats [B, 4, C]: spatial means per channel.
enum FgdRow : int { kRowAbsT = 0, kRowAbsS, kRowT, kRowS, kNumRow };
// Tile partials [B, tiles, 6, C]: sums over the tile's positions; the two
// masked squared errors are relative to the tile's maximum exponent.
enum FgdPart : int { kPartAbsT = 0, kPartAbsS, kPartT, kPartS, kPartFg, kPartBg, kNumPart };
// sample_stats [B, 10]: softmax maxima and sums, and the sums K = sum p * n * sign
// of the attention term's softmax backward.
enum FgdSample : int {
  kMaxTc = 0,
  kSumTc,
  kMaxSc,
  kSumSc,
  kKc,  // channel softmaxes (over C)
  kMaxTs,
  kSumTs,
  kMaxSs,
  kSumSs,
  kKs,  // spatial softmaxes (over HW)
  kNumSample
};

struct FgdParams {
  double inv_ts, inv_tc;    // 1 / T_s, 1 / T_c
  double scale[kNumTerms];  // each term's weight over the batch size, w_k / B
  bool combined;            // spatial weighting sqrt(A_s(T) A_s(S)) instead of A_s(T)
};

template <typename T>
C10_HOST_DEVICE inline T fgd_sign(T x) {
  return static_cast<T>((x > T(0)) - (x < T(0)));
}

// The exponent of the (unnormalised) spatial weight at one position, from the
// channel means of |T| and |S| there.
template <typename T>
C10_HOST_DEVICE inline T fgd_exponent(T abs_t, T abs_s, T inv_ts, bool combined) {
  return combined ? (abs_t + abs_s) * inv_ts * T(0.5) : abs_t * inv_ts;
}

// The global reference maximum and normaliser of the spatial weight:
// W_hw = HW exp(e_hw - m) / d. Teacher: m = max e, d = sum exp(e - m).
// Combined: sqrt of the product of both softmaxes.
template <typename T>
C10_HOST_DEVICE inline void fgd_weight_norm(const T* ss, bool combined, T& m, T& d) {
  if (combined) {
    m = (ss[kMaxTs] + ss[kMaxSs]) * T(0.5);
    d = sqrt(ss[kSumTs] * ss[kSumSs]);
  } else {
    m = ss[kMaxTs];
    d = ss[kSumTs];
  }
}

// The normalisers of a teacher/student pair of softmaxes over n entries:
// max_x = max(x * inv_t), sum_x = sum exp(x * inv_t - max_x), in double.
struct SoftmaxPair {
  double max_t, sum_t, max_s, sum_s;
};

// One index of an attention pair over n entries (channels or positions): the
// teacher's attention n softmax(abs_t / T), the student's softmax probability,
// and the sign of their difference (the L1 term's derivative), from the
// softmaxes' maxima and sums.
struct FgdAttention {
  double a_t, p_s, sign;
};

C10_HOST_DEVICE inline FgdAttention fgd_attention(double abs_t, double abs_s, double inv_temp, double max_t,
                                                  double sum_t, double max_s, double sum_s, double n) {
  const double a_t = n * exp(abs_t * inv_temp - max_t) / sum_t;
  const double p_s = exp(abs_s * inv_temp - max_s) / sum_s;
  return {a_t, p_s, fgd_sign(n * p_s - a_t)};
}

// The backward's coefficients of one channel (P, alpha, gamma) or one
// position (Q, beta, delta), for the upstream gradients g [5]:
//   dS = P_c Q_hw (S - T) + sign(S) (alpha_c + beta_hw) + gamma_c + delta_hw.
struct FgdCoefs {
  double scale, sign_coef, shift;
};

// rw: the sample's row statistics [4, C]; ss: its sample statistics.
template <typename T>
C10_HOST_DEVICE inline FgdCoefs fgd_channel_coefs(const T* rw, const T* ss, const T* g, int64_t C, int64_t HW,
                                                  int64_t c, const FgdParams& p) {
  const double dC = static_cast<double>(C), dHW = static_cast<double>(HW);
  const auto att = fgd_attention(rw[kRowAbsT * C + c], rw[kRowAbsS * C + c], p.inv_tc, ss[kMaxTc], ss[kSumTc],
                                 ss[kMaxSc], ss[kSumSc], dC);
  return {
      att.a_t, g[kAttention] * p.scale[kAttention] * att.p_s * (dC * att.sign - ss[kKc]) * p.inv_tc / dHW,
      -g[kChannel] * p.scale[kChannel] * fgd_sign(static_cast<double>(rw[kRowT * C + c]) - rw[kRowS * C + c]) / dHW};
}

// cl: the sample's column statistics [4, HW]; fg, bg: its masks at position j.
template <typename T>
C10_HOST_DEVICE inline FgdCoefs fgd_position_coefs(const T* cl, const T* ss, const T* g, T fg, T bg, int64_t C,
                                                   int64_t HW, int64_t j, const FgdParams& p) {
  const double dC = static_cast<double>(C), dHW = static_cast<double>(HW);
  T wm, wd;
  fgd_weight_norm<T>(ss, p.combined, wm, wd);
  const T e = fgd_exponent<T>(cl[kColAbsT * HW + j], cl[kColAbsS * HW + j], static_cast<T>(p.inv_ts), p.combined);
  const double weight = dHW * exp(static_cast<double>(e) - wm) / wd;
  const auto att = fgd_attention(cl[kColAbsT * HW + j], cl[kColAbsS * HW + j], p.inv_ts, ss[kMaxTs], ss[kSumTs],
                                 ss[kMaxSs], ss[kSumSs], dHW);
  return {
      2.0 * (g[kFg] * p.scale[kFg] * fg + g[kBg] * p.scale[kBg] * bg) * weight,
      g[kAttention] * p.scale[kAttention] * att.p_s * (dHW * att.sign - ss[kKs]) * p.inv_ts / dC,
      -g[kSpatial] * p.scale[kSpatial] * fgd_sign(static_cast<double>(cl[kColT * HW + j]) - cl[kColS * HW + j]) / dC};
}

}  // namespace hcam_ops
