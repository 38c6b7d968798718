// Boxes of a batch of images as one [N, K] tensor with [B + 1] offsets (image
// i's boxes are rows offsets[i] .. offsets[i + 1]): the checks that
// fgd_masks and bev_masks share, run before dispatch so both devices get them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace hcam_ops {

// boxes [N, columns] float32/float64; offsets int64 [B + 1] on the boxes'
// device, non-decreasing from 0 to N. The offsets' values are read on the
// host: a copy (one sync) for CUDA boxes. `layout` names the columns in the
// error, e.g. "(x1, y1, x2, y2)".
inline void check_box_batch(const char* op, const at::Tensor& boxes, const at::Tensor& offsets, int64_t columns,
                            const char* layout) {
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(1) == columns, op, ": boxes must be [N, ", columns, "] ", layout,
              ", got shape ", boxes.sizes());
  TORCH_CHECK(boxes.scalar_type() == at::kFloat || boxes.scalar_type() == at::kDouble, op,
              ": boxes must be float32 or float64, got ", boxes.scalar_type());
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1 && offsets.scalar_type() == at::kLong, op,
              ": offsets must be int64 [B + 1], got ", offsets.scalar_type(), " ", offsets.sizes());
  TORCH_CHECK(offsets.device() == boxes.device(), op, ": boxes and offsets must be on one device, got ", boxes.device(),
              " and ", offsets.device());
  const auto host = offsets.to(at::kCPU).contiguous();
  const int64_t* o = host.const_data_ptr<int64_t>();
  const int64_t B = host.size(0) - 1, N = boxes.size(0);
  TORCH_CHECK(o[0] == 0 && o[B] == N, op, ": offsets must be non-decreasing from 0 to N = boxes.size(0) = ", N,
              ", got offsets[0] = ", o[0], ", offsets[", B, "] = ", o[B]);
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(o[b] <= o[b + 1], op, ": offsets must be non-decreasing from 0 to N = boxes.size(0) = ", N,
                ", got offsets[", b, "] = ", o[b], " > offsets[", b + 1, "] = ", o[b + 1]);
  }
}

}  // namespace hcam_ops
