// bev_masks: DistillBEV's foreground / background masks on the BEV grid from
// rotated boxes (docs/ops/fgd.md#bev_masks_from_boxes): schema, checks and the
// device-independent driver.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <cmath>
#include <string>

#include "bev_masks.h"
#include "box_batch.h"

namespace hcam_ops {

namespace {
constexpr const char* kOp = "bev_masks_from_boxes";

BevScale parse_scale(const std::string& s) {
  if (s == "combine") return BevScale::Combine;
  if (s == "separate") return BevScale::Separate;
  if (s == "bg_only") return BevScale::BgOnly;
  TORCH_CHECK(s == "none", kOp, ": scale_mask must be \"combine\", \"separate\", \"bg_only\" or \"none\", got \"", s,
              "\"");
  return BevScale::None;
}

BevBackground parse_background(const std::string& s) {
  if (s == "logical_not") return BevBackground::LogicalNot;
  TORCH_CHECK(s == "1minus", kOp, ": background must be \"logical_not\" or \"1minus\", got \"", s, "\"");
  return BevBackground::OneMinus;
}

// (cos, sin) of each yaw, [N, 2] in the boxes' dtype on their device: the
// published inside test runs on float32 boxes (bev_faces), so the yaw rounded
// to float32, its cos and sin in double with the C library's (those behind the
// reference's math.cos / math.sin) on the host, rounded to float32 (exact in
// either dtype); every device and CPU variant rotates by the same numbers. A
// copy of the yaws (one sync) for CUDA boxes.
at::Tensor yaw_rotations(const at::Tensor& boxes) {
  const auto yaw = boxes.select(1, 4).to(at::kCPU, at::kDouble).contiguous();
  auto rot = at::empty({boxes.size(0), 2}, yaw.options());
  const double* y = yaw.const_data_ptr<double>();
  double* r = rot.data_ptr<double>();
  for (int64_t i = 0; i < boxes.size(0); ++i) {
    const double y32 = static_cast<float>(y[i]);
    r[2 * i] = static_cast<float>(std::cos(y32));
    r[2 * i + 1] = static_cast<float>(std::sin(y32));
  }
  return rot.to(boxes.device(), boxes.scalar_type());
}
}  // namespace

std::tuple<at::Tensor, at::Tensor> bev_masks(const BevMasksKernels* kernels, const at::Tensor& boxes,
                                             const at::Tensor& offsets, double x_min, double y_min, double cell_x,
                                             double cell_y, int64_t height, int64_t width, double bg_extend_length,
                                             double bg_extend_weight, c10::string_view scale_mask,
                                             c10::string_view background) {
  check_box_batch(kOp, boxes, offsets, 5, "(x, y, dx, dy, yaw)");
  TORCH_CHECK(std::isfinite(x_min) && std::isfinite(y_min), kOp, ": pc_range must be finite, got (", x_min, ", ", y_min,
              ")");
  TORCH_CHECK(std::isfinite(cell_x) && std::isfinite(cell_y) && cell_x > 0 && cell_y > 0, kOp,
              ": cell_size must be positive and finite, got (", cell_x, ", ", cell_y, ")");
  TORCH_CHECK(height > 0 && width > 0, kOp, ": feat_shape must be positive, got (", height, ", ", width, ")");
  TORCH_CHECK(std::isfinite(bg_extend_length) && bg_extend_length >= 0, kOp,
              ": bg_extend_length must be finite and >= 0, got ", bg_extend_length);
  TORCH_CHECK(std::isfinite(bg_extend_weight) && bg_extend_weight >= 0, kOp,
              ": bg_extend_weight must be finite and >= 0, got ", bg_extend_weight);
  const BevParams p{x_min,
                    y_min,
                    cell_x,
                    cell_y,
                    bg_extend_length,
                    bg_extend_weight,
                    parse_scale(std::string(scale_mask)),
                    parse_background(std::string(background))};
  const int64_t B = offsets.size(0) - 1;
  const c10::DeviceGuard guard(boxes.device());
  const auto bx = boxes.contiguous(), off = offsets.contiguous();
  auto fg = at::empty({B, height, width}, boxes.options());
  auto bg = at::empty({B, height, width}, boxes.options());
  if (B == 0) return {fg, bg};
  const auto rot = yaw_rotations(bx);
  kernels->masks(bx, rot, off, p, fg, bg);
  return {fg, bg};
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // Returns (fg, bg) [B, height, width] in the boxes' dtype.
  m.def(
      "bev_masks(Tensor boxes, Tensor offsets, float x_min, float y_min, float cell_x, float cell_y, int height,"
      " int width, float bg_extend_length, float bg_extend_weight, str scale_mask, str background)"
      " -> (Tensor, Tensor)");
}

}  // namespace hcam_ops
