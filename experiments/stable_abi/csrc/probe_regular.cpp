// The per-call probes of minmax_normalize_stable.cpp on the ordinary ABI
// (TORCH_LIBRARY, unboxed at::Tensor kernels): one tensor in, an int out;
// and the same plus one at::empty_like.
// Built by build.py with torch.utils.cpp_extension.load; not a stable build.
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

namespace {

int64_t probe(const at::Tensor& x) {
  return x.dim();
}

at::Tensor probe_empty_like(const at::Tensor& x) {
  return at::empty_like(x);
}

}  // namespace

TORCH_LIBRARY(hcam_ops_regular, m) {
  m.def("probe(Tensor x) -> int");
  m.def("probe_empty_like(Tensor x) -> Tensor");
}

TORCH_LIBRARY_IMPL(hcam_ops_regular, CPU, m) {
  m.impl("probe", &probe);
  m.impl("probe_empty_like", &probe_empty_like);
}
