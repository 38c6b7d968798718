// The CPU kernels of minmax_normalize on the stable ABI, compiled once per
// instruction-set level (setup.py: CPU_CAPABILITY=DEFAULT with the flags of
// the whole extension, CPU_CAPABILITY=AVX512 with -mavx512f ..., as
// hcam_ops._C compiles csrc/ops/cpu/*_kernel.cpp). The row loops are
// csrc/ops/cpu/minmax_normalize_kernel.cpp's, unchanged; what differs is
// around them: torch::stable::parallel_for for at::parallel_for,
// THO_DISPATCH_V2 for AT_DISPATCH_FLOATING_TYPES_AND2, and
// torch::stable::Tensor's const_data_ptr / mutable_data_ptr.
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/Dispatch_v2.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/NumericUtils.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "stable_kernels.h"

// In the namespace of the level being compiled: each level's objects get
// their own copy of every function here (no inline function shared by two
// levels, where the linker would keep one of them).
namespace hcam_ops_stable::CPU_CAPABILITY {

namespace {

// The row math of csrc/ops/cam_math.h and csrc/ops/cpu/row_reductions.h,
// copied: those headers include <ATen/NumericUtils.h> and
// <c10/macros/Macros.h>, which stop a build under TORCH_TARGET_VERSION. The
// only change is torch::headeronly::_isnan for at::_isnan (the same code).
using math_t = double;

template <typename T>
struct MinMax {
  T mn;
  T mx;
  int64_t imn;
  int64_t imx;
};

template <typename T>
inline MinMax<T> minmax_identity() {
  return {std::numeric_limits<T>::infinity(), -std::numeric_limits<T>::infinity(), INT64_MAX, INT64_MAX};
}

template <typename T, bool kLess>
inline bool replaces(T a, int64_t ia, T b, int64_t ib) {
  const bool a_nan = torch::headeronly::_isnan(a), b_nan = torch::headeronly::_isnan(b);
  if (a_nan || b_nan) {
    return b_nan && (!a_nan || ib < ia);
  }
  const bool better = kLess ? (b < a) : (b > a);
  return better || (b == a && ib < ia);
}

template <typename T>
inline MinMax<T> minmax_combine(MinMax<T> a, const MinMax<T>& b) {
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
inline MinMax<T> minmax_of(T v, int64_t i) {
  return {v, v, i, i};
}

template <typename acc_t, typename F>
MinMax<acc_t> row_minmax(F x, int64_t N) {
  auto m = minmax_identity<acc_t>();
  for (int64_t n = 0; n < N; ++n) m = minmax_combine(m, minmax_of(x(n), n));
  return m;
}

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

template <typename scalar_t>
void forward_impl(const torch::stable::Tensor& x, double eps, const torch::stable::Tensor& out) {
  using acc_t = math_t;
  const int64_t N = x.size(-1), rows = x.numel() / N;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  torch::stable::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = xp + r * N;
      auto xv = [&](int64_t n) { return static_cast<acc_t>(xr[n]); };
      const auto mm = row_minmax<acc_t>(xv, N);
      const acc_t D = mm.mx - mm.mn + static_cast<acc_t>(eps);
      for (int64_t n = 0; n < N; ++n) op[r * N + n] = static_cast<scalar_t>((xv(n) - mm.mn) / D);
    }
  });
}

template <typename scalar_t>
void backward_impl(const torch::stable::Tensor& grad, const torch::stable::Tensor& x, double eps,
                   const torch::stable::Tensor& gx) {
  using acc_t = math_t;
  const int64_t N = x.size(-1), rows = x.numel() / N;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  scalar_t* op = gx.mutable_data_ptr<scalar_t>();
  torch::stable::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(N);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = xp + r * N;
      const scalar_t* gr = gp + r * N;
      auto xv = [&](int64_t n) { return static_cast<acc_t>(xr[n]); };
      const auto mm = row_minmax<acc_t>(xv, N);
      const acc_t D = mm.mx - mm.mn + static_cast<acc_t>(eps);
      minmax_backward_row<acc_t>([&](int64_t n) { return static_cast<acc_t>(gr[n]); },
                                 [&](int64_t n) { return (xv(n) - mm.mn) / D; }, mm, D, N,
                                 [&](int64_t n, acc_t v, bool add = false) { acc[n] = add ? acc[n] + v : v; });
      for (int64_t n = 0; n < N; ++n) op[r * N + n] = static_cast<scalar_t>(acc[n]);
    }
  });
}

// AT_DISPATCH_FLOATING_TYPES_AND2(kHalf, kBFloat16, ...) in header-only form.
void forward(const torch::stable::Tensor& x, double eps, const torch::stable::Tensor& out) {
  THO_DISPATCH_V2(
      x.scalar_type(), "minmax_normalize", AT_WRAP([&] { forward_impl<scalar_t>(x, eps, out); }),
      AT_EXPAND(AT_FLOATING_TYPES), torch::headeronly::ScalarType::Half, torch::headeronly::ScalarType::BFloat16);
}

void backward(const torch::stable::Tensor& grad, const torch::stable::Tensor& x, double eps,
              const torch::stable::Tensor& gx) {
  THO_DISPATCH_V2(
      x.scalar_type(), "minmax_normalize_backward", AT_WRAP([&] { backward_impl<scalar_t>(grad, x, eps, gx); }),
      AT_EXPAND(AT_FLOATING_TYPES), torch::headeronly::ScalarType::Half, torch::headeronly::ScalarType::BFloat16);
}

}  // namespace

}  // namespace hcam_ops_stable::CPU_CAPABILITY

namespace hcam_ops_stable {

#define HCAM_STABLE_CONCAT_(a, b) a##b
#define HCAM_STABLE_CONCAT(a, b) HCAM_STABLE_CONCAT_(a, b)

const Kernels& HCAM_STABLE_CONCAT(kernels_, CPU_CAPABILITY)() {
  static const Kernels k{&CPU_CAPABILITY::forward, &CPU_CAPABILITY::backward};
  return k;
}

}  // namespace hcam_ops_stable
