// FGD (docs/ops/fgd.md#fgd_loss): the layout of the statistics the fused loss keeps and
// the per-position formulas shared by the CPU and CUDA kernels.
//
// One pass over student S and teacher T ([B, C, HW]) in tiles of hw positions
// gives everything: per position the channel means (complete in a tile, since a
// tile holds every channel), per channel partial sums over the tile, and the
// tile's share of the three masked squared errors (fg, bg, fp). The spatial
// weight is a sum of at most two exponentials, W_hw = sum_j c_j exp(e_j,hw - m_j)
// (one for "teacher" and "combined", teacher and student for "student_mix");
// each is taken relative to the tile's own maximum exponent (the softmax over
// all of HW is not known yet). A per-sample finisher rescales the tiles to the
// global maxima and forms the six terms. The backward is one elementwise pass:
//   dS = (P_c Q_hw + P'_c Q'_hw) (S - T) + sign(S) (alpha_c + beta_hw) + gamma_c + delta_hw
// with per-channel (P, P', alpha, gamma) and per-position (Q, Q', beta, delta)
// coefficients built from the saved statistics and the upstream gradients; the
// primed pair is the fp term's, which keeps both attentions when the fg/bg
// terms switch one off (DistillBEV's spatial_mask / channel_mask).
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>

