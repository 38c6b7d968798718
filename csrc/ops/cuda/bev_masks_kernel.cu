// CUDA rasteriser of the DistillBEV masks: one thread per box prepares the
// boxes; one thread per cell tests the cell's point (its low corner) against
// its image's boxes in order, and each block adds its count of fm == 0 to its
// image's total; one thread per cell then finishes both masks.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <algorithm>

#include "../common.h"
#include "../bev_masks.h"
#include "block_reduce.cuh"
#include "launch.h"

namespace hcam_ops::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    prepare_kernel(const T* __restrict__ boxes, const T* __restrict__ rot, int64_t N, T cell_area, T extend,
                   BevBox<T>* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < N) out[i] = bev_box<T>(boxes + 5 * i, rot + 2 * i, cell_area, extend);
}

// Blocks [b * per_image, (b + 1) * per_image) cover image b's H * W cells.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    cells_kernel(const BevBox<T>* __restrict__ box, const int64_t* __restrict__ offsets, int64_t per_image, int64_t H,
                 int64_t W, float x_min, float y_min, float cell_x, float cell_y, bool extend_on, T weight,
                 T* __restrict__ fg, T* __restrict__ bg, unsigned long long* __restrict__ zeros) {
  __shared__ unsigned long long red[32];
  const int64_t b = blockIdx.x / per_image, HWn = H * W;
  const int64_t j = (blockIdx.x % per_image) * kThreads + threadIdx.x;
  unsigned long long zero = 0;
  if (j < HWn) {
    const int64_t first = offsets[b], n = offsets[b + 1] - first;
    // the published grid points, in float32 (the inside test's precision)
    const float px = bev_coord(x_min, j % W, cell_x);
    const float py = bev_coord(y_min, j / W, cell_y);
    const auto c = bev_cell<T>(box + first, n, px, py, extend_on, weight);
    fg[b * HWn + j] = c.fm;
    bg[b * HWn + j] = c.scale;
    zero = c.fm == T(0);
  }
  zero = block_allreduce(zero, SumOp{}, red);
  if (threadIdx.x == 0 && zero > 0) atomicAdd(zeros + b, zero);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    finish_kernel(int64_t per_image, int64_t HWn, const unsigned long long* __restrict__ zeros, BevScale mode,
                  BevBackground background, T* __restrict__ fg, T* __restrict__ bg) {
  const int64_t b = blockIdx.x / per_image;
  const int64_t j = (blockIdx.x % per_image) * kThreads + threadIdx.x;
  if (j >= HWn) return;
  const unsigned long long z = zeros[b];
  const T s = z > 0 ? T(1) / static_cast<T>(z) : T(0);
  const int64_t k = b * HWn + j;
  bev_finish<T>(fg[k], bg[k], s, mode, background, fg + k, bg + k);
}

}  // namespace

void bev_masks(const at::Tensor& boxes, const at::Tensor& rot, const at::Tensor& offsets, const BevParams& p,
               const at::Tensor& fg, const at::Tensor& bg) {
  const int64_t B = fg.size(0), H = fg.size(1), W = fg.size(2), N = boxes.size(0);
  const int64_t per_image = (H * W + kThreads - 1) / kThreads;
  auto zeros = at::zeros({B}, offsets.options());  // int64, read as unsigned long long
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "bev_masks", [&] {
    using T = scalar_t;
    const T cell_x = static_cast<T>(p.cell_x), cell_y = static_cast<T>(p.cell_y);
    const T extend = cell_x * static_cast<T>(p.extend_length);
    const bool extend_on = p.extend_length > 0 && p.extend_weight > 0;
    auto prepared = at::empty({std::max<int64_t>(N, 1) * static_cast<int64_t>(sizeof(BevBox<T>))},
                              boxes.options().dtype(at::kByte));
    auto* box = reinterpret_cast<BevBox<T>*>(prepared.data_ptr<uint8_t>());
    if (N > 0) {
      launch<prepare_kernel<T>>(checked_grid((N + kThreads - 1) / kThreads), kThreads, 0, boxes.data_ptr<T>(),
                                rot.data_ptr<T>(), N, cell_x * cell_y, extend, box);
    }
    auto* z = reinterpret_cast<unsigned long long*>(zeros.data_ptr<int64_t>());
    launch<cells_kernel<T>>(checked_grid(B * per_image), kThreads, 0, box, offsets.data_ptr<int64_t>(), per_image, H, W,
                            static_cast<float>(p.x_min), static_cast<float>(p.y_min), static_cast<float>(p.cell_x),
                            static_cast<float>(p.cell_y), extend_on, static_cast<T>(p.extend_weight), fg.data_ptr<T>(),
                            bg.data_ptr<T>(), z);
    launch<finish_kernel<T>>(checked_grid(B * per_image), kThreads, 0, per_image, H * W, z, p.scale, p.background,
                             fg.data_ptr<T>(), bg.data_ptr<T>());
  });
}

namespace {
constexpr BevMasksKernels kKernels{&bev_masks};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("bev_masks", cuda_entry<&hcam_ops::bev_masks, &kKernels>());
}

}  // namespace hcam_ops::cuda
