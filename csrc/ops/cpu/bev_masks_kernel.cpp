// CPU rasteriser of the DistillBEV masks: the boxes are prepared once, then
// parallel over the rows of all images: each cell (its point the cell's
// low corner) is tested against those of its image's boxes that reach its
// row, in order; a second pass over the rows finishes both masks with the
// image's background scale.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <vector>

#include "../common.h"
#include "../bev_masks.h"
#include "isa.h"

namespace hcam_ops::cpu {

// The entry points, declared for every level (isa.h): this file's compilation
// at CPU_CAPABILITY defines that level's, the baseline one registers the active one.
template <Isa>
void bev_masks(const at::Tensor& boxes, const at::Tensor& rot, const at::Tensor& offsets, const BevParams& p,
               const at::Tensor& fg, const at::Tensor& bg);

template <>
void bev_masks<Isa::CPU_CAPABILITY>(const at::Tensor& boxes, const at::Tensor& rot, const at::Tensor& offsets,
                                    const BevParams& p, const at::Tensor& fg, const at::Tensor& bg) {
  const int64_t B = fg.size(0), H = fg.size(1), W = fg.size(2), N = boxes.size(0);
  const int64_t* off = offsets.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "bev_masks", [&] {
    using T = scalar_t;
    const T* bx = boxes.data_ptr<T>();
    const T* cs = rot.data_ptr<T>();
    const T cell_x = static_cast<T>(p.cell_x), cell_y = static_cast<T>(p.cell_y);
    const T extend = cell_x * static_cast<T>(p.extend_length), weight = static_cast<T>(p.extend_weight);
    const bool extend_on = p.extend_length > 0 && p.extend_weight > 0;
    const T cell_area = cell_x * cell_y;
    // The published grid points, in float32 (the inside test's precision).
    const float cell_x32 = static_cast<float>(p.cell_x), cell_y32 = static_cast<float>(p.cell_y);
    const float x_min32 = static_cast<float>(p.x_min), y_min32 = static_cast<float>(p.y_min);
    std::vector<BevBox<T>> prepared(static_cast<size_t>(N));
    at::parallel_for(0, N, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) prepared[i] = bev_box<T>(bx + 5 * i, cs + 2 * i, cell_area, extend);
    });
    T* f = fg.data_ptr<T>();
    T* g = bg.data_ptr<T>();
    // Pass 1: fm into fg, the fg scale into bg; the count of fm == 0 per row.
    // Each row tests only the boxes whose bounds reach it, kept in order (the
    // first box that holds a cell gives its scale).
    std::vector<int64_t> row_zeros(static_cast<size_t>(B * H));
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<BevBox<T>> row_boxes;
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / H, y = r % H;
        const float py32 = bev_coord(y_min32, y, cell_y32);
        const T py = static_cast<T>(py32);  // culling
        row_boxes.clear();
        for (int64_t i = off[b]; i < off[b + 1]; ++i) {
          if (bev_row_may_hit<T>(prepared[i], py, cell_y)) row_boxes.push_back(prepared[i]);
        }
        const BevBox<T>* box = row_boxes.data();
        const auto n = static_cast<int64_t>(row_boxes.size());
        int64_t zeros = 0;
        for (int64_t x = 0; x < W; ++x) {
          const float px32 = bev_coord(x_min32, x, cell_x32);
          const auto c = bev_cell<T>(box, n, px32, py32, extend_on, weight);
          f[r * W + x] = c.fm;
          g[r * W + x] = c.scale;
          zeros += c.fm == T(0);
        }
        row_zeros[r] = zeros;
      }
    });
    // Pass 2: the background scale per image, then both masks.
    std::vector<T> bg_scale(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      int64_t zeros = 0;
      for (int64_t y = 0; y < H; ++y) zeros += row_zeros[b * H + y];
      bg_scale[b] = zeros > 0 ? T(1) / static_cast<T>(zeros) : T(0);
    }
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T s = bg_scale[r / H];
        for (int64_t x = 0; x < W; ++x) {
          const int64_t j = r * W + x;
          bev_finish<T>(f[j], g[j], s, p.scale, p.background, f + j, g + j);
        }
      }
    });
  });
}

#if defined(CPU_CAPABILITY_DEFAULT)
namespace {
// The active level's kernels (isa.h), chosen when the library is loaded.
const BevMasksKernels kKernels{HCAM_CPU_DISPATCH(bev_masks)};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CPU, m) {
  m.impl("bev_masks", device_entry<&hcam_ops::bev_masks, &kKernels>);
}
#endif

}  // namespace hcam_ops::cpu
