// CUDA's integer, warp and atomic intrinsics for the emulator (the prelude
// maps __shfl_xor_sync and __ballot_sync onto these with their call site).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "runtime.h"
#include "traffic.h"

namespace hcam_emu::device {

// __shfl_xor_sync on any 4- or 8-byte value (CUDA's overloads: int,
// unsigned, long long, float, double, ...), moved by its bytes.
template <typename T>
T shfl_xor_sync(const char* file, int line, unsigned mask, T var, int lane_mask, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && (sizeof(T) == 4 || sizeof(T) == 8),
                "__shfl_xor_sync: a 4- or 8-byte value");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = ::hcam_emu::shfl_xor(mask, bits, lane_mask, width, file, line);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

}  // namespace hcam_emu::device

inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}

inline int __popcll(unsigned long long x) {
  return __builtin_popcountll(x);
}

// Rounded products that the compiler may not contract into a fused
// multiply-add (the emulated sources build without FMA instructions, and
// these stay plain products whatever the flags).
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}

inline double __dmul_rn(double a, double b) {
  volatile double r = a * b;
  return r;
}

// atomicAdd: blocks run on several OS threads, so a real atomic; returns the
// old value. One read-modify-write access for the traffic counters (the
// compare-exchange loop starts from a guess rather than a load, so that the
// traced build sees no separate load).
template <typename T>
inline __attribute__((always_inline)) T atomicAdd(T* address, T value) {
  static_assert(std::is_arithmetic_v<T>, "atomicAdd: an arithmetic type");
#ifdef HCAM_OPS_EMULATOR_TRACED
  ::hcam_emu::traffic::atomic(address, sizeof(T));
#endif
  if constexpr (std::is_integral_v<T>) {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
  } else {
    T old = T(0);
    while (!__atomic_compare_exchange_n(address, &old, old + value, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
  }
}
