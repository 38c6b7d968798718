// CPU kernels of the multi-label ArcFace loss: row norms, the fused
// elementwise pass over a chunk of classes, and the projection through the
// normalisation. Parallel over rows; the driver (../multilabel_arcface.cpp)
// does the matrix products.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>

#include "../common.h"
#include "../multilabel_arcface.h"
#include "isa.h"

namespace hcam_ops::cpu {

namespace {

constexpr double kNormEps = 1e-12;

template <typename scalar_t, typename label_t>
void chunk_impl(const ArcFaceChunk& c, const ArcFaceParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = c.dot.size(0), n = c.n, K = c.labels.size(1), k0 = c.k0;
  const scalar_t* dot = c.dot.data_ptr<scalar_t>();
  const acc_t* inv_f = c.inv_f.data_ptr<acc_t>();
  const acc_t* inv_w = c.inv_w.data_ptr<acc_t>();
  const label_t* y = c.labels.data_ptr<label_t>();
  const scalar_t* grad = c.grad.defined() ? c.grad.data_ptr<scalar_t>() : nullptr;
  double* rows = c.loss_rows.defined() ? c.loss_rows.data_ptr<double>() : nullptr;
  scalar_t* loss = c.loss.defined() ? c.loss.data_ptr<scalar_t>() : nullptr;
  scalar_t* logits = c.logits.defined() ? c.logits.data_ptr<scalar_t>() : nullptr;
  scalar_t* g2 = c.g2.defined() ? c.g2.data_ptr<scalar_t>() : nullptr;
  const acc_t s = p.scale, cm = p.cos_m, sm = p.sin_m, th = p.th, mm = p.mm;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      double row = 0;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t e = b * K + k0 + j;
        const acc_t cosv = static_cast<acc_t>(dot[b * n + j]) * inv_f[b] * inv_w[k0 + j];
        const acc_t up = grad ? static_cast<acc_t>(grad[e]) : acc_t(1);
        const auto el = arcface_element<acc_t>(cosv, static_cast<acc_t>(y[e]), up, s, cm, sm, th, mm, p.easy_margin);
        row += el.loss;
        if (loss) loss[e] = static_cast<scalar_t>(el.loss);
        if (logits) logits[e] = static_cast<scalar_t>(el.z);
        if (g2) g2[b * n + j] = static_cast<scalar_t>(el.grad * inv_f[b] * inv_w[k0 + j]);
      }
      if (rows) rows[b] += row;
    }
  });
}

}  // namespace

template <>
at::Tensor arcface_inv_norms<Isa::CPU_CAPABILITY>(const at::Tensor& x) {
  const int64_t R = x.size(0), D = x.size(1);
  auto out = at::empty({R}, x.options().dtype(acc_type_of(x.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "arcface_inv_norms", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    acc_t* o = out.data_ptr<acc_t>();
    at::parallel_for(0, R, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        acc_t ss = 0;
        _Pragma("omp simd reduction(+ : ss)") for (int64_t d = 0; d < D; ++d) {
          const acc_t v = static_cast<acc_t>(xp[r * D + d]);
          ss += v * v;
        }
        o[r] = acc_t(1) / std::max<acc_t>(std::sqrt(ss), acc_t(kNormEps));
      }
    });
  });
  return out;
}

template <>
void arcface_chunk<Isa::CPU_CAPABILITY>(const ArcFaceChunk& c, const ArcFaceParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.dot.scalar_type(), "arcface_chunk", [&] {
    if (c.labels.scalar_type() == at::kBool) {
      chunk_impl<scalar_t, bool>(c, p);
    } else {
      chunk_impl<scalar_t, scalar_t>(c, p);
    }
  });
}

template <>
void arcface_project<Isa::CPU_CAPABILITY>(const at::Tensor& src, const at::Tensor& x, double scale,
                                          const at::Tensor& dst) {
  const int64_t R = x.size(0), D = x.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "arcface_project", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* dp = dst.data_ptr<scalar_t>();
    auto run = [&](auto* sp) {
      at::parallel_for(0, R, 16, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          acc_t dotv = 0, nn = 0;
          for (int64_t d = 0; d < D; ++d) {
            const acc_t xv = static_cast<acc_t>(xp[r * D + d]);
            dotv += static_cast<acc_t>(sp[r * D + d]) * xv;
            nn += xv * xv;
          }
          const acc_t norm = std::sqrt(nn);
          const acc_t coef = norm > acc_t(kNormEps) ? dotv / nn : acc_t(0);
          for (int64_t d = 0; d < D; ++d) {
            const acc_t v = static_cast<acc_t>(sp[r * D + d]) - coef * static_cast<acc_t>(xp[r * D + d]);
            dp[r * D + d] = static_cast<scalar_t>(static_cast<acc_t>(scale) * v);
          }
        }
      });
    };
    if (src.scalar_type() == x.scalar_type()) {
      run(src.data_ptr<scalar_t>());
    } else {
      run(src.data_ptr<acc_t>());
    }
  });
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const ArcFaceKernels kKernels{HCAM_CPU_DISPATCH(arcface_inv_norms), HCAM_CPU_DISPATCH(arcface_chunk),
                              HCAM_CPU_DISPATCH(arcface_project)};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("multilabel_arcface_forward", device_entry<&hcam_ops::multilabel_arcface_forward, &kKernels>);
  m.impl("multilabel_arcface_backward", device_entry<&hcam_ops::multilabel_arcface_backward, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
