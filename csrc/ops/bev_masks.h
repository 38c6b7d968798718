// DistillBEV masks on the BEV grid from rotated 3D boxes
// (docs/ops/fgd.md#bev_masks_from_boxes): the device-independent driver
// (bev_masks.cpp), the rasterisers each device supplies to it, and the
// per-box and per-cell rules both share.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "cpu/isa.h"

namespace hcam_ops {

// How the per-cell scales weight the masks (DistillBEV's scale_mask), and how
// the background is formed from the foreground weight (its background_mask).
enum class BevScale : int64_t { Combine = 0, Separate = 1, BgOnly = 2, None = 3 };
enum class BevBackground : int64_t { LogicalNot = 0, OneMinus = 1 };

// The grid and the options, as the kernels take them (in double; each kernel
// rounds them to the boxes' dtype once).
struct BevParams {
  double x_min, y_min, cell_x, cell_y, extend_length, extend_weight;
  BevScale scale;
  BevBackground background;
};

// The arithmetic of the cell test is the same, operation for operation and
// rounding for rounding, on every CPU variant, on CUDA and in the reference:
// each product is rounded on its own and never fused with the add or subtract
// that takes it. A fused multiply-add rounds once, so a point on an edge could
// fall on either side by where it ran: GCC fuses across statements in the
// AVX2 / AVX-512 variants (-ffp-contract=fast, its default for C++), nvcc
// fuses by default, the baseline x86-64 has no FMA. On the device __fmul_rn /
// __dmul_rn are never fused; on the host an empty asm hands the product on as
// a value the compiler cannot see through (no code, no spill: it stays in its
// register). The cos / sin of the yaws come from the host (bev_masks.cpp).
template <typename T>
C10_HOST_DEVICE inline T bev_mul(T a, T b) {
#ifdef __CUDA_ARCH__
  if constexpr (std::is_same_v<T, float>) {
    return __fmul_rn(a, b);
  } else {
    return __dmul_rn(a, b);
  }
#else
  T p = a * b;
#if defined(__GNUC__) && defined(__x86_64__)
  asm("" : "+x"(p));
#elif defined(__GNUC__) && defined(__aarch64__)
  asm("" : "+w"(p));
#elif defined(__GNUC__)
  asm("" : "+m"(p));
#endif  // other compilers (MSVC: /fp:precise) do not contract
  return p;
#endif
}

// The coordinate of grid point i along one axis: lo + i * cell, the product
// rounded first (i < 2^24 converts exactly).
template <typename T>
C10_HOST_DEVICE inline T bev_coord(T lo, int64_t i, T cell) {
  return lo + bev_mul(static_cast<T>(i), cell);
}

// One box, ready for the cell test: centre, half sizes of the box and of the
// enlarged box, cos / sin of the yaw, the two fg scales of its cells:
// sqrt(cell_area / (dx * dy)) inside the box, cell_area / (dx * dy) where the
// enlarged box decides (bg_extend on), and the half height (along y) of the
// enlarged box's axis-aligned bounds, for culling only. Arithmetic in the
// boxes' dtype.
template <typename T>
struct BevBox {
  T cx, cy, hx, hy, ehx, ehy, c, s, inner_scale, ring_scale, ry;
};

// row = (x, y, dx, dy, yaw); cs = (cos, sin) of its yaw, rounded to T from
// double on the host; extend = cell_x * bg_extend_length (0: off).
template <typename T>
C10_HOST_DEVICE inline BevBox<T> bev_box(const T* row, const T* cs, T cell_area, T extend) {
  BevBox<T> b;
  b.cx = row[0];
  b.cy = row[1];
  b.hx = row[2] / T(2);
  b.hy = row[3] / T(2);
  b.ehx = (row[2] + extend) / T(2);
  b.ehy = (row[3] + extend) / T(2);
  b.c = cs[0];
  b.s = cs[1];
  b.ring_scale = cell_area / (row[2] * row[3]);
  b.inner_scale = sqrt(b.ring_scale);
  const T ac = b.c < T(0) ? -b.c : b.c, as = b.s < T(0) ? -b.s : b.s;
  b.ry = bev_mul(as, b.ehx) + bev_mul(ac, b.ehy);  // culling only
  return b;
}

// Whether a point at y = py may lie in the (enlarged) box: |v| < ehy and
// |u| < ehx give |py - cy| < ry exactly; the slack covers ry's rounding many
// times over, so culling never changes a result.
template <typename T>
C10_HOST_DEVICE inline bool bev_row_may_hit(const BevBox<T>& b, T py, T slack) {
  const T d = py - b.cy;
  return (d < T(0) ? -d : d) <= bev_mul(b.ry, T(1.001)) + slack;
}

// The point (px, py) in the box's frame: the published corners are the box's
// rotated by -yaw (mmdet3d v0.x box_np_ops.rotation_3d_in_axis, axis 2), so
// the point is rotated by +yaw about the centre. Inside is strict on both axes.
template <typename T>
struct BevLocal {
  T u, v;
};

template <typename T>
C10_HOST_DEVICE inline BevLocal<T> bev_local(const BevBox<T>& b, T px, T py) {
  const T ex = px - b.cx, ey = py - b.cy;
  return {bev_mul(b.c, ex) - bev_mul(b.s, ey), bev_mul(b.s, ex) + bev_mul(b.c, ey)};
}

// The foreground weight and fg scale of one cell over the boxes box[0..n) of
// its image: the first box (lowest index) that holds the cell gives the scale;
// with bg_extend on, the first enlarged box that holds it overrides it.
template <typename T>
struct BevCell {
  T fm, scale;
};

template <typename T>
C10_HOST_DEVICE inline BevCell<T> bev_cell(const BevBox<T>* box, int64_t n, T px, T py, bool extend_on, T weight) {
  int64_t inner = -1, ring = -1;
  for (int64_t i = 0; i < n; ++i) {
    const auto l = bev_local(box[i], px, py);
    const T au = l.u < T(0) ? -l.u : l.u, av = l.v < T(0) ? -l.v : l.v;
    if (inner < 0 && au < box[i].hx && av < box[i].hy) inner = i;
    if (extend_on && ring < 0 && au < box[i].ehx && av < box[i].ehy) ring = i;
    if (inner >= 0 && (!extend_on || ring >= 0)) break;
  }
  BevCell<T> r{T(0), T(0)};
  if (inner >= 0) {
    r.fm = T(1);
    r.scale = box[inner].inner_scale;
  }
  if (ring >= 0) {
    r.fm = r.fm < weight ? weight : r.fm;
    r.scale = box[ring].ring_scale;
  }
  return r;
}

// The final masks of one cell from its foreground weight fm, its fg scale and
// the image's background scale (1 / count(fm == 0), 0 if no such cell).
template <typename T>
C10_HOST_DEVICE inline void bev_finish(T fm, T scale, T bg_scale, BevScale mode, BevBackground background, T* fg,
                                       T* bg) {
  T a = T(1), b = T(1);
  if (mode == BevScale::Combine) {
    a = b = scale < bg_scale ? bg_scale : scale;
  } else if (mode == BevScale::Separate) {
    a = scale;
    b = bg_scale;
  } else if (mode == BevScale::BgOnly) {
    a = b = bg_scale;
  }
  const T w = background == BevBackground::LogicalNot ? (fm == T(0) ? T(1) : T(0)) : T(1) - fm;
  *fg = fm * a;
  *bg = w * b;
}

// boxes [N, 5] (x, y, dx, dy, yaw), rot [N, 2] (cos, sin of each yaw) in the
// boxes' dtype and on their device, image i's boxes at rows offsets[i] ..
// offsets[i + 1] (checked by bev_masks.cpp: from 0 to N, non-decreasing);
// fg, bg [B, H, W] in the boxes' dtype (row = y, column = x).
namespace cpu {
// One specialisation per compiled level (cpu/isa.h); cpu/<op>_kernel.cpp registers the active one.
template <Isa>
void bev_masks(const at::Tensor& boxes, const at::Tensor& rot, const at::Tensor& offsets, const BevParams& p,
               const at::Tensor& fg, const at::Tensor& bg);
}  // namespace cpu

struct BevMasksKernels {
  void (*masks)(const at::Tensor& boxes, const at::Tensor& rot, const at::Tensor& offsets, const BevParams& p,
                const at::Tensor& fg, const at::Tensor& bg);
};

std::tuple<at::Tensor, at::Tensor> bev_masks(const BevMasksKernels* kernels, const at::Tensor& boxes,
                                             const at::Tensor& offsets, double x_min, double y_min, double cell_x,
                                             double cell_y, int64_t height, int64_t width, double bg_extend_length,
                                             double bg_extend_weight, c10::string_view scale_mask,
                                             c10::string_view background);

}  // namespace hcam_ops
