// CUDA kernels of the row ops (minmax_normalize, softmax_kl) and of the fused
// CAM-KL loss. One block per row (or per sample): min/max, softmax sums and the
// KL are block reductions inside the kernel, over rows that sit in L2 after the
// feature pass. The fused forward reads the features once for every level's
// CAM (cam_pass), then one kernel does every pair's min-max, softmax and KL and
// stores the backward's coefficients d KL / d CAM.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../cam_features.h"
#include "../cam_math.h"
#include "block_reduce.cuh"
#include "cam_passes.h"

namespace hcam_ops::cuda {

namespace {

// The row statistics (min/max, softmax sums, KL) are O(N) per row against the
// O(N*C) feature pass, so they run in double: a KL is a small difference of
// large sums, and float sums over thousands of positions lose digits there.
using math_t = double;

template <typename acc_t>
using Two = Vals<acc_t, 2>;

// Shared scratch of the row kernels: one slot per warp for each reduction type.
template <typename acc_t>
struct RowScratch {
  MinMax<acc_t> mm[32];
  Two<acc_t> two[32];
};

struct MinMaxOp {
  template <typename T>
  __device__ __forceinline__ MinMax<T> operator()(const MinMax<T>& a, const MinMax<T>& b) const {
    return minmax_combine(a, b);
  }
};

int row_threads(int64_t N) {
  return N <= 32 ? 32 : N <= 64 ? 64 : N <= 128 ? 128 : 256;
}

template <typename acc_t, typename F>
__device__ MinMax<acc_t> block_minmax(F x, int64_t N, RowScratch<acc_t>& sh) {
  auto m = minmax_identity<acc_t>();
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) m = minmax_combine(m, minmax_of(x(n), n));
  return block_allreduce(m, MinMaxOp{}, sh.mm);
}

template <typename acc_t>
struct SoftmaxKL {
  acc_t lse_p, lse_q, kl;
};

// Log-sum-exp of both logit rows and the KL between their softmaxes.
template <typename acc_t, typename FP, typename FQ>
__device__ SoftmaxKL<acc_t> block_softmax_kl(FP up, FQ uq, int64_t N, bool f2c, RowScratch<acc_t>& sh) {
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  Two<acc_t> m{{-inf, -inf}};
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) m = MaxOp{}(m, Two<acc_t>{{up(n), uq(n)}});
  m = block_allreduce(m, MaxOp{}, sh.two);
  Two<acc_t> z{{acc_t(0), acc_t(0)}};
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    z.v[0] += std::exp(up(n) - m.v[0]);
    z.v[1] += std::exp(uq(n) - m.v[1]);
  }
  z = block_allreduce(z, SumOp{}, sh.two);
  SoftmaxKL<acc_t> r{m.v[0] + std::log(z.v[0]), m.v[1] + std::log(z.v[1]), acc_t(0)};
  Two<acc_t> k{{acc_t(0), acc_t(0)}};
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    k.v[0] += kl_term(up(n) - r.lse_p, uq(n) - r.lse_q, f2c);
  }
  r.kl = block_allreduce(k, SumOp{}, sh.two).v[0];
  return r;
}

// Through norm = (x - min) / D: store(n, (g[n] + min share + max share) / D),
// the shares going to the positions that attain the min and the max.
template <typename acc_t, typename FG, typename FN, typename Store>
__device__ void block_minmax_backward(FG g, FN nf, const MinMax<acc_t>& mm, acc_t D, int64_t N, Store store,
                                      RowScratch<acc_t>& sh) {
  Two<acc_t> s{{acc_t(0), acc_t(0)}};
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const acc_t gn = g(n), v = nf(n);
    s.v[0] += gn * (v - 1);
    s.v[1] -= gn * v;
  }
  s = block_allreduce(s, SumOp{}, sh.two);
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    acc_t v = g(n);
    if (n == mm.imn) v += s.v[0];
    if (n == mm.imx) v += s.v[1];
    store(n, v / D);
  }
}

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

int64_t rows_of(const at::Tensor& x) {
  return x.size(-1) == 0 ? 0 : x.numel() / x.size(-1);
}

