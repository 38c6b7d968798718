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

// The published inside test: DistillBEV tests its grid points against the
// boxes with mmdet3d v0.17's box_np_ops.points_in_rbbox (z_axis = 2, origin
// (0.5, 0.5, 0)), the boxes' z set to 0 and dz to 1 and the points' z to 0.5,
// all in float32 (LiDARInstance3DBoxes holds float32; the grid is float32).
// The box's 8 corners (center_to_corner_box3d: local corners dims * (a - 0.5,
// b - 0.5, e), rotated by einsum against [[c, -s, 0], [s, c, 0], [0, 0, 1]],
// plus the centre), its 6 faces (corner_to_surfaces_3d), each face's normal
// the cross product of its first corners' differences and its offset
// (surface_equ_3d); a point is outside as soon as one face gives a sign >= 0
// (points_in_convex_polygon_3d_jit): a point on a face is outside, a NaN sign
// is not. Operation for operation and in float32 as there, every product
// rounded on its own (bev_mul), so the masks are the published ones bit for
// bit where the rotation is (yaws at multiples of pi/2; for others the
// published float32 sin / cos, numpy's own, may differ from ours in the last
// bit).
struct BevFaces {
  float n[6][3];
  float d[6];
};

C10_HOST_DEVICE inline BevFaces bev_faces(float x, float y, float dx, float dy, float c, float s) {
  // corner k is (a, b, e): box_np_ops' unravel order [0, 1, 3, 2, 4, 5, 7, 6]
  constexpr int kCorner[8][3] = {{0, 0, 0}, {0, 0, 1}, {0, 1, 1}, {0, 1, 0},
                                 {1, 0, 0}, {1, 0, 1}, {1, 1, 1}, {1, 1, 0}};
  constexpr int kFace[6][3] = {{0, 1, 2}, {7, 6, 5}, {0, 3, 7}, {1, 5, 6}, {0, 4, 5}, {3, 2, 6}};
  float C[8][3];
  for (int k = 0; k < 8; ++k) {
    const float lx = bev_mul(dx, static_cast<float>(kCorner[k][0]) - 0.5f);
    const float ly = bev_mul(dy, static_cast<float>(kCorner[k][1]) - 0.5f);
    const float lz = bev_mul(1.0f, static_cast<float>(kCorner[k][2]) - 0.0f);  // dz = 1
    C[k][0] = ((bev_mul(lx, c) + bev_mul(ly, s)) + bev_mul(lz, 0.0f)) + x;
    C[k][1] = ((bev_mul(lx, -s) + bev_mul(ly, c)) + bev_mul(lz, 0.0f)) + y;
    C[k][2] = ((bev_mul(lx, 0.0f) + bev_mul(ly, 0.0f)) + bev_mul(lz, 1.0f)) + 0.0f;  // z = 0
  }
  BevFaces f;
  for (int k = 0; k < 6; ++k) {
    const float* p0 = C[kFace[k][0]];
    const float* p1 = C[kFace[k][1]];
    const float* p2 = C[kFace[k][2]];
    const float v0[3] = {p0[0] - p1[0], p0[1] - p1[1], p0[2] - p1[2]};
    const float v1[3] = {p1[0] - p2[0], p1[1] - p2[1], p1[2] - p2[2]};
    f.n[k][0] = bev_mul(v0[1], v1[2]) - bev_mul(v0[2], v1[1]);
    f.n[k][1] = bev_mul(v0[2], v1[0]) - bev_mul(v0[0], v1[2]);
    f.n[k][2] = bev_mul(v0[0], v1[1]) - bev_mul(v0[1], v1[0]);
    f.d[k] = -((bev_mul(f.n[k][0], p0[0]) + bev_mul(f.n[k][1], p0[1])) + bev_mul(f.n[k][2], p0[2]));
  }
  return f;
}

