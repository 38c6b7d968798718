// A thin layer over at::vec::Vectorized for the CPU kernels: loads of any
// floating dtype into vectors of its accumulation type, and a horizontal sum.
// Included only by the per-level kernel sources (isa.h): Vectorized has the
// width of the level being compiled (4 floats baseline, 8 AVX2, 16 AVX-512).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <tuple>
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

// The first `count` elements from p (all acc_vec<scalar_t>::size() of them
// when count reaches it, else the rest zero): a row's vectors and its tail
// through one call that does not read past the row's end. scalar_t may be
// the accumulation type itself (a plain load).
template <typename scalar_t>
inline acc_vec<scalar_t> load_acc(const scalar_t* p, int64_t count) {
  if (count >= acc_vec<scalar_t>::size()) return load_acc(p);
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    // A reduced-precision vector holds twice the floats: the first half is ours.
    return std::get<0>(at::vec::convert_to_float<scalar_t>(at::vec::Vectorized<scalar_t>::loadu(p, count)));
  } else {
    return at::vec::Vectorized<scalar_t>::loadu(p, count);
  }
}

// Stores acc_vec<scalar_t>::size() (or `count`) elements narrowed to scalar_t
// (bfloat16 / half: round to nearest even, as c10's scalar conversion does).
template <typename scalar_t>
inline void store_acc(scalar_t* p, const acc_vec<scalar_t>& v, int64_t count = acc_vec<scalar_t>::size()) {
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    at::vec::convert_from_float<scalar_t>(v, v).store(p, count);
  } else {
    v.store(p, count);
  }
}

// Two vectors' worth (2 * acc_vec<scalar_t>::size() elements) narrowed and
// stored at once: for bfloat16 / half one conversion and one full-width
// store, where store_acc converts a duplicated vector and stores half of it.
// The same bits as two store_acc calls.
template <typename scalar_t>
inline void store_acc2(scalar_t* p, const acc_vec<scalar_t>& v0, const acc_vec<scalar_t>& v1) {
  if constexpr (at::vec::is_reduced_floating_point_v<scalar_t>) {
    at::vec::convert_from_float<scalar_t>(v0, v1).store(p);
  } else {
    v0.store(p);
    v1.store(p + acc_vec<scalar_t>::size());
  }
}

// Sum of the lanes.
template <typename acc_t>
inline acc_t sum_lanes(const at::vec::Vectorized<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](auto& a, auto& b) { return a + b; }, v);
}

}  // namespace hcam_ops::cpu::CPU_CAPABILITY
