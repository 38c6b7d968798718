// 16-byte vector access for the memory-bound kernels: a pack of VEC elements
// moved as one load or store (VEC = 16 / sizeof(T) for the feature tensors).
#pragma once

#include <cstddef>
#include <cstdint>

namespace hcam_ops::cuda {

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <int VEC, typename T>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}

template <int VEC, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& x) {
  *reinterpret_cast<Pack<T, VEC>*>(p) = x;
}

// Elements of T in one 16-byte access.
template <typename T>
constexpr int pack_width() {
  return sizeof(T) >= 16 ? 1 : static_cast<int>(16 / sizeof(T));
}

inline bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

}  // namespace hcam_ops::cuda
