// The device math the kernels call unqualified, with CUDA's overloads: the
// float overloads of <cmath> in the global namespace (abs(float) must not be
// the C library's int abs), and min/max as CUDA defines them, fmin/fmax for
// floating types (a NaN operand gives the other one) and the usual order
// for integers, over mixed argument types by their common type.
#pragma once

#include <cmath>
#include <cstdlib>
#include <type_traits>

using std::abs;
using std::ceil;
using std::cos;
using std::exp;
using std::fabs;
using std::floor;
using std::log;
using std::log1p;
using std::sin;
using std::sqrt;

namespace hcam_emu::device {

template <bool kMax, typename A, typename B>
inline std::common_type_t<A, B> min_max(A a, B b) {
  using C = std::common_type_t<A, B>;
  const C x = static_cast<C>(a), y = static_cast<C>(b);
  if constexpr (std::is_floating_point_v<C>) {
    return kMax ? std::fmax(x, y) : std::fmin(x, y);
  } else {
    return (kMax ? x < y : y < x) ? y : x;
  }
}

template <typename A, typename B>
constexpr bool kArithmetic = std::is_arithmetic_v<A> && std::is_arithmetic_v<B>;

}  // namespace hcam_emu::device

template <typename A, typename B, std::enable_if_t<hcam_emu::device::kArithmetic<A, B>, int> = 0>
inline std::common_type_t<A, B> max(A a, B b) {
  return hcam_emu::device::min_max<true>(a, b);
}

template <typename A, typename B, std::enable_if_t<hcam_emu::device::kArithmetic<A, B>, int> = 0>
inline std::common_type_t<A, B> min(A a, B b) {
  return hcam_emu::device::min_max<false>(a, b);
}
