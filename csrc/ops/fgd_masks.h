// FGD masks from boxes (docs/ops/fgd.md#fgd_masks_from_boxes): the device-independent driver
// (fgd_masks.cpp), the rasterisers each device supplies to it, and the
// cell-range rule both share.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <tuple>

#include "cpu/isa.h"

namespace hcam_ops {

// One box in feature cells: inclusive ranges as computed (x_min = floor(x1 /
// img_w * W), x_max = ceil(x2 / img_w * W)), and 1 / area of those ranges,
// before any clipping to the map. Arithmetic in the boxes' dtype, as written.
template <typename T>
struct BoxCells {
  int64_t y0, y1, x0, x1;
  T inv_area;
};

template <typename T>
C10_HOST_DEVICE inline BoxCells<T> box_cells(const T* box, T img_h, T img_w, int64_t H, int64_t W) {
  BoxCells<T> r;
  r.x0 = static_cast<int64_t>(floor(box[0] / img_w * static_cast<T>(W)));
  r.y0 = static_cast<int64_t>(floor(box[1] / img_h * static_cast<T>(H)));
  r.x1 = static_cast<int64_t>(ceil(box[2] / img_w * static_cast<T>(W)));
  r.y1 = static_cast<int64_t>(ceil(box[3] / img_h * static_cast<T>(H)));
  r.inv_area = T(1) / static_cast<T>((r.y1 + 1 - r.y0) * (r.x1 + 1 - r.x0));
  return r;
}

// boxes [N, 4] (x1, y1, x2, y2), image i's boxes at rows offsets[i] ..
// offsets[i + 1]; img_shapes [B, 2] (h, w) in the boxes' dtype; fg, bg
// [B, H, W] in the boxes' dtype.
namespace cpu {
// One specialisation per compiled level (cpu/isa.h); cpu/<op>_kernel.cpp registers the active one.
template <Isa>
void fgd_masks(const at::Tensor& boxes, const at::Tensor& offsets, const at::Tensor& img_shapes, const at::Tensor& fg,
               const at::Tensor& bg);
}  // namespace cpu

struct FgdMasksKernels {
  void (*masks)(const at::Tensor& boxes, const at::Tensor& offsets, const at::Tensor& img_shapes, const at::Tensor& fg,
                const at::Tensor& bg);
};

std::tuple<at::Tensor, at::Tensor> fgd_masks(const FgdMasksKernels* kernels, const at::Tensor& boxes,
                                             const at::Tensor& offsets, const at::Tensor& img_shapes, int64_t height,
                                             int64_t width);

}  // namespace hcam_ops
