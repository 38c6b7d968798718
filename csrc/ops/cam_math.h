// Formulas of the CAM-consistency family shared by the CPU and CUDA kernels, so
// that both devices compute the contract of docs/ops/cam.md with the same code.
#pragma once

#include <ATen/NumericUtils.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace hcam_ops {

// A CAM-KL loss has at most kMaxLevels + 1 levels, so at most kMaxLevels of
// them take a gradient.
constexpr int kMaxLevels = 4;

// A CUDA feature pass handles this many levels (CAMs) per read of the
// features: every level of a CAM-KL loss, so its forward reads them once.
// More levels (cam_gather) are done in groups.
constexpr int kPassLevels = kMaxLevels + 1;

// Running min and max of a row with the positions that attain them.
template <typename T>
struct MinMax {
  T mn;
  T mx;
  int64_t imn;
  int64_t imx;
};

template <typename T>
C10_HOST_DEVICE inline MinMax<T> minmax_identity() {
  return {std::numeric_limits<T>::infinity(), -std::numeric_limits<T>::infinity(), INT64_MAX, INT64_MAX};
}

// Whether (b, ib) replaces (a, ia) as the minimum (kLess) or maximum: NaN wins
// as in torch.min/max, then the better value, then the first position, so the
// gradient of a tie goes where torch.min(dim) sends it.
template <typename T, bool kLess>
C10_HOST_DEVICE inline bool replaces(T a, int64_t ia, T b, int64_t ib) {
  const bool a_nan = at::_isnan(a), b_nan = at::_isnan(b);
  if (a_nan || b_nan) {
    return b_nan && (!a_nan || ib < ia);
  }
  const bool better = kLess ? (b < a) : (b > a);
  return better || (b == a && ib < ia);
}

template <typename T>
C10_HOST_DEVICE inline MinMax<T> minmax_combine(MinMax<T> a, const MinMax<T>& b) {
  if (replaces<T, true>(a.mn, a.imn, b.mn, b.imn)) {
    a.mn = b.mn;
    a.imn = b.imn;
  }
  if (replaces<T, false>(a.mx, a.imx, b.mx, b.imx)) {
    a.mx = b.mx;
    a.imx = b.imx;
  }
  return a;
}

template <typename T>
C10_HOST_DEVICE inline MinMax<T> minmax_of(T v, int64_t i) {
  return {v, v, i, i};
}

// KL direction: fine_to_coarse is sum P log(P/Q), coarse_to_fine sum Q log(Q/P).
// lp, lq are log-probabilities.
template <typename T>
C10_HOST_DEVICE inline T kl_term(T lp, T lq, bool fine_to_coarse) {
  return fine_to_coarse ? std::exp(lp) * (lp - lq) : std::exp(lq) * (lq - lp);
}

// d KL / d(logit of P) and d KL / d(logit of Q), logits already divided by T.
template <typename T>
C10_HOST_DEVICE inline T kl_grad_p(T lp, T lq, T kl, bool fine_to_coarse) {
  return fine_to_coarse ? std::exp(lp) * (lp - lq - kl) : std::exp(lp) - std::exp(lq);
}

template <typename T>
C10_HOST_DEVICE inline T kl_grad_q(T lp, T lq, T kl, bool fine_to_coarse) {
  return fine_to_coarse ? std::exp(lq) - std::exp(lp) : std::exp(lq) * (lq - lp - kl);
}

// Per-sample vectors that a feature pass multiplies with the features.
// WeightRows: row index[l][b] of level l's weight [K_l, C]; an index outside
// [0, K_l) gives no row, and the kernels then write NaN instead of reading
// out of bounds.
template <typename T>
struct WeightRows {
  using value_t = T;
  const T* base[kPassLevels];
  const int64_t* index[kPassLevels];
  int64_t num_rows[kPassLevels];
  int64_t index_stride;
  int64_t row_len;

  C10_HOST_DEVICE const T* row(int64_t b, int l) const {
    const int64_t k = index[l][b * index_stride];
    return (k >= 0 && k < num_rows[l]) ? base[l] + k * row_len : nullptr;
  }
  template <typename A>
  C10_HOST_DEVICE A factor(int64_t) const {
    return A(1);
  }
};

// CoefRows: per-sample rows of a [B, levels, row_len] buffer, each sample's
// rows scaled by scale[b] (the upstream gradient) when scale is given.
template <typename A, typename S>
struct CoefRows {
  using value_t = A;
  const A* base;
  int64_t levels;
  int64_t level_offset;
  int64_t row_len;
  const S* scale;

  C10_HOST_DEVICE const A* row(int64_t b, int l) const { return base + (b * levels + level_offset + l) * row_len; }
  template <typename T>
  C10_HOST_DEVICE T factor(int64_t b) const {
    return scale ? static_cast<T>(scale[b]) : T(1);
  }
};

}  // namespace hcam_ops
