// FGD masks from boxes (docs/ops/fgd.md#fgd_masks_from_boxes): the device-independent driver
// (fgd_masks.cpp), the rasterisers each device supplies to it, and the
// cell-range rule both share.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>

namespace hcam_ops {

// One box in feature cells: inclusive ranges as computed (x_min = floor(x1 /
// img_w * W), x_max = ceil(x2 / img_w * W)), and 1 / area of those ranges,
// before any clipping to the map. Arithmetic in the boxes' dtype, as written.
template <typename T>
struct BoxCells {
  int64_t y0, y1, x0, x1;
  T inv_area;
};

// A cell edge as an index: clamped to [-1, n] before the cast, which covers
// the same cells of an n-cell side (none past an edge) and keeps the cast
// defined for values beyond int64 (x2 = 1e30).
template <typename T>
C10_HOST_DEVICE inline int64_t cell_index(T edge, int64_t n) {
  return static_cast<int64_t>(edge < T(-1) ? T(-1) : edge > static_cast<T>(n) ? static_cast<T>(n) : edge);
}

template <typename T>
C10_HOST_DEVICE inline bool finite_value(T v) {
  return fabs(v) <= std::numeric_limits<T>::max();  // false for NaN and +-Inf
}

// A box with a non-finite edge (NaN or Inf, unchecked: check_boxes=False or
// under torch.compile) covers nothing: the float-to-integer cast of such a
// value differs between a GPU (NaN to 0) and x86 (INT64_MIN). The area is
// the ranges' product in T (as the integers' product rounded to T once).
template <typename T>
C10_HOST_DEVICE inline BoxCells<T> box_cells(const T* box, T img_h, T img_w, int64_t H, int64_t W) {
  const T x0 = floor(box[0] / img_w * static_cast<T>(W));
  const T y0 = floor(box[1] / img_h * static_cast<T>(H));
  const T x1 = ceil(box[2] / img_w * static_cast<T>(W));
  const T y1 = ceil(box[3] / img_h * static_cast<T>(H));
  if (!(finite_value(x0) && finite_value(y0) && finite_value(x1) && finite_value(y1))) {
    return {0, -1, 0, -1, T(0)};  // an empty range
  }
  return {cell_index(y0, H), cell_index(y1, H), cell_index(x0, W), cell_index(x1, W),
          T(1) / ((y1 + T(1) - y0) * (x1 + T(1) - x0))};
}

// boxes [N, 4] (x1, y1, x2, y2), image i's boxes at rows offsets[i] ..
// offsets[i + 1]; img_shapes [B, 2] (h, w) in the boxes' dtype; fg, bg
// [B, H, W] in the boxes' dtype.
struct FgdMasksKernels {
  void (*masks)(const at::Tensor& boxes, const at::Tensor& offsets, const at::Tensor& img_shapes, const at::Tensor& fg,
                const at::Tensor& bg);
};

std::tuple<at::Tensor, at::Tensor> fgd_masks(const FgdMasksKernels* kernels, const at::Tensor& boxes,
                                             const at::Tensor& offsets, const at::Tensor& img_shapes, int64_t height,
                                             int64_t width);

}  // namespace hcam_ops
