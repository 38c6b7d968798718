// CPU kernels of minmax_normalize: one task per block of rows.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <vector>

#include "../common.h"
#include "../minmax_normalize.h"
#include "isa.h"
#include "row_reductions.h"

namespace hcam_ops::cpu {

namespace CPU_CAPABILITY {

namespace {

template <typename scalar_t>
void minmax_normalize_impl(const at::Tensor& x, double eps, const at::Tensor& out) {
  using acc_t = math_t;
  const int64_t N = x.size(-1), rows = x.numel() / N;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = xp + r * N;
      auto xv = [&](int64_t n) { return static_cast<acc_t>(xr[n]); };
      const auto mm = row_minmax<acc_t>(xv, N);
      const acc_t D = mm.mx - mm.mn + static_cast<acc_t>(eps);
      for (int64_t n = 0; n < N; ++n) op[r * N + n] = static_cast<scalar_t>((xv(n) - mm.mn) / D);
    }
  });
}

template <typename scalar_t>
void minmax_normalize_backward_impl(const at::Tensor& grad, const at::Tensor& x, double eps, const at::Tensor& gx) {
  using acc_t = math_t;
  const int64_t N = x.size(-1), rows = x.numel() / N;
  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* gp = grad.data_ptr<scalar_t>();
  scalar_t* op = gx.data_ptr<scalar_t>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(N);
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* xr = xp + r * N;
      const scalar_t* gr = gp + r * N;
      auto xv = [&](int64_t n) { return static_cast<acc_t>(xr[n]); };
      const auto mm = row_minmax<acc_t>(xv, N);
      const acc_t D = mm.mx - mm.mn + static_cast<acc_t>(eps);
      minmax_backward_row<acc_t>([&](int64_t n) { return static_cast<acc_t>(gr[n]); },
                                 [&](int64_t n) { return (xv(n) - mm.mn) / D; }, mm, D, N,
                                 [&](int64_t n, acc_t v, bool add = false) { acc[n] = add ? acc[n] + v : v; });
      for (int64_t n = 0; n < N; ++n) op[r * N + n] = static_cast<scalar_t>(acc[n]);
    }
  });
}

void forward(const at::Tensor& x, double eps, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax_normalize",
                                  [&] { minmax_normalize_impl<scalar_t>(x, eps, out); });
}

void backward(const at::Tensor& grad, const at::Tensor& x, double eps, const at::Tensor& gx) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax_normalize_backward",
                                  [&] { minmax_normalize_backward_impl<scalar_t>(grad, x, eps, gx); });
}

}  // namespace

}  // namespace CPU_CAPABILITY

template <Isa>
MinmaxNormalizeKernels minmax_normalize_kernels();

template <>
MinmaxNormalizeKernels minmax_normalize_kernels<Isa::CPU_CAPABILITY>() {
  return {&CPU_CAPABILITY::forward, &CPU_CAPABILITY::backward};
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const MinmaxNormalizeKernels kKernels = HCAM_CPU_DISPATCH(minmax_normalize_kernels)();
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("minmax_normalize", device_entry<&hcam_ops::minmax_normalize, &kKernels>);
  m.impl("minmax_normalize_backward", device_entry<&hcam_ops::minmax_normalize_backward, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
