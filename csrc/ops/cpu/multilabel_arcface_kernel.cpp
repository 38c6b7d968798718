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
#include <type_traits>

#include "../common.h"
#include "../multilabel_arcface.h"
#include "arcface_precision.h"
#include "isa.h"
#include "vec.h"

namespace hcam_ops::cpu {

// The entry points, declared for every level (isa.h): this file's compilation
// at CPU_CAPABILITY defines that level's, the baseline one registers the active one.
template <Isa>
at::Tensor arcface_inv_norms(const at::Tensor& x);
template <Isa>
void arcface_chunk(const ArcFaceChunk& c, const ArcFaceParams& p);
template <Isa>
void arcface_project(const at::Tensor& src, const at::Tensor& x, double scale, const at::Tensor& dst);

namespace {

using namespace CPU_CAPABILITY;  // vec.h, at this file's level

constexpr double kNormEps = 1e-12;

// The elements of one chunk, a vector of classes at a time: arcface_element
// (arcface_math.h) with both branches computed and blended, and at::vec's
// exp / log / sqrt (Sleef, 1 ulp, at AVX2 / AVX-512). The scalar form with
// libm's exp and log took most of the op's time after the matrix products.
// grad_t: g2's dtype, scalar_t's own, or bfloat16 where the driver runs the
// gradient products in bfloat16 (arcface_precision.h): written rounded here,
// not in a second pass over the chunk.
template <typename scalar_t, typename label_t, typename grad_t>
void chunk_impl(const ArcFaceChunk& c, const ArcFaceParams& p) {
  using acc_t = at::opmath_type<scalar_t>;
  using Vec = acc_vec<scalar_t>;
  constexpr int64_t V = Vec::size();
  const int64_t B = c.dot.size(0), n = c.n, K = c.labels.size(1), k0 = c.k0;
  const scalar_t* dot = c.dot.data_ptr<scalar_t>();
  const acc_t* inv_f = c.inv_f.data_ptr<acc_t>();
  const acc_t* inv_w = c.inv_w.data_ptr<acc_t>();
  const label_t* y = c.labels.data_ptr<label_t>();
  const scalar_t* grad = c.grad.defined() ? c.grad.data_ptr<scalar_t>() : nullptr;
  double* rows = c.loss_rows.defined() ? c.loss_rows.data_ptr<double>() : nullptr;
  scalar_t* loss = c.loss.defined() ? c.loss.data_ptr<scalar_t>() : nullptr;
  scalar_t* logits = c.logits.defined() ? c.logits.data_ptr<scalar_t>() : nullptr;
  grad_t* g2 = c.g2.defined() ? c.g2.data_ptr<grad_t>() : nullptr;
  const Vec s(static_cast<acc_t>(p.scale)), cm(static_cast<acc_t>(p.cos_m)), sm(static_cast<acc_t>(p.sin_m));
  const Vec th(static_cast<acc_t>(p.th)), mm(static_cast<acc_t>(p.mm));
  const Vec zero(acc_t(0)), one(acc_t(1)), r_min(acc_t(1e-9)), s_min(std::sqrt(acc_t(1e-9)));
  // Rows per task: at least ~16K elements each, so a small chunk (B = 32,
  // K = 6) stays on one thread instead of paying for a parallel region.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(n, 1));
  // zero_mask() of a vector with no lane set.
  constexpr int kNoneSet = (1 << V) - 1;
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    alignas(64) acc_t lanes[V];
    // The row's loss sum per lane, in double, added up in lane order at the
    // end (a scalar sum over each vector's lanes was one long dependency chain).
    alignas(64) double row_lanes[V];
    for (int64_t b = begin; b < end; ++b) {
      const Vec fb(inv_f[b]);
      std::fill_n(row_lanes, V, 0.0);
      for (int64_t j = 0; j < n; j += V) {
        const int64_t m = std::min(V, n - j), e = b * K + k0 + j;
        const Vec cosv = load_acc(dot + b * n + j, m) * fb * Vec::loadu(inv_w + k0 + j, m);
        if (m == V) {  // a fixed-count loop, which the compiler vectorises
          for (int64_t i = 0; i < V; ++i) lanes[i] = static_cast<acc_t>(y[e + i]);
        } else {
          for (int64_t i = 0; i < V; ++i) lanes[i] = i < m ? static_cast<acc_t>(y[e + i]) : acc_t(0);
        }
        const Vec yv = Vec::loadu(lanes);
        const Vec up = grad ? load_acc(grad + e, m) : one;
        // arcface_logit for both label values; the positives' branch where
        // y == 1, computed only for a vector that has one (multi-label
        // targets are sparse: most vectors have none, and the blends below
        // give their lanes s * cos and s either way).
        const Vec pos = yv == one;
        Vec z = s * cosv, dz = s;
        if (pos.zero_mask() != kNoneSet) {
          const Vec r = one - cosv * cosv;
          const Vec open = r > r_min;  // not clamped
          const Vec sv = Vec::blendv(s_min, r.sqrt(), open);
          const Vec keep = p.easy_margin ? cosv > zero : cosv > th;
          const Vec z_keep = s * (cosv * cm - sv * sm);
          const Vec dz_keep = s * (cm + Vec::blendv(zero, sm * cosv / sv, open));
          const Vec z_lin = s * (p.easy_margin ? cosv : cosv - mm);
          z = Vec::blendv(z, Vec::blendv(z_lin, z_keep, keep), pos);
          dz = Vec::blendv(s, Vec::blendv(s, dz_keep, keep), pos);
        }
        // BCE with logits, stable form, with log1p_unit's one log.
        const Vec ez = (zero - z.abs()).exp();
        const Vec u = one + ez;
        const Vec l1p = Vec::blendv(u.log() * (ez / (u - one)), ez, u == one);
        const Vec lv = Vec::blendv(zero, z, z > zero) - z * yv + l1p;
        const Vec sig = Vec::blendv(ez, one, z >= zero) / u;  // ez / u or 1 / u: one division
        if (rows) {
          lv.store(lanes);
          if (m < V) std::fill(lanes + m, lanes + V, acc_t(0));
          for (int64_t i = 0; i < V; ++i) row_lanes[i] += static_cast<double>(lanes[i]);
        }
        if (loss) store_acc(loss + e, lv, m);
        if (logits) store_acc(logits + e, z, m);
        if (g2) store_acc(g2 + b * n + j, (sig - yv) * dz * up * fb * Vec::loadu(inv_w + k0 + j, m), m);
      }
      if (rows) {
        double row = 0;
        for (int64_t i = 0; i < V; ++i) row += row_lanes[i];
        rows[b] += row;
      }
    }
  });
}

