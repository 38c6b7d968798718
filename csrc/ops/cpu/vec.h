// A thin layer over at::vec::Vectorized for the CPU kernels: loads of any
// floating dtype into vectors of its accumulation type, and a horizontal sum.
// Included only by the per-level kernel sources (isa.h): Vectorized has the
// width of the level being compiled (4 floats baseline, 8 AVX2, 16 AVX-512).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

namespace hcam_ops::cpu::CPU_CAPABILITY {

template <typename scalar_t>
using acc_vec = at::vec::Vectorized<at::opmath_type<scalar_t>>;

// acc_vec<scalar_t>::size() elements from p, widened to the accumulation type
// (bfloat16 / half: the exact widening, in registers).
template <typename scalar_t>
inline acc_vec<scalar_t> load_acc(const scalar_t* p) {
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    at::vec::Vectorized<float> v;
    at::vec::load_to_float(p, v);
    return v;
  } else {
    return at::vec::Vectorized<scalar_t>::loadu(p);
  }
}

// Sum of the lanes.
template <typename acc_t>
inline acc_t sum_lanes(const at::vec::Vectorized<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](auto& a, auto& b) { return a + b; }, v);
}

}  // namespace hcam_ops::cpu::CPU_CAPABILITY
