// CPU rasteriser of the FGD masks: parallel over images; each box raises the
// cells it covers to max(cell, 1 / area), then the background is the
// normalised complement.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>

#include "../common.h"
#include "../fgd_masks.h"
#include "isa.h"

namespace hcam_ops::cpu {

// The entry points, declared for every level (isa.h): this file's compilation
// at CPU_CAPABILITY defines that level's, the baseline one registers the active one.
template <Isa>
void fgd_masks(const at::Tensor& boxes, const at::Tensor& offsets, const at::Tensor& img_shapes, const at::Tensor& fg,
               const at::Tensor& bg);

template <>
void fgd_masks<Isa::CPU_CAPABILITY>(const at::Tensor& boxes, const at::Tensor& offsets, const at::Tensor& img_shapes,
                                    const at::Tensor& fg, const at::Tensor& bg) {
  const int64_t B = fg.size(0), H = fg.size(1), W = fg.size(2);
  const int64_t* off = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "fgd_masks", [&] {
    const scalar_t* bx = boxes.data_ptr<scalar_t>();
    const scalar_t* img = img_shapes.data_ptr<scalar_t>();
    scalar_t* f = fg.data_ptr<scalar_t>();
    scalar_t* g = bg.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        scalar_t* fb = f + b * H * W;
        std::fill_n(fb, H * W, scalar_t(0));
        for (int64_t i = off[b]; i < off[b + 1]; ++i) {
          const auto r = box_cells<scalar_t>(bx + 4 * i, img[2 * b], img[2 * b + 1], H, W);
          for (int64_t y = std::max<int64_t>(r.y0, 0); y <= std::min(r.y1, H - 1); ++y) {
            for (int64_t x = std::max<int64_t>(r.x0, 0); x <= std::min(r.x1, W - 1); ++x) {
              fb[y * W + x] = std::max(fb[y * W + x], r.inv_area);
            }
          }
        }
        int64_t zeros = 0;
        for (int64_t j = 0; j < H * W; ++j) zeros += fb[j] == scalar_t(0);
        const scalar_t v = zeros > 0 ? scalar_t(1) / static_cast<scalar_t>(zeros) : scalar_t(0);
        scalar_t* gb = g + b * H * W;
        for (int64_t j = 0; j < H * W; ++j) gb[j] = fb[j] == scalar_t(0) ? v : scalar_t(0);
      }
    });
  });
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const FgdMasksKernels kKernels{HCAM_CPU_DISPATCH(fgd_masks)};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("fgd_masks", device_entry<&hcam_ops::fgd_masks, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
