// CPU reductions over one row, shared by the row ops (minmax_normalize,
// softmax_kl) and the fused CAM-KL loss; the CUDA ones are in
// ../cuda/row_reductions.cuh. Row n is read through a callable x(n).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "../cam_math.h"

// In the namespace of the level being compiled (isa.h): each level's kernels
// get their own copy.
namespace hcam_ops::cpu::CPU_CAPABILITY {

// The row statistics (min/max, softmax sums, KL) are O(N) per row against the
// O(N*C) feature pass, so they run in double: a KL is a small difference of
// large sums, and float sums over thousands of positions lose digits there.
using math_t = double;

template <typename acc_t, typename F>
MinMax<acc_t> row_minmax(F x, int64_t N) {
  auto m = minmax_identity<acc_t>();
  for (int64_t n = 0; n < N; ++n) m = minmax_combine(m, minmax_of(x(n), n));
  return m;
}

template <typename acc_t>
struct SoftmaxKL {
  acc_t lse_p, lse_q, kl;
};

// Log-sum-exp of both logit rows and the KL between their softmaxes.
template <typename acc_t, typename FP, typename FQ>
SoftmaxKL<acc_t> row_softmax_kl(FP up, FQ uq, int64_t N, bool f2c) {
  acc_t mp = -std::numeric_limits<acc_t>::infinity(), mq = mp;
  for (int64_t n = 0; n < N; ++n) {
    mp = std::max(mp, up(n));
    mq = std::max(mq, uq(n));
  }
  acc_t sp = 0, sq = 0;
  for (int64_t n = 0; n < N; ++n) {
    sp += std::exp(up(n) - mp);
    sq += std::exp(uq(n) - mq);
  }
  SoftmaxKL<acc_t> r{mp + std::log(sp), mq + std::log(sq), 0};
  for (int64_t n = 0; n < N; ++n) r.kl += kl_term(up(n) - r.lse_p, uq(n) - r.lse_q, f2c);
  return r;
}

// Through norm = (x - min) / D: out[n] = g[n] / D, plus the min's and max's
// shares at the positions that attain them.
template <typename acc_t, typename FG, typename FN, typename Out>
void minmax_backward_row(FG g, FN nf, const MinMax<acc_t>& mm, acc_t D, int64_t N, Out out) {
  acc_t s_min = 0, s_max = 0;
  for (int64_t n = 0; n < N; ++n) {
    const acc_t gn = g(n), v = nf(n);
    s_min += gn * (v - 1);
    s_max -= gn * v;
    out(n, gn / D);
  }
  out(mm.imn, s_min / D, true);
  out(mm.imx, s_max / D, true);
}

}  // namespace hcam_ops::cpu::CPU_CAPABILITY
