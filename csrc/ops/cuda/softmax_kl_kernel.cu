// CUDA kernels of softmax_kl: one block per row.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common.h"
#include "../softmax_kl.h"
#include "launch.h"
#include "row_reductions.cuh"

namespace hcam_ops::cuda {

namespace {

template <typename scalar_t, typename acc_t>
__global__ void softmax_kl_kernel(const scalar_t* __restrict__ p, const scalar_t* __restrict__ q, int64_t N,
                                  acc_t inv_t, bool f2c, scalar_t* __restrict__ out) {
  __shared__ RowScratch<acc_t> sh;
  const scalar_t* pr = p + blockIdx.x * N;
  const scalar_t* qr = q + blockIdx.x * N;
  const auto sk = block_softmax_kl<acc_t>([&](int64_t n) { return static_cast<acc_t>(pr[n]) * inv_t; },
                                          [&](int64_t n) { return static_cast<acc_t>(qr[n]) * inv_t; }, N, f2c, sh);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<scalar_t>(sk.kl);
}

template <typename scalar_t, typename acc_t>
__global__ void softmax_kl_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ p,
                                           const scalar_t* __restrict__ q, int64_t N, acc_t inv_t, bool f2c,
                                           scalar_t* __restrict__ gp, scalar_t* __restrict__ gq) {
  __shared__ RowScratch<acc_t> sh;
  const int64_t off = blockIdx.x * N;
  auto up = [&](int64_t n) { return static_cast<acc_t>(p[off + n]) * inv_t; };
  auto uq = [&](int64_t n) { return static_cast<acc_t>(q[off + n]) * inv_t; };
  const auto sk = block_softmax_kl<acc_t>(up, uq, N, f2c, sh);
  const acc_t scale = static_cast<acc_t>(grad[blockIdx.x]) * inv_t;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const acc_t lp = up(n) - sk.lse_p, lq = uq(n) - sk.lse_q;
    gp[off + n] = static_cast<scalar_t>(scale * kl_grad_p(lp, lq, sk.kl, f2c));
    gq[off + n] = static_cast<scalar_t>(scale * kl_grad_q(lp, lq, sk.kl, f2c));
  }
}

void forward(const at::Tensor& p, const at::Tensor& q, double temperature, bool f2c, const at::Tensor& out) {
  const int64_t N = p.size(-1), rows = rows_of(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "softmax_kl", [&] {
    launch<softmax_kl_kernel<scalar_t, math_t>>(checked_grid(rows), row_threads(N), 0, p.data_ptr<scalar_t>(),
                                                q.data_ptr<scalar_t>(), N, static_cast<math_t>(1.0 / temperature), f2c,
                                                out.data_ptr<scalar_t>());
  });
}

void backward(const at::Tensor& grad, const at::Tensor& p, const at::Tensor& q, double temperature, bool f2c,
              const at::Tensor& gp, const at::Tensor& gq) {
  const int64_t N = p.size(-1), rows = rows_of(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "softmax_kl_backward", [&] {
    launch<softmax_kl_backward_kernel<scalar_t, math_t>>(
        checked_grid(rows), row_threads(N), 0, grad.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(),
        q.data_ptr<scalar_t>(), N, static_cast<math_t>(1.0 / temperature), f2c, gp.data_ptr<scalar_t>(),
        gq.data_ptr<scalar_t>());
  });
}

constexpr SoftmaxKlKernels kKernels{&forward, &backward};

}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("softmax_kl", cuda_entry<&hcam_ops::softmax_kl, &kKernels>());
  m.impl("softmax_kl_backward", cuda_entry<&hcam_ops::softmax_kl_backward, &kKernels>());
}

}  // namespace hcam_ops::cuda
