// CUDA kernels of minmax_normalize: one block per row.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common.h"
#include "../minmax_normalize.h"
#include "launch.h"
#include "row_reductions.cuh"

namespace hcam_ops::cuda {

namespace {

template <typename scalar_t, typename acc_t>
__global__ void minmax_normalize_kernel(const scalar_t* __restrict__ x, int64_t N, acc_t eps,
                                        scalar_t* __restrict__ out) {
  __shared__ RowScratch<acc_t> sh;
  const scalar_t* xr = x + blockIdx.x * N;
  scalar_t* o = out + blockIdx.x * N;
  auto xv = [&](int64_t n) { return static_cast<acc_t>(xr[n]); };
  const auto mm = block_minmax<acc_t>(xv, N, sh);
  const acc_t D = mm.mx - mm.mn + eps;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) o[n] = static_cast<scalar_t>((xv(n) - mm.mn) / D);
}

template <typename scalar_t, typename acc_t>
__global__ void minmax_normalize_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                                                 int64_t N, acc_t eps, scalar_t* __restrict__ gx) {
  __shared__ RowScratch<acc_t> sh;
  const scalar_t* xr = x + blockIdx.x * N;
  const scalar_t* gr = grad + blockIdx.x * N;
  scalar_t* o = gx + blockIdx.x * N;
  auto xv = [&](int64_t n) { return static_cast<acc_t>(xr[n]); };
  const auto mm = block_minmax<acc_t>(xv, N, sh);
  const acc_t D = mm.mx - mm.mn + eps;
  block_minmax_backward<acc_t>([&](int64_t n) { return static_cast<acc_t>(gr[n]); },
                               [&](int64_t n) { return (xv(n) - mm.mn) / D; }, mm, D, N,
                               [&](int64_t n, acc_t v) { o[n] = static_cast<scalar_t>(v); }, sh);
}

void forward(const at::Tensor& x, double eps, const at::Tensor& out) {
  const int64_t N = x.size(-1), rows = rows_of(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax_normalize", [&] {
    launch<minmax_normalize_kernel<scalar_t, math_t>>(checked_grid(rows), row_threads(N), 0, x.data_ptr<scalar_t>(), N,
                                                      static_cast<math_t>(eps), out.data_ptr<scalar_t>());
  });
}

void backward(const at::Tensor& grad, const at::Tensor& x, double eps, const at::Tensor& gx) {
  const int64_t N = x.size(-1), rows = rows_of(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax_normalize_backward", [&] {
    launch<minmax_normalize_backward_kernel<scalar_t, math_t>>(checked_grid(rows), row_threads(N), 0,
                                                               grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), N,
                                                               static_cast<math_t>(eps), gx.data_ptr<scalar_t>());
  });
}

constexpr MinmaxNormalizeKernels kKernels{&forward, &backward};

}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("minmax_normalize", cuda_entry<&hcam_ops::minmax_normalize, &kKernels>());
  m.impl("minmax_normalize_backward", cuda_entry<&hcam_ops::minmax_normalize_backward, &kKernels>());
}

}  // namespace hcam_ops::cuda
