// The emulator's stand-in for the CUDA runtime header: the vector types of
// the launch configuration and the runtime calls the kernels' host code makes
// (device attributes, kernel attributes), answered as an H200 would.
#pragma once

#include <cstddef>

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidDevice = 101 };
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxGridDimY = 6,
  cudaDevAttrMaxGridDimZ = 7,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaFuncAttributes {
  size_t sharedSizeBytes;  // static shared memory: not measured by the emulator, 0
  size_t constSizeBytes;
  size_t localSizeBytes;
  int maxThreadsPerBlock;
  int numRegs;
  int ptxVersion;
  int binaryVersion;
  int cacheModeCA;
  int maxDynamicSharedSizeBytes;
  int preferredShmemCarveout;
};

namespace hcam_emu {
cudaError_t get_device_count(int* count);
cudaError_t get_device(int* device);
cudaError_t device_attribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t func_attributes(cudaFuncAttributes* attr, const void* func);
cudaError_t set_func_attribute(const void* func, cudaFuncAttribute attr, int value);
const char* error_string(cudaError_t error);
}  // namespace hcam_emu

inline cudaError_t cudaGetDeviceCount(int* count) {
  return hcam_emu::get_device_count(count);
}
inline cudaError_t cudaGetDevice(int* device) {
  return hcam_emu::get_device(device);
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  return hcam_emu::device_attribute(value, attr, device);
}
template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* func) {
  return hcam_emu::func_attributes(attr, reinterpret_cast<const void*>(func));
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* func, cudaFuncAttribute attr, int value) {
  return hcam_emu::set_func_attribute(reinterpret_cast<const void*>(func), attr, value);
}
inline const char* cudaGetErrorString(cudaError_t error) {
  return hcam_emu::error_string(error);
}
inline cudaError_t cudaGetLastError() {
  return cudaSuccess;  // an emulated launch that fails raises at once
}
