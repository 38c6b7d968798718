// What every op shares: the float dtypes the kernels take, the accumulation
// dtype, and how a device's kernels are bound to an op's device-independent
// driver (the torchvision csrc/ops layout: <op>.cpp holds the schema and the
// driver, cpu/<op>_kernel.cpp and cuda/<op>_kernel.cu register the kernels).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <type_traits>

namespace hcam_ops {

// float16, bfloat16, float32 or float64: the dtypes every kernel is built for.
inline bool is_float_type(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Raises "<op>: <name> must be float16, bfloat16, float32 or float64, got <dtype>".
void check_float_type(const at::Tensor& t, const char* op, const char* name);

// The kernels' accumulation dtype, at::opmath_type's rule: float64 for
// float64, float32 for the other float dtypes.
inline at::ScalarType acc_type_of(at::ScalarType t) {
  return at::toOpMathType(t);
}

// For each hcam_ops operator that has no CUDA kernel (every one, in a build
// without CUDA), a CUDA kernel that raises "<op>: this build of hcam_ops has
// no CUDA kernels" instead of the dispatcher's generic "could not run ... with
// arguments from the 'CUDA' backend". Called once, after every operator of
// the library is registered (module.cpp, when Python imports hcam_ops._C).
void register_missing_cuda_kernels();

// Emulated CUDA (a build with HCAM_OPS_CUDA=emulate, csrc/emulator): the
// CUDA kernels compiled as host code, reached from host tensors while this
// thread's switch is on (hcam_ops.testing.emulated_cuda() sets it). Each
// kernel struct type has one CUDA table, which cuda_entry records.
namespace emulation {

// Whether this thread's hcam_ops calls on host tensors run the CUDA kernels.
bool active();
void set_active(bool on);

template <typename K>
inline const K* cuda_kernels = nullptr;

}  // namespace emulation

// The device's entry point of an op: the driver `R driver(const K* kernels,
// Args...)` of <op>.cpp (checks, allocation, the device-independent steps)
// bound to one device's kernels, a static struct of function pointers (its
// address is the template argument; the CPU's is filled in at load time with
// the active level's kernels). What cpu/<op>_kernel.cpp registers:
//   m.impl("fgd_masks", device_entry<&hcam_ops::fgd_masks, &kKernels>);
// and cuda/<op>_kernel.cu, through cuda_entry:
//   m.impl("fgd_masks", cuda_entry<&hcam_ops::fgd_masks, &kKernels>());
template <auto Driver, auto Kernels, typename = decltype(Driver)>
struct DeviceEntry;

template <auto Driver, auto Kernels, typename R, typename K, typename... Args>
struct DeviceEntry<Driver, Kernels, R (*)(K, Args...)> {
  static R call(Args... args) {
#ifdef HCAM_OPS_EMULATED_CUDA
    using Table = std::remove_cv_t<std::remove_pointer_t<K>>;
    if (emulation::active() && emulation::cuda_kernels<Table> != nullptr) {
      return Driver(emulation::cuda_kernels<Table>, args...);
    }
#endif
    return Driver(Kernels, args...);
  }
};

template <auto Driver, auto Kernels>
constexpr auto device_entry = &DeviceEntry<Driver, Kernels>::call;

// The CUDA entry point. In an emulated build the kernels are host code: the
// table is recorded for the host entry points to switch to, and CUDA tensors
// get an error instead (the kernels would read device memory from the host).
template <auto Driver, typename = decltype(Driver)>
struct EmulatorTakesNoCudaTensors;

template <auto Driver, typename R, typename K, typename... Args>
struct EmulatorTakesNoCudaTensors<Driver, R (*)(K, Args...)> {
  static R call(Args...) {
    C10_THROW_ERROR(Error,
                    "hcam_ops: this build runs its CUDA kernels on the emulator, on CPU tensors inside "
                    "hcam_ops.testing.emulated_cuda(); for CUDA tensors build it with HCAM_OPS_CUDA=1");
  }
};

template <auto Driver, auto Kernels>
auto cuda_entry() {
#ifdef HCAM_OPS_EMULATED_CUDA
  using Table = std::remove_cv_t<std::remove_pointer_t<decltype(Kernels)>>;
  emulation::cuda_kernels<Table> = Kernels;
  return &EmulatorTakesNoCudaTensors<Driver>::call;
#else
  return device_entry<Driver, Kernels>;
#endif
}

}  // namespace hcam_ops
