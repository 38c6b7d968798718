// CUDA kernels of the multi-label ArcFace loss: row norms (a warp per row),
// the fused elementwise pass over a chunk of classes (a block per sample row,
// its loss summed by a block reduction), and the projection through the
// normalisation (a warp per row). The driver (../multilabel_arcface.cpp) does
// the matrix products with cuBLAS through at::mm, on the current stream.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <type_traits>

#include "../common.h"
#include "../multilabel_arcface.h"
#include "block_reduce.cuh"
#include "launch.h"

namespace hcam_ops::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
constexpr double kNormEps = 1e-12;

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    inv_norms_kernel(const scalar_t* __restrict__ x, int64_t R, int64_t D, acc_t* __restrict__ out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= R) return;
  const int lane = threadIdx.x % 32;
  acc_t ss = 0;
  for (int64_t d = lane; d < D; d += 32) {
    const acc_t v = static_cast<acc_t>(x[r * D + d]);
    ss += v * v;
  }
  ss = warp_allreduce(ss, SumOp{});
  if (lane == 0) out[r] = acc_t(1) / max(sqrt(ss), acc_t(kNormEps));
}

template <typename scalar_t, typename label_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    chunk_kernel(const scalar_t* __restrict__ dot, const acc_t* __restrict__ inv_f, const acc_t* __restrict__ inv_w,
                 const label_t* __restrict__ y, const scalar_t* __restrict__ grad, int64_t n, int64_t K, int64_t k0,
                 acc_t s, acc_t cm, acc_t sm, acc_t th, acc_t mm, bool easy, double* __restrict__ rows,
                 scalar_t* __restrict__ loss, scalar_t* __restrict__ logits, scalar_t* __restrict__ g2) {
  __shared__ double red[32];
  const int64_t b = blockIdx.x;
  const acc_t fb = inv_f[b];
  double row = 0;  // K terms per row, often 1e5: summed in double
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const int64_t e = b * K + k0 + j;
    const acc_t cosv = static_cast<acc_t>(dot[b * n + j]) * fb * inv_w[k0 + j];
    const acc_t up = grad ? static_cast<acc_t>(grad[e]) : acc_t(1);
    const auto el = arcface_element<acc_t>(cosv, static_cast<acc_t>(y[e]), up, s, cm, sm, th, mm, easy);
    row += el.loss;
    if (loss) loss[e] = static_cast<scalar_t>(el.loss);
    if (logits) logits[e] = static_cast<scalar_t>(el.z);
    if (g2) g2[b * n + j] = static_cast<scalar_t>(el.grad * fb * inv_w[k0 + j]);
  }
  if (rows) {
    row = block_allreduce(row, SumOp{}, red);
    if (threadIdx.x == 0) rows[b] += row;  // chunks run in order: deterministic
  }
}

// dst[r] = scale * (src[r] - ((src[r] . x[r]) / ||x[r]||^2) x[r]), unprojected
// where ||x[r]|| <= eps. Both sums come from one read of the row; dst may be src.
template <typename scalar_t, typename src_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    project_kernel(const src_t* src, const scalar_t* __restrict__ x, int64_t R, int64_t D, acc_t scale, scalar_t* dst) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (r >= R) return;
  const int lane = threadIdx.x % 32;
  Vals<acc_t, 2> acc{{acc_t(0), acc_t(0)}};
  for (int64_t d = lane; d < D; d += 32) {
    const acc_t xv = static_cast<acc_t>(x[r * D + d]);
    acc.v[0] += static_cast<acc_t>(src[r * D + d]) * xv;
    acc.v[1] += xv * xv;
  }
  acc = warp_allreduce(acc, SumOp{});
  const acc_t coef = sqrt(acc.v[1]) > acc_t(kNormEps) ? acc.v[0] / acc.v[1] : acc_t(0);
  for (int64_t d = lane; d < D; d += 32) {
    const acc_t v = static_cast<acc_t>(src[r * D + d]) - coef * static_cast<acc_t>(x[r * D + d]);
    dst[r * D + d] = static_cast<scalar_t>(scale * v);
  }
}

