// Multi-label ArcFace (docs/ops/multilabel_arcface.md): the margin, the logit and the BCE with
// their derivatives, shared by the CPU and CUDA kernels.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

namespace hcam_ops {

struct ArcFaceParams {
  double scale;
  double cos_m, sin_m;  // cos(m), sin(m)
  double th;            // cos(pi - m): below it the margin is replaced
  double mm;            // sin(pi - m) * m
  bool easy_margin;
};

// Training logit z of one (sample, class) from its cosine and label, and
// dz / dcos. Positives get the margin: phi = cos(theta + m) where it is
// monotone, else the linear extension the docs give.
template <typename T>
C10_HOST_DEVICE inline void arcface_logit(T c, bool positive, T scale, T cos_m, T sin_m, T th, T mm, bool easy, T& z,
                                          T& dz) {
  if (!positive) {
    z = scale * c;
    dz = scale;
    return;
  }
  const T r = T(1) - c * c;
  const bool clamped = !(r > T(1e-9));
  const T s = clamped ? std::sqrt(T(1e-9)) : std::sqrt(r);
  const bool keep = easy ? (c > T(0)) : (c > th);
  if (keep) {
    z = scale * (c * cos_m - s * sin_m);
    dz = scale * (cos_m + (clamped ? T(0) : sin_m * c / s));
  } else {
    z = scale * (easy ? c : c - mm);
    dz = scale;
  }
}

// log1p(e) for e in [0, 1] from one log: log(u) * e / (u - 1) with u = 1 + e
// rounded is accurate to a few ulps (the rounding of u cancels), and a plain
// log is several times cheaper than log1p in glibc's scalar libm.
template <typename T>
C10_HOST_DEVICE inline T log1p_unit(T e) {
  const T u = T(1) + e;
  return u == T(1) ? e : std::log(u) * (e / (u - T(1)));
}

// One (sample, class) element: its training logit, its BCE with logits in the
// stable form max(z, 0) - z y + log1p(exp(-|z|)), and d BCE / d cos
// (sigmoid(z) - y) dz/dcos times the upstream gradient; exp(-|z|) is computed
// once for both. What a caller does not use is dropped after inlining.
template <typename T>
struct ArcFaceElement {
  T z, loss, grad;
};

template <typename T>
C10_HOST_DEVICE inline ArcFaceElement<T> arcface_element(T cos, T y, T upstream, T scale, T cos_m, T sin_m, T th, T mm,
                                                         bool easy) {
  T z, dz;
  arcface_logit<T>(cos, y == T(1), scale, cos_m, sin_m, th, mm, easy, z, dz);
  const T e = std::exp(-std::abs(z));
  const T loss = (z > T(0) ? z : T(0)) - z * y + log1p_unit(e);
  const T sig = z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
  return {z, loss, (sig - y) * dz * upstream};
}

}  // namespace hcam_ops
