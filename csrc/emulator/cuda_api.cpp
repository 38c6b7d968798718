// The CUDA runtime calls of the kernels' host code, answered as one NVIDIA
// H200 (device 0) would answer them.
#include <mutex>
#include <unordered_map>

#include "func_attributes.h"
#include "runtime.h"

namespace hcam_emu {

namespace {

std::mutex attr_mutex;
std::unordered_map<const void*, int>& dynamic_limits() {
  static std::unordered_map<const void*, int> limits;
  return limits;
}

}  // namespace

int max_dynamic_shared(const void* func) {
  const std::lock_guard<std::mutex> lock(attr_mutex);
  const auto it = dynamic_limits().find(func);
  return it == dynamic_limits().end() ? Limits::kSharedPerBlock : it->second;
}

cudaError_t get_device_count(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t get_device(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t device_attribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      *value = Limits::kThreadsPerBlock;
      return cudaSuccess;
    case cudaDevAttrMaxGridDimY:
    case cudaDevAttrMaxGridDimZ:
      *value = static_cast<int>(Limits::kGridDimYZ);
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = Limits::kSharedPerBlock;
      return cudaSuccess;
    case cudaDevAttrWarpSize:
      *value = Limits::kWarp;
      return cudaSuccess;
    case cudaDevAttrMultiProcessorCount:
      *value = Limits::kSms;
      return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = Limits::kSharedPerBlockOptin;
      return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

cudaError_t func_attributes(cudaFuncAttributes* attr, const void* func) {
  *attr = cudaFuncAttributes{};
  attr->maxThreadsPerBlock = Limits::kThreadsPerBlock;
  attr->maxDynamicSharedSizeBytes = max_dynamic_shared(func);
  return cudaSuccess;
}

cudaError_t set_func_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > Limits::kSharedPerBlockOptin) {
    return cudaErrorInvalidValue;
  }
  const std::lock_guard<std::mutex> lock(attr_mutex);
  dynamic_limits()[func] = value;
  return cudaSuccess;
}

const char* error_string(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidDevice:
      return "invalid device ordinal";
  }
  return "unknown error";
}

}  // namespace hcam_emu