template <typename T>
T* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

}  // namespace

at::Tensor arcface_inv_norms(const at::Tensor& x) {
  const int64_t R = x.size(0), D = x.size(1);
  auto out = at::empty({R}, x.options().dtype(acc_type_of(x.scalar_type())));
  if (R == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "arcface_inv_norms", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch<inv_norms_kernel<scalar_t, acc_t>>(checked_grid((R + kWarpsPerBlock - 1) / kWarpsPerBlock), kThreads, 0,
                                              x.data_ptr<scalar_t>(), R, D, out.data_ptr<acc_t>());
  });
  return out;
}

void arcface_chunk(const ArcFaceChunk& c, const ArcFaceParams& p) {
  const int64_t B = c.dot.size(0), K = c.labels.size(1);
  if (B == 0 || c.n == 0) return;
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, (c.n + 31) / 32 * 32));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.dot.scalar_type(), "arcface_chunk", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto launch_chunk = [&](auto* labels) {
      using label_t = std::remove_const_t<std::remove_pointer_t<decltype(labels)>>;
      launch<chunk_kernel<scalar_t, label_t, acc_t>>(
          checked_grid(B), threads, 0, c.dot.data_ptr<scalar_t>(), c.inv_f.data_ptr<acc_t>(), c.inv_w.data_ptr<acc_t>(),
          labels, ptr_or_null<scalar_t>(c.grad), c.n, K, c.k0, static_cast<acc_t>(p.scale), static_cast<acc_t>(p.cos_m),
          static_cast<acc_t>(p.sin_m), static_cast<acc_t>(p.th), static_cast<acc_t>(p.mm), p.easy_margin,
          ptr_or_null<double>(c.loss_rows), ptr_or_null<scalar_t>(c.loss), ptr_or_null<scalar_t>(c.logits),
          ptr_or_null<scalar_t>(c.g2));
    };
    if (c.labels.scalar_type() == at::kBool) {
      launch_chunk(c.labels.data_ptr<bool>());
    } else {
      launch_chunk(c.labels.data_ptr<scalar_t>());
    }
  });
}

void arcface_project(const at::Tensor& src, const at::Tensor& x, double scale, const at::Tensor& dst) {
  const int64_t R = x.size(0), D = x.size(1);
  if (R == 0) return;
  const int64_t blocks = checked_grid((R + kWarpsPerBlock - 1) / kWarpsPerBlock);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "arcface_project", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (src.scalar_type() == x.scalar_type()) {
      launch<project_kernel<scalar_t, scalar_t, acc_t>>(blocks, kThreads, 0, src.data_ptr<scalar_t>(),
                                                        x.data_ptr<scalar_t>(), R, D, static_cast<acc_t>(scale),
                                                        dst.data_ptr<scalar_t>());
    } else {
      launch<project_kernel<scalar_t, acc_t, acc_t>>(blocks, kThreads, 0, src.data_ptr<acc_t>(), x.data_ptr<scalar_t>(),
                                                     R, D, static_cast<acc_t>(scale), dst.data_ptr<scalar_t>());
    }
  });
}

namespace {
// cuBLAS multiplies float16 / bfloat16 in their own dtype: the op runs on the inputs as given.
ArcFaceOperands as_given(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& labels) {
  return {features, weight, labels, {}, {}};
}

constexpr ArcFaceKernels kKernels{&arcface_inv_norms, &arcface_chunk, &arcface_project, &as_given};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("multilabel_arcface", cuda_entry<&hcam_ops::multilabel_arcface, &kKernels>());
  m.impl("multilabel_arcface_backward", cuda_entry<&hcam_ops::multilabel_arcface_backward, &kKernels>());
}

}  // namespace hcam_ops::cuda
