// CPU kernels of the row ops (minmax_normalize, softmax_kl) and of the fused
// CAM-KL loss. The fused forward reads the features once (cam_pass), then per
// sample does min-max, softmax and KL and stores the coefficients its backward
// needs, so the backward is one more read of the features.
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
#include "../cam_features.h"
#include "../cam_math.h"
#include "cam_passes.h"
#include "vec.h"

namespace hcam_ops::cpu {

namespace CPU_CAPABILITY {

namespace {

template <typename acc_t, typename F>
MinMax<acc_t> row_minmax(F x, int64_t N) {
  auto m = minmax_identity<acc_t>();
  for (int64_t n = 0; n < N; ++n) m = minmax_combine(m, minmax_of(x(n), n));
  return m;
}

template <typename acc_t>
struct SoftmaxKL {
  acc_t lse_p, lse_q, kl;
};

// Log-sum-exp of both logit rows and the KL between their softmaxes.
template <typename acc_t, typename FP, typename FQ>
SoftmaxKL<acc_t> row_softmax_kl(FP up, FQ uq, int64_t N, bool f2c) {
  acc_t mp = -std::numeric_limits<acc_t>::infinity(), mq = mp;
  for (int64_t n = 0; n < N; ++n) {
    mp = std::max(mp, up(n));
    mq = std::max(mq, uq(n));
  }
  acc_t sp = 0, sq = 0;
  for (int64_t n = 0; n < N; ++n) {
    sp += std::exp(up(n) - mp);
    sq += std::exp(uq(n) - mq);
  }
  SoftmaxKL<acc_t> r{mp + std::log(sp), mq + std::log(sq), 0};
  for (int64_t n = 0; n < N; ++n) r.kl += kl_term(up(n) - r.lse_p, uq(n) - r.lse_q, f2c);
  return r;
}

// Through norm = (x - min) / D: out[n] = g[n] / D, plus the min's and max's
// shares at the positions that attain them.
template <typename acc_t, typename FG, typename FN, typename Out>
void minmax_backward_row(FG g, FN nf, const MinMax<acc_t>& mm, acc_t D, int64_t N, Out out) {
  acc_t s_min = 0, s_max = 0;
  for (int64_t n = 0; n < N; ++n) {
    const acc_t gn = g(n), v = nf(n);
    s_min += gn * (v - 1);
    s_max -= gn * v;
    out(n, gn / D);
  }
  out(mm.imn, s_min / D, true);
  out(mm.imx, s_max / D, true);
}

// The row statistics (min/max, softmax sums, KL) are O(N) per row against the
// O(N*C) feature pass, so they run in double: a KL is a small difference of
// large sums, and float sums over thousands of positions lose digits there.
using math_t = double;

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

at::Tensor minmax_normalize_cpu(const at::Tensor& x, double eps) {
  check_rows(x, "minmax_normalize");
  const auto xc = x.contiguous();
  auto out = at::empty_like(xc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax_normalize",
                                  [&] { minmax_normalize_impl<scalar_t>(xc, eps, out); });
  return out;
}

at::Tensor minmax_normalize_backward_cpu(const at::Tensor& grad, const at::Tensor& x, double eps) {
  check_same_rows(x, grad, "minmax_normalize_backward");
  const auto xc = x.contiguous();
  const auto gc = grad.contiguous();
  auto gx = at::empty_like(xc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "minmax_normalize_backward",
                                  [&] { minmax_normalize_backward_impl<scalar_t>(gc, xc, eps, gx); });
  return gx;
}

at::Tensor softmax_kl_cpu(const at::Tensor& p, const at::Tensor& q, double temperature, c10::string_view direction) {
  const bool f2c = parse_direction(direction, "softmax_kl");
  check_same_rows(p, q, "softmax_kl");
  const auto pc = p.contiguous(), qc = q.contiguous();
  auto out = at::empty(p.sizes().slice(0, p.dim() - 1), p.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "softmax_kl",
                                  [&] { softmax_kl_impl<scalar_t>(pc, qc, temperature, f2c, out); });
  return out;
}

std::tuple<at::Tensor, at::Tensor> softmax_kl_backward_cpu(const at::Tensor& grad, const at::Tensor& p,
                                                           const at::Tensor& q, double temperature,
                                                           c10::string_view direction) {
  const bool f2c = parse_direction(direction, "softmax_kl_backward");
  check_same_rows(p, q, "softmax_kl_backward");
  const auto pc = p.contiguous(), qc = q.contiguous(), gc = grad.contiguous();
  auto gp = at::empty_like(pc), gq = at::empty_like(qc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "softmax_kl_backward",
                                  [&] { softmax_kl_backward_impl<scalar_t>(gc, pc, qc, temperature, f2c, gp, gq); });
  return {gp, gq};
}

std::tuple<at::Tensor, at::Tensor> cam_kl_forward_cpu(const at::Tensor& features, at::TensorList weights,
                                                      at::TensorList indices, double temperature, double eps,
                                                      c10::string_view direction) {
  const char* op = "cam_kl_loss";
  const bool f2c = parse_direction(direction, op);
  const auto v = view_features(features, op);
  const auto lv = levels_of_lists(weights, indices, v, features, op);
  const int64_t L = lv.size(), B = v.B, N = v.N;
  TORCH_CHECK(L >= 2 && L <= kMaxLevels + 1, op, ": needs 2 to ", kMaxLevels + 1, " levels, got ", L);
  const auto acc = acc_type_of(features.scalar_type());
  auto kl = at::empty({B}, features.options());
  auto coef = at::empty({B, L - 1, N}, features.options().dtype(acc));
  if (B == 0) return {kl, coef};
  check_index_range(lv, B, op);
  auto cams = at::empty({B, L, N}, coef.options());
  cam_pass(v, lv, cams);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "cam_kl_forward", [&] {
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
  return {kl, coef};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> cam_kl_backward_cpu(const at::Tensor& grad_kl,
                                                                    const at::Tensor& features, at::TensorList weights,
                                                                    at::TensorList indices, const at::Tensor& coef) {
  const char* op = "cam_kl_loss_backward";
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
  check_index_range(lv, v.B, op);
  const auto partial = grad_pass(v, lv, coef.contiguous(), grad_kl.to(features.scalar_type()).contiguous(), dx_rows);
  for (int64_t l = 0; l + 1 < L; ++l) class_reduce(partial, lv, l, l + 1, dws[l]);
  return {dx, dws};
}

}  // namespace

}  // namespace CPU_CAPABILITY

template <>
void register_cam_kl_kernels<Isa::CPU_CAPABILITY>(torch::Library& m) {
  m.impl("minmax_normalize", &CPU_CAPABILITY::minmax_normalize_cpu);
  m.impl("minmax_normalize_backward", &CPU_CAPABILITY::minmax_normalize_backward_cpu);
  m.impl("softmax_kl", &CPU_CAPABILITY::softmax_kl_cpu);
  m.impl("softmax_kl_backward", &CPU_CAPABILITY::softmax_kl_backward_cpu);
  m.impl("cam_kl_forward", &CPU_CAPABILITY::cam_kl_forward_cpu);
  m.impl("cam_kl_backward", &CPU_CAPABILITY::cam_kl_backward_cpu);
}

}  // namespace hcam_ops::cpu
