// fgd_masks: foreground / background masks from boxes (docs/ops/fgd.md#fgd_masks_from_boxes):
// schema, checks and the device-independent driver.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "box_batch.h"
#include "fgd_masks.h"

namespace hcam_ops {

namespace {
constexpr const char* kOp = "fgd_masks_from_boxes";
}

std::tuple<at::Tensor, at::Tensor> fgd_masks(const FgdMasksKernels* kernels, const at::Tensor& boxes,
                                             const at::Tensor& offsets, const at::Tensor& img_shapes, int64_t height,
                                             int64_t width) {
  check_box_batch(kOp, boxes, offsets, 4, "(x1, y1, x2, y2)");
  const int64_t B = offsets.size(0) - 1;
  TORCH_CHECK(img_shapes.dim() == 2 && img_shapes.size(0) == B && img_shapes.size(1) == 2, kOp,
              ": img_shapes must be [B, 2] = [", B, ", 2], got ", img_shapes.sizes());
  TORCH_CHECK(img_shapes.scalar_type() == boxes.scalar_type(), kOp, ": img_shapes is ", img_shapes.scalar_type(),
              ", boxes ", boxes.scalar_type());
  TORCH_CHECK(height > 0 && width > 0, kOp, ": feat_shape must be positive, got (", height, ", ", width, ")");
  TORCH_CHECK(img_shapes.device() == boxes.device(), kOp, ": boxes and img_shapes must be on one device, got ",
              boxes.device(), " and ", img_shapes.device());
  const c10::DeviceGuard guard(boxes.device());
  const auto bx = boxes.contiguous(), off = offsets.contiguous(), img = img_shapes.contiguous();
  auto fg = at::empty({B, height, width}, boxes.options());
  auto bg = at::empty({B, height, width}, boxes.options());
  if (B == 0) return {fg, bg};
  kernels->masks(bx, off, img, fg, bg);
  return {fg, bg};
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // Returns (fg, bg) [B, height, width] in the boxes' dtype.
  m.def(
      "fgd_masks(Tensor boxes, Tensor offsets, Tensor img_shapes, int height, int width)"
      " -> (Tensor, Tensor)");
}

}  // namespace hcam_ops
