#include "common.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <memory>
#include <string>

namespace hcam_ops {

void check_float_type(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(is_float_type(t.scalar_type()), op, ": ", name, " must be float16, bfloat16, float32 or float64, got ",
              t.scalar_type());
}

namespace emulation {

namespace {
thread_local bool tls_active = false;
}  // namespace

bool active() {
  return tls_active;
}

void set_active(bool on) {
  tls_active = on;
}

}  // namespace emulation

namespace {

void no_cuda_kernel(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK(false, op.schema().name(), ": this build of hcam_ops has no CUDA kernels");
}

}  // namespace

void register_missing_cuda_kernels() {
  // Kept for the life of the process: the registrations end with the Library.
  static std::unique_ptr<torch::Library> lib;
  if (lib) return;
  lib = std::make_unique<torch::Library>(torch::Library::IMPL, "hcam_ops", c10::DispatchKey::CUDA, __FILE__, __LINE__);
  auto& dispatcher = c10::Dispatcher::singleton();
  for (const auto& name : dispatcher.getAllOpNames()) {
    if (name.name.rfind("hcam_ops::", 0) != 0) continue;
    const auto op = dispatcher.findOp(name);
    if (op && !op->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) {
      auto short_name = name.name.substr(std::string("hcam_ops::").size());
      if (!name.overload_name.empty()) short_name += "." + name.overload_name;
      lib->impl(short_name.c_str(), torch::CppFunction::makeFromBoxedFunction<&no_cuda_kernel>());
    }
  }
}

}  // namespace hcam_ops
