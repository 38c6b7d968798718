// CPU kernels of softmax_kl: one task per block of rows.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common.h"
#include "../softmax_kl.h"
#include "convert.h"
#include "isa.h"
#include "row_reductions.h"

namespace hcam_ops::cpu {

namespace CPU_CAPABILITY {

namespace {

template <typename scalar_t>
void softmax_kl_impl(const at::Tensor& p, const at::Tensor& q, double temperature, bool f2c, const at::Tensor& out) {
  using acc_t = math_t;
  const int64_t N = p.size(-1), rows = p.numel() / N;
  const acc_t inv_t = static_cast<acc_t>(1.0 / temperature);
  const scalar_t* pp = p.data_ptr<scalar_t>();
  const scalar_t* qp = q.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const auto sk =
          row_softmax_kl<acc_t>([&](int64_t n) { return static_cast<acc_t>(pp[r * N + n]) * inv_t; },
                                [&](int64_t n) { return static_cast<acc_t>(qp[r * N + n]) * inv_t; }, N, f2c);
      op[r] = static_cast<scalar_t>(sk.kl);
    }
  });
}

template <typename scalar_t>
void softmax_kl_backward_impl(const at::Tensor& grad, const at::Tensor& p, const at::Tensor& q, double temperature,
                              bool f2c, const at::Tensor& gp, const at::Tensor& gq) {
  using acc_t = math_t;
  const int64_t N = p.size(-1), rows = p.numel() / N;
  const acc_t inv_t = static_cast<acc_t>(1.0 / temperature);
  const scalar_t* pp = p.data_ptr<scalar_t>();
  const scalar_t* qp = q.data_ptr<scalar_t>();
  const scalar_t* g = grad.data_ptr<scalar_t>();
  scalar_t* gpp = gp.data_ptr<scalar_t>();
  scalar_t* gqp = gq.data_ptr<scalar_t>();
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      auto up = [&](int64_t n) { return static_cast<acc_t>(pp[r * N + n]) * inv_t; };
      auto uq = [&](int64_t n) { return static_cast<acc_t>(qp[r * N + n]) * inv_t; };
      const auto sk = row_softmax_kl<acc_t>(up, uq, N, f2c);
      const acc_t scale = static_cast<acc_t>(g[r]) * inv_t;
      for (int64_t n = 0; n < N; ++n) {
        const acc_t lp = up(n) - sk.lse_p, lq = uq(n) - sk.lse_q;
        gpp[r * N + n] = to_scalar<scalar_t>(scale * kl_grad_p(lp, lq, sk.kl, f2c));
        gqp[r * N + n] = to_scalar<scalar_t>(scale * kl_grad_q(lp, lq, sk.kl, f2c));
      }
    }
  });
}

void forward(const at::Tensor& p, const at::Tensor& q, double temperature, bool f2c, const at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "softmax_kl",
                                  [&] { softmax_kl_impl<scalar_t>(p, q, temperature, f2c, out); });
}

void backward(const at::Tensor& grad, const at::Tensor& p, const at::Tensor& q, double temperature, bool f2c,
              const at::Tensor& gp, const at::Tensor& gq) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "softmax_kl_backward",
                                  [&] { softmax_kl_backward_impl<scalar_t>(grad, p, q, temperature, f2c, gp, gq); });
}

}  // namespace

}  // namespace CPU_CAPABILITY

template <Isa>
SoftmaxKlKernels softmax_kl_kernels();

template <>
SoftmaxKlKernels softmax_kl_kernels<Isa::CPU_CAPABILITY>() {
  return {&CPU_CAPABILITY::forward, &CPU_CAPABILITY::backward};
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const SoftmaxKlKernels kKernels = HCAM_CPU_DISPATCH(softmax_kl_kernels)();
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("softmax_kl", device_entry<&hcam_ops::softmax_kl, &kKernels>);
  m.impl("softmax_kl_backward", device_entry<&hcam_ops::softmax_kl_backward, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