C10_HOST_DEVICE inline bool bev_inside(const BevFaces& f, float px, float py) {
  for (int k = 0; k < 6; ++k) {
    const float sign = ((bev_mul(px, f.n[k][0]) + bev_mul(py, f.n[k][1])) + bev_mul(0.5f, f.n[k][2])) + f.d[k];
    if (sign >= 0.0f) return false;
  }
  return true;
}

// One box, ready for the cell test: the faces of the box and of the enlarged
// box (bev_faces, float32), the two fg scales of its cells: sqrt(cell_area /
// (dx * dy)) inside the box, cell_area / (dx * dy) where the enlarged box
// decides (bg_extend on), both in the boxes' dtype; and, for culling only, the
// centre's y and the half height (along y) of the enlarged box's axis-aligned
// bounds.
template <typename T>
struct BevBox {
  BevFaces inner, ring;
  T cy, inner_scale, ring_scale, ry;
};

// row = (x, y, dx, dy, yaw); cs = (cos, sin) of its yaw in float32
// (bev_masks.cpp); extend = cell_x * bg_extend_length (0: off). The enlarged
// box's sizes are dx + extend and dy + extend, in float32.
template <typename T>
C10_HOST_DEVICE inline BevBox<T> bev_box(const T* row, const T* cs, T cell_area, T extend) {
  BevBox<T> b;
  const float x = static_cast<float>(row[0]), y = static_cast<float>(row[1]);
  const float dx = static_cast<float>(row[2]), dy = static_cast<float>(row[3]), e = static_cast<float>(extend);
  const float c = static_cast<float>(cs[0]), s = static_cast<float>(cs[1]);
  b.inner = bev_faces(x, y, dx, dy, c, s);
  b.ring = e > 0.0f ? bev_faces(x, y, dx + e, dy + e, c, s) : b.inner;
  b.cy = row[1];
  b.ring_scale = cell_area / (row[2] * row[3]);
  b.inner_scale = sqrt(b.ring_scale);
  const T ac = cs[0] < T(0) ? -cs[0] : cs[0], as = cs[1] < T(0) ? -cs[1] : cs[1];
  const T ehx = (row[2] + extend) / T(2), ehy = (row[3] + extend) / T(2);
  b.ry = bev_mul(as, ehx) + bev_mul(ac, ehy);  // culling only
  return b;
}

// Whether a point at y = py may lie in the (enlarged) box: inside means
// within the rotated rectangle up to float32 rounding, so |py - cy| < ry up
// to that; the slack covers ry's rounding and float32's many times over, so
// culling never changes a result.
template <typename T>
C10_HOST_DEVICE inline bool bev_row_may_hit(const BevBox<T>& b, T py, T slack) {
  const T d = py - b.cy;
  return (d < T(0) ? -d : d) <= bev_mul(b.ry, T(1.001)) + slack;
}

// The foreground weight and fg scale of one cell over the boxes box[0..n) of
// its image: the first box (lowest index) that holds the cell gives the scale;
// with bg_extend on, the first enlarged box that holds it overrides it.
template <typename T>
struct BevCell {
  T fm, scale;
};

// (px, py): the cell's point in float32, as the published grid
// (bev_coord<float>).
template <typename T>
C10_HOST_DEVICE inline BevCell<T> bev_cell(const BevBox<T>* box, int64_t n, float px, float py, bool extend_on,
                                           T weight) {
  int64_t inner = -1, ring = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (inner < 0 && bev_inside(box[i].inner, px, py)) inner = i;
    if (extend_on && ring < 0 && bev_inside(box[i].ring, px, py)) ring = i;
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

// boxes [N, 5] (x, y, dx, dy, yaw), rot [N, 2] (bev_masks.cpp) in the
// boxes' dtype and on their device, image i's boxes at rows offsets[i] ..
// offsets[i + 1] (checked by bev_masks.cpp: from 0 to N, non-decreasing);
// fg, bg [B, H, W] in the boxes' dtype (row = y, column = x).
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