namespace hcam_ops {

// Terms, in the order of the forward's output.
enum FgdTerm : int { kFg = 0, kBg, kAttention, kChannel, kSpatial, kFp, kNumTerms };

// col_stats [B, 4, HW]: channel means per position.
enum FgdCol : int { kColAbsT = 0, kColAbsS, kColT, kColS, kNumCol };
// row_stats [B, 4, C]: spatial means per channel.
enum FgdRow : int { kRowAbsT = 0, kRowAbsS, kRowT, kRowS, kNumRow };
// Tile partials [B, tiles, 10, C]: sums over the tile's positions. The masked
// squared errors come per mask (fg, bg, fp) and per exponential j of the
// spatial weight, slot kPartQ + 2 * mask + j, relative to the tile's maximum
// of e_j (unweighted fg/bg, spatial_mask off, use j = 0 with weight 1).
enum FgdPart : int { kPartAbsT = 0, kPartAbsS, kPartT, kPartS, kPartQ, kNumPart = kPartQ + 6 };
enum FgdMask : int { kMaskFg = 0, kMaskBg, kMaskFp, kNumMask };
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

// Which spatial weight W_s the masked errors use (docs/ops/fgd.md#fgd_loss).
enum FgdSpatialMode : int64_t {
  kSpatialTeacher = 0,  // A_s(T) (FGD; DistillBEV's "teacher")
  kSpatialCombined,     // sqrt(A_s(T) stopgrad(A_s(S))) (ours)
  kSpatialStudentMix,   // stopgrad((A_s(T) + r A_s(S)) / (1 + r)) (DistillBEV's "teacher_student")
  kNumSpatialModes
};

struct FgdParams {
  double inv_ts, inv_tc;    // 1 / T_s, 1 / T_c
  double scale[kNumTerms];  // each term's weight over the batch size, w_k / B
  int64_t mode;             // FgdSpatialMode
  double ratio;             // r of kSpatialStudentMix
  bool spatial_mask;        // fg/bg errors weighted by W_s (else by 1)
  bool channel_mask;        // fg/bg errors weighted by A_c(T) (else by 1)
  bool has_fp;              // an fp mask was given (else it reads as zeros)
};

template <typename T>
C10_HOST_DEVICE inline T fgd_sign(T x) {
  return static_cast<T>((x > T(0)) - (x < T(0)));
}

// The exponents e_0, e_1 of the (unnormalised) spatial weight at one position,
// from the channel means of |T| and |S| there. Without a second exponential,
// e_1 = e_0 keeps the tile arithmetic finite; its coefficient is 0.
template <typename T>
C10_HOST_DEVICE inline void fgd_exponents(T abs_t, T abs_s, T inv_ts, int64_t mode, T* e) {
  if (mode == kSpatialCombined) {
    e[0] = (abs_t + abs_s) * inv_ts * T(0.5);
    e[1] = e[0];
  } else {
    e[0] = abs_t * inv_ts;
    e[1] = mode == kSpatialStudentMix ? abs_s * inv_ts : e[0];
  }
}

// The global reference maxima m_j and coefficients c_j of the spatial weight
// W_hw = sum_j c_j exp(e_j,hw - m_j), from the spatial softmaxes' statistics
// (ss) over n = HW positions. Teacher: HW softmax(e_t). Combined: the sqrt of
// the product of both softmaxes. Student mix: their (1, r) mix over 1 + r.
struct FgdWeightNorm {
  double m[2], c[2];
};

template <typename T>
C10_HOST_DEVICE inline FgdWeightNorm fgd_weight_norm(const T* ss, const FgdParams& p, double n) {
  const double mt = ss[kMaxTs], zt = ss[kSumTs], ms = ss[kMaxSs], zs = ss[kSumSs];
  if (p.mode == kSpatialCombined) {
    const double m = (mt + ms) * 0.5;
    return {{m, m}, {n / sqrt(zt * zs), 0.0}};
  }
  if (p.mode == kSpatialStudentMix) {
    return {{mt, ms}, {n / ((1.0 + p.ratio) * zt), n * p.ratio / ((1.0 + p.ratio) * zs)}};
  }
  return {{mt, mt}, {n / zt, 0.0}};
}

// Whether a mask's error is weighted by W_s: fg and bg follow spatial_mask, the
// fp term always is (bevdet_distill.py weights it by both attentions).
C10_HOST_DEVICE inline bool fgd_mask_spatial(const FgdParams& p, int mask) {
  return mask == kMaskFp || p.spatial_mask;
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

// The backward's coefficients of one channel (P, P', alpha, gamma) or one
// position (Q, Q', beta, delta), for the upstream gradients g [6]:
//   dS = (P_c Q_hw + P'_c Q'_hw) (S - T) + sign(S) (alpha_c + beta_hw) + gamma_c + delta_hw.
// Unprimed: the fg and bg terms; primed: the fp term.
struct FgdCoefs {
  double scale, scale_fp, sign_coef, shift;
};

// rw: the sample's row statistics [4, C]; ss: its sample statistics.
template <typename T>
C10_HOST_DEVICE inline FgdCoefs fgd_channel_coefs(const T* rw, const T* ss, const T* g, int64_t C, int64_t HW,
                                                  int64_t c, const FgdParams& p) {
  const double dC = static_cast<double>(C), dHW = static_cast<double>(HW);
  const auto att = fgd_attention(rw[kRowAbsT * C + c], rw[kRowAbsS * C + c], p.inv_tc, ss[kMaxTc], ss[kSumTc],
                                 ss[kMaxSc], ss[kSumSc], dC);
  return {
      p.channel_mask ? att.a_t : 1.0, att.a_t,
      g[kAttention] * p.scale[kAttention] * att.p_s * (dC * att.sign - ss[kKc]) * p.inv_tc / dHW,
      -g[kChannel] * p.scale[kChannel] * fgd_sign(static_cast<double>(rw[kRowT * C + c]) - rw[kRowS * C + c]) / dHW};
}

// cl: the sample's column statistics [4, HW]; fg, bg, fp: its masks at position j.
// The spatial weight is a constant to the backward in every mode (the student
// part is detached in "combined" and "student_mix").
template <typename T>
C10_HOST_DEVICE inline FgdCoefs fgd_position_coefs(const T* cl, const T* ss, const T* g, T fg, T bg, T fp, int64_t C,
                                                   int64_t HW, int64_t j, const FgdParams& p) {
  const double dC = static_cast<double>(C), dHW = static_cast<double>(HW);
  const auto wn = fgd_weight_norm(ss, p, dHW);
  T e[2];
  fgd_exponents<T>(cl[kColAbsT * HW + j], cl[kColAbsS * HW + j], static_cast<T>(p.inv_ts), p.mode, e);
  double weight = wn.c[0] * exp(static_cast<double>(e[0]) - wn.m[0]);
  if (p.mode == kSpatialStudentMix) weight += wn.c[1] * exp(static_cast<double>(e[1]) - wn.m[1]);
  const auto att = fgd_attention(cl[kColAbsT * HW + j], cl[kColAbsS * HW + j], p.inv_ts, ss[kMaxTs], ss[kSumTs],
                                 ss[kMaxSs], ss[kSumSs], dHW);
  return {
      2.0 * (g[kFg] * p.scale[kFg] * fg + g[kBg] * p.scale[kBg] * bg) * (p.spatial_mask ? weight : 1.0),
      2.0 * g[kFp] * p.scale[kFp] * fp * weight,
      g[kAttention] * p.scale[kAttention] * att.p_s * (dHW * att.sign - ss[kKs]) * p.inv_ts / dC,
      -g[kSpatial] * p.scale[kSpatial] * fgd_sign(static_cast<double>(cl[kColT * HW + j]) - cl[kColS * HW + j]) / dC};
}

// Per sample, after the tiles: the masked squared errors per channel, summed
// over positions with their spatial weights (W_s or 1), from the rescaled tile
// sums q[mask][j] (each relative to the global maximum m_j). fg/bg use j = 0
// only when unweighted.
C10_HOST_DEVICE inline double fgd_masked_error(const double* q, int mask, const FgdWeightNorm& wn, const FgdParams& p) {
  if (!fgd_mask_spatial(p, mask)) return q[2 * mask];
  return wn.c[0] * q[2 * mask] + wn.c[1] * q[2 * mask + 1];
}

}  // namespace hcam_ops
