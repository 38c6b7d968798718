// Warp- and block-wide reductions by shuffles and shared memory. The block
// form hands every thread the same result, combined in a fixed order, so the
// kernels built on it are deterministic.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace hcam_ops::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// Any trivially copyable value whose size is a multiple of 4 bytes (float,
// double, index/value structs) is shuffled word by word. The words are copied
// out and back with memcpy: reading a T through int* (or the reverse) breaks
// strict aliasing, and a host compiler at -O2 then drops the stores (the
// emulator builds these sources with GCC); nvcc turns the copies into moves.
template <typename T>
__device__ __forceinline__ T shfl_xor(const T& v, int lane_mask) {
  static_assert(sizeof(T) % 4 == 0, "shfl_xor: size must be a multiple of 4 bytes");
  static_assert(std::is_trivially_copyable_v<T>, "shfl_xor: a trivially copyable value");
  constexpr int kWords = static_cast<int>(sizeof(T) / 4);
  int words[kWords];
  memcpy(words, &v, sizeof(T));
#pragma unroll
  for (int i = 0; i < kWords; ++i) words[i] = __shfl_xor_sync(kFullMask, words[i], lane_mask);
  T r;
  memcpy(&r, words, sizeof(T));
  return r;
}

// Butterfly: every lane ends with op over the warp. op must be commutative
// (it is applied as op(mine, theirs) in each lane).
template <typename T, typename Op>
__device__ __forceinline__ T warp_allreduce(T v, Op op) {
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = op(v, shfl_xor(v, m));
  return v;
}

// op over every thread of the block, returned to all of them. Every thread
// must call it; blockDim.x a multiple of 32; smem holds 32 values and is free
// again on return.
template <typename T, typename Op>
__device__ __forceinline__ T block_allreduce(T v, Op op, T* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  v = warp_allreduce(v, op);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  T r = smem[0];
  for (int w = 1; w < warps; ++w) r = op(r, smem[w]);
  __syncthreads();
  return r;
}

// A few values reduced together, to share one pair of barriers.
template <typename T, int K>
struct Vals {
  T v[K];
};

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
  template <typename T, int K>
  __device__ __forceinline__ Vals<T, K> operator()(const Vals<T, K>& a, const Vals<T, K>& b) const {
    Vals<T, K> r;
#pragma unroll
    for (int i = 0; i < K; ++i) r.v[i] = a.v[i] + b.v[i];
    return r;
  }
};

struct MaxOp {
  template <typename T, int K>
  __device__ __forceinline__ Vals<T, K> operator()(const Vals<T, K>& a, const Vals<T, K>& b) const {
    Vals<T, K> r;
#pragma unroll
    for (int i = 0; i < K; ++i) r.v[i] = a.v[i] < b.v[i] ? b.v[i] : a.v[i];
    return r;
  }
};

}  // namespace hcam_ops::cuda