at::Tensor minmax_normalize_cuda(const at::Tensor& x, double eps) {
  check_rows(x, "minmax_normalize");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto xc = x.contiguous();
  auto out = at::empty_like(xc);
  const int64_t N = x.size(-1), rows = rows_of(x);
  if (rows == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax_normalize", [&] {
    minmax_normalize_kernel<scalar_t, math_t>
        <<<checked_grid(rows), row_threads(N), 0, c10::cuda::getCurrentCUDAStream()>>>(
            xc.data_ptr<scalar_t>(), N, static_cast<math_t>(eps), out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor minmax_normalize_backward_cuda(const at::Tensor& grad, const at::Tensor& x, double eps) {
  check_same_rows(x, grad, "minmax_normalize_backward");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto xc = x.contiguous(), gc = grad.contiguous();
  auto gx = at::empty_like(xc);
  const int64_t N = x.size(-1), rows = rows_of(x);
  if (rows == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax_normalize_backward", [&] {
    minmax_normalize_backward_kernel<scalar_t, math_t>
        <<<checked_grid(rows), row_threads(N), 0, c10::cuda::getCurrentCUDAStream()>>>(
            gc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), N, static_cast<math_t>(eps), gx.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gx;
}

at::Tensor softmax_kl_cuda(const at::Tensor& p, const at::Tensor& q, double temperature, c10::string_view direction) {
  const bool f2c = parse_direction(direction, "softmax_kl");
  check_same_rows(p, q, "softmax_kl");
  const c10::cuda::CUDAGuard guard(p.device());
  const auto pc = p.contiguous(), qc = q.contiguous();
  auto out = at::empty(p.sizes().slice(0, p.dim() - 1), p.options());
  const int64_t N = p.size(-1), rows = rows_of(p);
  if (rows == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "softmax_kl", [&] {
    softmax_kl_kernel<scalar_t, math_t><<<checked_grid(rows), row_threads(N), 0, c10::cuda::getCurrentCUDAStream()>>>(
        pc.data_ptr<scalar_t>(), qc.data_ptr<scalar_t>(), N, static_cast<math_t>(1.0 / temperature), f2c,
        out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> softmax_kl_backward_cuda(const at::Tensor& grad, const at::Tensor& p,
                                                            const at::Tensor& q, double temperature,
                                                            c10::string_view direction) {
  const bool f2c = parse_direction(direction, "softmax_kl_backward");
  check_same_rows(p, q, "softmax_kl_backward");
  const c10::cuda::CUDAGuard guard(p.device());
  const auto pc = p.contiguous(), qc = q.contiguous();
  const auto gc = grad.to(p.scalar_type()).contiguous();
  auto gp = at::empty_like(pc), gq = at::empty_like(qc);
  const int64_t N = p.size(-1), rows = rows_of(p);
  if (rows == 0) return {gp, gq};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "softmax_kl_backward", [&] {
    softmax_kl_backward_kernel<scalar_t, math_t>
        <<<checked_grid(rows), row_threads(N), 0, c10::cuda::getCurrentCUDAStream()>>>(
            gc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(), qc.data_ptr<scalar_t>(), N,
            static_cast<math_t>(1.0 / temperature), f2c, gp.data_ptr<scalar_t>(), gq.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gp, gq};
}

std::tuple<at::Tensor, at::Tensor> cam_kl_forward_cuda(const at::Tensor& features, at::TensorList weights,
                                                       at::TensorList indices, double temperature, double eps,
                                                       c10::string_view direction) {
  const char* op = "cam_kl_loss";
  const bool f2c = parse_direction(direction, op);
  const c10::cuda::CUDAGuard guard(features.device());
  const auto v = view_features(features, op);
  const auto lv = levels_of_lists(weights, indices, v, features, op);
  const int64_t L = lv.size(), B = v.B, N = v.N;
  TORCH_CHECK(L >= 2 && L <= kMaxLevels + 1, op, ": needs 2 to ", kMaxLevels + 1, " levels, got ", L);
  static_assert(kMaxLevels + 1 <= kPassLevels, "cam_pass must read the features once for every level");
  const auto acc = acc_type_of(features.scalar_type());
  auto kl = at::empty({B}, features.options());
  auto coef = at::empty({B, L - 1, N}, features.options().dtype(acc));
  if (B == 0) return {kl, coef};
  auto cams = at::empty({B, L, N}, coef.options());
  cam_pass(v, lv, cams);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "cam_kl_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cam_kl_rows_kernel<scalar_t, acc_t, math_t>
        <<<checked_grid(B), row_threads(N), 0, c10::cuda::getCurrentCUDAStream()>>>(
            cams.data_ptr<acc_t>(), L, N, 1.0 / temperature, eps, f2c, kl.data_ptr<scalar_t>(), coef.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {kl, coef};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> cam_kl_backward_cuda(const at::Tensor& grad_kl,
                                                                     const at::Tensor& features, at::TensorList weights,
                                                                     at::TensorList indices, const at::Tensor& coef) {
  const char* op = "cam_kl_loss_backward";
  // Any CUDA argument brings the call here, so this catches host tensors too.
  check_same_device(grad_kl, "grad", features, op);
  check_same_device(coef, "coef", features, op);
  const c10::cuda::CUDAGuard guard(features.device());
  const auto v = view_features(features, op);
  const auto lv = levels_of_lists(weights, indices, v, features, op);
  const int64_t L = lv.size();
  TORCH_CHECK(coef.dim() == 3 && coef.size(0) == v.B && coef.size(1) == L - 1 && coef.size(2) == v.N, op,
              ": coef must be [B, L-1, N]");
  TORCH_CHECK(grad_kl.dim() == 1 && grad_kl.size(0) == v.B, op, ": grad must be [B]");
  auto [dx, dx_rows] = empty_features_grad(features, v);
  std::vector<at::Tensor> dws;
  for (int64_t l = 0; l + 1 < L; ++l) dws.push_back(at::zeros_like(lv.weights[l]));
  if (v.B == 0) return {dx, dws};
  const auto partial = grad_pass(v, lv, coef.contiguous(), grad_kl.to(features.scalar_type()).contiguous(), dx_rows);
  for (int64_t l = 0; l + 1 < L; ++l) class_reduce(partial, lv, l, l + 1, dws[l]);
  return {dx, dws};
}

}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("minmax_normalize", &minmax_normalize_cuda);
  m.impl("minmax_normalize_backward", &minmax_normalize_backward_cuda);
  m.impl("softmax_kl", &softmax_kl_cuda);
  m.impl("softmax_kl_backward", &softmax_kl_backward_cuda);
  m.impl("cam_kl_forward", &cam_kl_forward_cuda);
  m.impl("cam_kl_backward", &cam_kl_backward_cuda);
}

}  // namespace hcam_ops::cuda
