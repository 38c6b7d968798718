// CUDA block reductions over one row (one block per row), shared by the row
// ops (minmax_normalize, softmax_kl) and the fused CAM-KL loss; the CPU ones
// are in ../cpu/row_reductions.h. Row n is read through a callable x(n).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <limits>

#include "../cam_math.h"
#include "block_reduce.cuh"

namespace hcam_ops::cuda {

// The row statistics (min/max, softmax sums, KL) are O(N) per row against the
// O(N*C) feature pass, so they run in double: a KL is a small difference of
// large sums, and float sums over thousands of positions lose digits there.
using math_t = double;

template <typename acc_t>
using Two = Vals<acc_t, 2>;

// Shared scratch of the row kernels: one slot per warp for each reduction type.
template <typename acc_t>
struct RowScratch {
  MinMax<acc_t> mm[32];
  Two<acc_t> two[32];
};

struct MinMaxOp {
  template <typename T>
  __device__ __forceinline__ MinMax<T> operator()(const MinMax<T>& a, const MinMax<T>& b) const {
    return minmax_combine(a, b);
  }
};

// Threads per block for rows of N.
inline int row_threads(int64_t N) {
  return N <= 32 ? 32 : N <= 64 ? 64 : N <= 128 ? 128 : 256;
}

template <typename acc_t, typename F>
__device__ MinMax<acc_t> block_minmax(F x, int64_t N, RowScratch<acc_t>& sh) {
  auto m = minmax_identity<acc_t>();
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) m = minmax_combine(m, minmax_of(x(n), n));
  return block_allreduce(m, MinMaxOp{}, sh.mm);
}

template <typename acc_t>
struct SoftmaxKL {
  acc_t lse_p, lse_q, kl;
};

// Log-sum-exp of both logit rows and the KL between their softmaxes.
template <typename acc_t, typename FP, typename FQ>
__device__ SoftmaxKL<acc_t> block_softmax_kl(FP up, FQ uq, int64_t N, bool f2c, RowScratch<acc_t>& sh) {
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  Two<acc_t> m{{-inf, -inf}};
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) m = MaxOp{}(m, Two<acc_t>{{up(n), uq(n)}});
  m = block_allreduce(m, MaxOp{}, sh.two);
  Two<acc_t> z{{acc_t(0), acc_t(0)}};
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    z.v[0] += std::exp(up(n) - m.v[0]);
    z.v[1] += std::exp(uq(n) - m.v[1]);
  }
  z = block_allreduce(z, SumOp{}, sh.two);
  SoftmaxKL<acc_t> r{m.v[0] + std::log(z.v[0]), m.v[1] + std::log(z.v[1]), acc_t(0)};
  Two<acc_t> k{{acc_t(0), acc_t(0)}};
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    k.v[0] += kl_term(up(n) - r.lse_p, uq(n) - r.lse_q, f2c);
  }
  r.kl = block_allreduce(k, SumOp{}, sh.two).v[0];
  return r;
}

// Through norm = (x - min) / D: store(n, (g[n] + min share + max share) / D),
// the shares going to the positions that attain the min and the max.
template <typename acc_t, typename FG, typename FN, typename Store>
__device__ void block_minmax_backward(FG g, FN nf, const MinMax<acc_t>& mm, acc_t D, int64_t N, Store store,
                                      RowScratch<acc_t>& sh) {
  Two<acc_t> s{{acc_t(0), acc_t(0)}};
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const acc_t gn = g(n), v = nf(n);
    s.v[0] += gn * (v - 1);
    s.v[1] -= gn * v;
  }
  s = block_allreduce(s, SumOp{}, sh.two);
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    acc_t v = g(n);
    if (n == mm.imn) v += s.v[0];
    if (n == mm.imx) v += s.v[1];
    store(n, v / D);
  }
}

// The rows of x: its elements over its last dim.
inline int64_t rows_of(const at::Tensor& x) {
  return x.size(-1) == 0 ? 0 : x.numel() / x.size(-1);
}

}  // namespace hcam_ops::cuda
