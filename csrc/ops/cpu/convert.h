// Stores from the accumulation type into the tensor's type that GCC can
// vectorise: c10's float -> bfloat16 conversion branches on NaN per element,
// which keeps a whole store loop scalar (the FGD backward in bfloat16 is
// store-bound).
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace hcam_ops::cpu {

// Round to nearest even, NaN to the quiet NaN 0x7fc0: c10::BFloat16(float)'s result.
inline c10::BFloat16 float_to_bfloat16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return c10::BFloat16(static_cast<uint16_t>(nan ? 0x7fc0u : rounded), c10::BFloat16::from_bits());
}

template <typename T, typename A>
inline T to_scalar(A v) {
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    return float_to_bfloat16(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

}  // namespace hcam_ops::cpu
