// 16-byte vector access for the memory-bound kernels: a pack of VEC elements
// moved as one load or store (VEC = 16 / sizeof(T) for the feature tensors).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace hcam_ops::cuda {

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// On the traced emulator (docs/traffic.md) a pack is one recorded access:
// the host compiler would split it into scalar moves, each counted alone.
template <int VEC, typename T>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
#ifdef HCAM_OPS_EMULATOR_TRACED
  Pack<T, VEC> x;
  hcam_emu::traffic::load_bytes(&x, p, sizeof(x));
  return x;
#else
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
#endif
}

template <int VEC, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& x) {
#ifdef HCAM_OPS_EMULATOR_TRACED
  hcam_emu::traffic::store_bytes(p, &x, sizeof(x));
#else
  *reinterpret_cast<Pack<T, VEC>*>(p) = x;
#endif
}

// Elements of T in one 16-byte access.
template <typename T>
constexpr int pack_width() {
  return sizeof(T) >= 16 ? 1 : static_cast<int>(16 / sizeof(T));
}

inline bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Whether rows of n elements starting at each of ptrs can all be read in
// packs of pack_width<T>() (n a multiple of it, every base 16-byte aligned).
template <typename T>
bool packs_fit(int64_t n, std::initializer_list<const void*> ptrs) {
  constexpr int kVec = pack_width<T>();
  if (n % kVec != 0) return false;
  for (const void* p : ptrs) {
    if (!aligned_to(p, sizeof(T) * kVec)) return false;
  }
  return true;
}

// VEC values of a row from `pos`, converted to acc_t: one pack when `packed`
// and the pack lies within the row's n elements, else element by element
// with zeros past n.
template <int VEC, typename T, typename acc_t>
__device__ __forceinline__ void load_pack_or_zeros(const T* __restrict__ row, int64_t pos, int64_t n, bool packed,
                                                   acc_t (&out)[VEC]) {
  if (packed && pos + VEC <= n) {
    const auto p = load_pack<VEC>(row + pos);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = static_cast<acc_t>(p.v[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = pos + i < n ? static_cast<acc_t>(row[pos + i]) : acc_t(0);
  }
}

}  // namespace hcam_ops::cuda
