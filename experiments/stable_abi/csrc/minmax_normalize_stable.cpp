// hcam_ops_stable: minmax_normalize (forward and backward, CPU) on the LibTorch
// stable ABI, the experiment of docs/stable_abi.md. Same schema, checks and
// math as hcam_ops::minmax_normalize (csrc/ops/minmax_normalize.cpp,
// csrc/ops/cpu/minmax_normalize_kernel.cpp, docs/ops/cam.md#minmax_normalize),
// registered as hcam_ops_stable::minmax_normalize[_backward].
//
// Built with -DTORCH_TARGET_VERSION=0x020a000000000000 (torch 2.10): only
// torch/csrc/stable, torch/headeronly and the C shim may be included; every
// ATen and c10 header stops the build with #error under that define.
#include <Python.h>  // Py_LIMITED_API (setup.py): only the module stub below

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>

#include "stable_kernels.h"

namespace hcam_ops_stable {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

namespace {

// "DEFAULT" or "AVX512": the highest level compiled (setup.py) and supported
// by the CPU, lowered by HCAM_OPS_CPU_CAPABILITY=default (as hcam_ops._C reads
// it; "avx2" also gives DEFAULT here, there being no AVX2 copy).
// at::get_cpu_capability() is not in the stable ABI: the CPU is asked directly.
const char* detect_level() {
#ifdef HCAM_STABLE_AVX512
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (const char* env = std::getenv("HCAM_OPS_CPU_CAPABILITY"); env != nullptr && *env != '\0') {
    std::string s(env);
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::toupper(c); });
    if (s != "AVX512") avx512 = false;
  }
  if (avx512) return "AVX512";
#endif
  return "DEFAULT";
}

const char* level() {
  static const char* const name = detect_level();
  return name;
}

const Kernels& kernels() {
#ifdef HCAM_STABLE_AVX512
  static const Kernels& k = std::string(level()) == "AVX512" ? kernels_AVX512() : kernels_DEFAULT();
  return k;
#else
  return kernels_DEFAULT();
#endif
}

std::string shape_of(const Tensor& x) {
  std::ostringstream s;
  s << "[";
  const auto sizes = x.sizes();
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

bool is_float_type(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::Half || t == ScalarType::BFloat16;
}

// csrc/ops/cam_features.cpp's check_rows / check_same_rows. STD_TORCH_CHECK
// raises std::runtime_error (RuntimeError in Python), its message prefixed
// with the function, file and line.
void check_rows(const Tensor& x, const char* op) {
  STD_TORCH_CHECK(is_float_type(x.scalar_type()), op, ": expected float16, bfloat16, float32 or float64, got ",
                  x.scalar_type());
  STD_TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, op, ": expected a non-empty last dimension, got shape ",
                  shape_of(x));
}

void check_same_rows(const Tensor& p, const Tensor& q, const char* op) {
  check_rows(p, op);
  STD_TORCH_CHECK(p.sizes().equals(q.sizes()), op, ": the two logit tensors differ in shape: ", shape_of(p), " and ",
                  shape_of(q));
  STD_TORCH_CHECK(p.scalar_type() == q.scalar_type(), op, ": the two logit tensors differ in dtype: ",
                  p.scalar_type(), " and ", q.scalar_type());
  STD_TORCH_CHECK(p.device() == q.device(), op, ": the two logit tensors are on different devices");
}

// Tensor::contiguous() answers a contiguous tensor without a dispatcher
// call; torch::stable::contiguous always makes one (by name, boxed).
Tensor as_contiguous(const Tensor& x) {
  return x.is_contiguous() ? x : torch::stable::contiguous(x);
}

// The drivers of csrc/ops/minmax_normalize.cpp. No DeviceGuard: these are
// CPU kernels (a CUDA port would take torch::stable::accelerator::DeviceGuard).
Tensor minmax_normalize(const Tensor& x, double eps) {
  check_rows(x, "minmax_normalize");
  const Tensor xc = as_contiguous(x);
  Tensor out = torch::stable::empty_like(xc);
  if (xc.numel() > 0) kernels().forward(xc, eps, out);
  return out;
}

Tensor minmax_normalize_backward(const Tensor& grad, const Tensor& x, double eps) {
  check_same_rows(x, grad, "minmax_normalize_backward");
  const Tensor xc = as_contiguous(x), gc = as_contiguous(grad);
  Tensor gx = torch::stable::empty_like(xc);
  if (xc.numel() > 0) kernels().backward(gc, xc, eps, gx);
  return gx;
}

// The per-call probe: one tensor in, an int out, nothing else (the cost of
// the boxed stable call itself; probe_regular.cpp is the same on the
// ordinary ABI).
int64_t probe(const Tensor& x) {
  return x.dim();
}

// The probe plus one allocation through the ATen dispatcher: what
// torch::stable::empty_like costs over at::empty_like.
Tensor probe_empty_like(const Tensor& x) {
  return torch::stable::empty_like(x);
}

}  // namespace

STABLE_TORCH_LIBRARY(hcam_ops_stable, m) {
  m.def("minmax_normalize(Tensor x, float eps) -> Tensor");
  m.def("minmax_normalize_backward(Tensor grad, Tensor x, float eps) -> Tensor");
  m.def("probe(Tensor x) -> int");
  m.def("probe_empty_like(Tensor x) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(hcam_ops_stable, CPU, m) {
  m.impl("minmax_normalize", TORCH_BOX(&minmax_normalize));
  m.impl("minmax_normalize_backward", TORCH_BOX(&minmax_normalize_backward));
  m.impl("probe", TORCH_BOX(&probe));
  m.impl("probe_empty_like", TORCH_BOX(&probe_empty_like));
}

}  // namespace hcam_ops_stable

// The module stub: importing hcam_ops_stable._C loads this library, whose
// static initialisers above register the operators. Limited C API only, so
// the one .abi3.so serves every Python >= 3.10 (torch's Py_LIMITED_API).
namespace {

PyObject* cpu_capability(PyObject*, PyObject*) {
  return PyUnicode_FromString(hcam_ops_stable::level());
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS, "The level the kernels run at: DEFAULT or AVX512."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
