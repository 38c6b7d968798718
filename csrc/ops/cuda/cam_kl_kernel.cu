// CUDA kernels of the fused CAM-KL loss. The forward reads the features once
// for every level's CAM (cam_pass, cam_kl.cpp), then one kernel, one block per
// sample, does every pair's min-max, softmax and KL (block reductions over
// rows that sit in L2 after the feature pass) and stores the backward's
// coefficients d KL / d CAM.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../cam_kl.h"
#include "../common.h"
#include "cam_passes.h"
#include "launch.h"
#include "row_reductions.cuh"

namespace hcam_ops::cuda {

namespace {

// One block per sample: every adjacent (fine, coarse) pair of its CAM rows,
// stored as acc_t, with the row statistics in math_t.
template <typename scalar_t, typename acc_t, typename math_t>
__global__ void cam_kl_rows_kernel(const acc_t* __restrict__ cams, int64_t L, int64_t N, math_t inv_t, math_t eps,
                                   bool f2c, scalar_t* __restrict__ kl, acc_t* __restrict__ coef) {
  __shared__ RowScratch<math_t> sh;
  const int64_t b = blockIdx.x;
  math_t total = 0;
  for (int64_t l = 0; l + 1 < L; ++l) {
    const acc_t* f = cams + (b * L + l) * N;
    const acc_t* c = f + N;
    auto fv = [&](int64_t n) { return static_cast<math_t>(f[n]); };
    auto cv = [&](int64_t n) { return static_cast<math_t>(c[n]); };
    const auto mf = block_minmax<math_t>(fv, N, sh);
    const auto mc = block_minmax<math_t>(cv, N, sh);
    const math_t Df = mf.mx - mf.mn + eps, Dc = mc.mx - mc.mn + eps;
    auto nf = [&](int64_t n) { return (fv(n) - mf.mn) / Df; };
    auto up = [&](int64_t n) { return nf(n) * inv_t; };
    auto uq = [&](int64_t n) { return (cv(n) - mc.mn) / Dc * inv_t; };
    const auto sk = block_softmax_kl<math_t>(up, uq, N, f2c, sh);
    acc_t* out = coef + (b * (L - 1) + l) * N;
    block_minmax_backward<math_t>(
        [&](int64_t n) { return kl_grad_p(up(n) - sk.lse_p, uq(n) - sk.lse_q, sk.kl, f2c) * inv_t; }, nf, mf, Df, N,
        [&](int64_t n, math_t v) { out[n] = static_cast<acc_t>(v); }, sh);
    total += sk.kl;
  }
  if (threadIdx.x == 0) kl[b] = static_cast<scalar_t>(total);
}

void cam_kl_rows(const at::Tensor& cams, double temperature, double eps, bool f2c, const at::Tensor& kl,
                 const at::Tensor& coef) {
  const int64_t B = cams.size(0), L = cams.size(1), N = cams.size(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, kl.scalar_type(), "cam_kl", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch<cam_kl_rows_kernel<scalar_t, acc_t, math_t>>(checked_grid(B), row_threads(N), 0, cams.data_ptr<acc_t>(), L,
                                                        N, 1.0 / temperature, eps, f2c, kl.data_ptr<scalar_t>(),
                                                        coef.data_ptr<acc_t>());
  });
}

constexpr CamKlKernels kKernels{&kCamPasses, &cam_kl_rows};

}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("cam_kl", cuda_entry<&hcam_ops::cam_kl, &kKernels>());
  m.impl("cam_kl_backward", cuda_entry<&hcam_ops::cam_kl_backward, &kKernels>());
}

}  // namespace hcam_ops::cuda
