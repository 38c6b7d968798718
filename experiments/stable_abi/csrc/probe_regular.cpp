// The per-call probe of minmax_normalize_stable.cpp on the ordinary ABI
// (TORCH_LIBRARY, an unboxed at::Tensor kernel): one tensor in, an int out.
// Built by build.py with torch.utils.cpp_extension.load; not a stable build.
#include <torch/library.h>

namespace {

int64_t probe(const at::Tensor& x) {
  return x.dim();
}

}  // namespace

TORCH_LIBRARY(hcam_ops_regular, m) {
  m.def("probe(Tensor x) -> int");
}

TORCH_LIBRARY_IMPL(hcam_ops_regular, CPU, m) {
  m.impl("probe", &probe);
}
