// CPU kernels of the fused CAM-KL loss. The forward reads the features once
// (cam_pass, cam_kl.cpp), then per sample (cam_kl_rows) does min-max, softmax
// and KL and stores the coefficients its backward needs, so the backward is
// one more read of the features.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "convert.h"
#include "../cam_kl.h"
#include "../cam_math.h"
#include "cam_passes.h"
#include "isa.h"
#include "row_reductions.h"
#include "vec.h"

namespace hcam_ops::cpu {

namespace CPU_CAPABILITY {

namespace {

// e[n] = exp(u[n] - m) for n < N; returns their sum. The row's transcendental
// work, vectorised (Sleef's 1-ulp exp at AVX2 / AVX-512) and done once per
// element: the KL and its gradient reuse e.
inline math_t exp_shifted(const math_t* u, math_t m, int64_t N, math_t* e) {
  using V = at::vec::Vectorized<math_t>;
  const V mv(m);
  V acc(math_t(0));
  int64_t n = 0;
  for (; n + V::size() <= N; n += V::size()) {
    const V v = (V::loadu(u + n) - mv).exp();
    v.store(e + n);
    acc = acc + v;
  }
  math_t s = sum_lanes(acc);
  if (n < N) {
    const V v = (V::loadu(u + n, N - n) - mv).exp();
    v.store(e + n, N - n);
    for (; n < N; ++n) s += e[n];
  }
  return s;
}

// One (fine, coarse) pair of CAM rows: returns KL and writes d KL / d fine CAM.
// buf holds 4 * N scratch values.
template <typename acc_t>
math_t pair_kl(const acc_t* f, const acc_t* c, int64_t N, math_t inv_t, math_t eps, bool f2c, acc_t* coef,
               math_t* buf) {
  auto fv = [&](int64_t n) { return static_cast<math_t>(f[n]); };
  auto cv = [&](int64_t n) { return static_cast<math_t>(c[n]); };
  const auto mf = row_minmax<math_t>(fv, N);
  const auto mc = row_minmax<math_t>(cv, N);
  const math_t Df = mf.mx - mf.mn + eps, Dc = mc.mx - mc.mn + eps;
  math_t *up = buf, *uq = buf + N, *ep = buf + 2 * N, *eq = buf + 3 * N;
  // Softmax logits of the normalised rows, and their maxima (NaN is carried
  // by the exponentials below, as in the reference).
  math_t mp = -std::numeric_limits<math_t>::infinity(), mq = mp;
  for (int64_t n = 0; n < N; ++n) {
    up[n] = (fv(n) - mf.mn) / Df * inv_t;
    uq[n] = (cv(n) - mc.mn) / Dc * inv_t;
    mp = std::max(mp, up[n]);
    mq = std::max(mq, uq[n]);
  }
  const math_t sp = exp_shifted(up, mp, N, ep), sq = exp_shifted(uq, mq, N, eq);
  const math_t lse_p = mp + std::log(sp), lse_q = mq + std::log(sq);
  const math_t inv_sp = 1 / sp, inv_sq = 1 / sq;
  // P = ep / sp, Q = eq / sq: kl_term of cam_math.h without a second exp.
  math_t kl = 0;
  for (int64_t n = 0; n < N; ++n) {
    const math_t lp = up[n] - lse_p, lq = uq[n] - lse_q;
    kl += f2c ? ep[n] * inv_sp * (lp - lq) : eq[n] * inv_sq * (lq - lp);
  }
  // d KL / d up (kl_grad_p), then through the min-max normalisation.
  math_t* g = up;  // up[n] is read before g[n] is written
  for (int64_t n = 0; n < N; ++n) {
    const math_t lp = up[n] - lse_p, lq = uq[n] - lse_q, P = ep[n] * inv_sp;
    g[n] = (f2c ? P * (lp - lq - kl) : P - eq[n] * inv_sq) * inv_t;
  }
  auto nf = [&](int64_t n) { return (fv(n) - mf.mn) / Df; };
  // In place: minmax_backward_row reads g[n] before it writes position n.
  minmax_backward_row<math_t>([&](int64_t n) { return g[n]; }, nf, mf, Df, N,
                              [&](int64_t n, math_t v, bool add = false) { g[n] = add ? g[n] + v : v; });
  for (int64_t n = 0; n < N; ++n) coef[n] = static_cast<acc_t>(g[n]);
  return kl;
}

void cam_kl_rows(const at::Tensor& cams, double temperature, double eps, bool f2c, const at::Tensor& kl,
                 const at::Tensor& coef) {
  const int64_t B = cams.size(0), L = cams.size(1), N = cams.size(2);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, kl.scalar_type(), "cam_kl", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* cp = cams.data_ptr<acc_t>();
    acc_t* gp = coef.data_ptr<acc_t>();
    scalar_t* kp = kl.data_ptr<scalar_t>();
    const math_t inv_t = 1.0 / temperature, e = eps;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      std::vector<math_t> buf(4 * N);
      for (int64_t b = begin; b < end; ++b) {
        math_t total = 0;
        for (int64_t l = 0; l + 1 < L; ++l) {
          const acc_t* f = cp + (b * L + l) * N;
          total += pair_kl<acc_t>(f, f + N, N, inv_t, e, f2c, gp + (b * (L - 1) + l) * N, buf.data());
        }
        kp[b] = static_cast<scalar_t>(total);
      }
    });
  });
}

}  // namespace

}  // namespace CPU_CAPABILITY

template <Isa>
CamKlKernels cam_kl_kernels();

template <>
CamKlKernels cam_kl_kernels<Isa::CPU_CAPABILITY>() {
  return {cam_passes<Isa::CPU_CAPABILITY>(), &CPU_CAPABILITY::cam_kl_rows};
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const CamKlKernels kKernels = HCAM_CPU_DISPATCH(cam_kl_kernels)();
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("cam_kl", device_entry<&hcam_ops::cam_kl, &kKernels>);
  m.impl("cam_kl_backward", device_entry<&hcam_ops::cam_kl_backward, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