template <typename scalar_t, typename grad_t>
void chunk_labels(const ArcFaceChunk& c, const ArcFaceParams& p) {
  if (c.labels.scalar_type() == at::kBool) {
    chunk_impl<scalar_t, bool, grad_t>(c, p);
  } else {
    chunk_impl<scalar_t, scalar_t, grad_t>(c, p);
  }
}

template <typename scalar_t>
void chunk_dispatch(const ArcFaceChunk& c, const ArcFaceParams& p, bool bf16_grad) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (bf16_grad) return chunk_labels<float, at::BFloat16>(c, p);
  }
  chunk_labels<scalar_t, scalar_t>(c, p);
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
    using Vec = acc_vec<scalar_t>;
    constexpr int64_t V = Vec::size();
    // Four independent accumulators (one would wait out the FMA latency at
    // every step: the scalar loop GCC made of an `omp simd` reduction here
    // took 4 ms for a [10000, 512] weight), added in a fixed order.
    at::parallel_for(0, R, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* xr = xp + r * D;
        Vec acc[4] = {Vec(acc_t(0)), Vec(acc_t(0)), Vec(acc_t(0)), Vec(acc_t(0))};
        int64_t d = 0;
        for (; d + 4 * V <= D; d += 4 * V) {
          for (int u = 0; u < 4; ++u) {
            const Vec v = load_acc(xr + d + u * V);
            acc[u] = at::vec::fmadd(v, v, acc[u]);
          }
        }
        for (; d < D; d += V) {
          const Vec v = load_acc(xr + d, D - d);
          acc[0] = at::vec::fmadd(v, v, acc[0]);
        }
        const acc_t ss = sum_lanes((acc[0] + acc[1]) + (acc[2] + acc[3]));
        o[r] = acc_t(1) / std::max<acc_t>(std::sqrt(ss), acc_t(kNormEps));
      }
    });
  });
  return out;
}

template <>
void arcface_chunk<Isa::CPU_CAPABILITY>(const ArcFaceChunk& c, const ArcFaceParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.dot.scalar_type(), "arcface_chunk", [&] {
    // bfloat16 g2 comes with float32 products only (arcface_precision.cpp).
    const bool bf16_grad = c.g2.defined() && c.g2.scalar_type() != c.dot.scalar_type();
    TORCH_CHECK(!bf16_grad || (c.g2.scalar_type() == at::kBFloat16 && std::is_same_v<scalar_t, float>),
                "arcface_chunk: g2 must be ", c.dot.scalar_type(), " (or bfloat16 with float products), got ",
                c.g2.scalar_type());
    chunk_dispatch<scalar_t>(c, p, bf16_grad);
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
    using Vec = acc_vec<scalar_t>;
    constexpr int64_t V = Vec::size();
    auto run = [&](auto* sp) {
      // Rows per task: ~16K elements, as in the chunk pass.
      const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(D, 1));
      at::parallel_for(0, R, grain, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const scalar_t* xr = xp + r * D;
          const auto* sr = sp + r * D;  // scalar_t or the accumulation type
          Vec dv(acc_t(0)), nv(acc_t(0));
          for (int64_t d = 0; d < D; d += V) {
            const int64_t m = std::min(V, D - d);
            const Vec xv = load_acc(xr + d, m);
            dv = at::vec::fmadd(load_acc(sr + d, m), xv, dv);
            nv = at::vec::fmadd(xv, xv, nv);
          }
          const acc_t dotv = sum_lanes(dv), nn = sum_lanes(nv);
          const acc_t norm = std::sqrt(nn);
          const Vec coef(norm > acc_t(kNormEps) ? dotv / nn : acc_t(0)), sc(static_cast<acc_t>(scale));
          for (int64_t d = 0; d < D; d += V) {
            const int64_t m = std::min(V, D - d);
            const Vec xv = load_acc(xr + d, m);
            store_acc(dp + r * D + d, sc * (load_acc(sr + d, m) - coef * xv), m);
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
                              HCAM_CPU_DISPATCH(arcface_project), &arcface_operands, &arcface_linear};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("multilabel_arcface", device_entry<&hcam_ops::multilabel_arcface, &kKernels>);
  m.impl("multilabel_arcface_backward", device_entry<&hcam_ops::multilabel_arcface_backward, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
