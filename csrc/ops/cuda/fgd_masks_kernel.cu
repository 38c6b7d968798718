// CUDA rasteriser of the FGD masks: a block per image. Boxes are staged in
// shared memory a block-width at a time as cell ranges; each thread owns
// cells and takes the max of 1 / area over the boxes covering them; a block
// reduction counts the background cells.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../common.h"
#include "../fgd_masks.h"
#include "block_reduce.cuh"
#include "launch.h"

namespace hcam_ops::cuda {

namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    masks_kernel(const scalar_t* __restrict__ boxes, const int64_t* __restrict__ offsets,
                 const scalar_t* __restrict__ img, int64_t H, int64_t W, scalar_t* __restrict__ fg,
                 scalar_t* __restrict__ bg) {
  __shared__ BoxCells<scalar_t> cells[kThreads];
  __shared__ long long red[32];
  const int64_t b = blockIdx.x, HWn = H * W;
  const int64_t first = offsets[b], last = offsets[b + 1];
  scalar_t* fb = fg + b * HWn;
  for (int64_t j = threadIdx.x; j < HWn; j += blockDim.x) fb[j] = scalar_t(0);
  for (int64_t i0 = first; i0 < last; i0 += kThreads) {
    const int n = last - i0 < kThreads ? static_cast<int>(last - i0) : kThreads;
    __syncthreads();
    if (threadIdx.x < n) {
      cells[threadIdx.x] = box_cells<scalar_t>(boxes + 4 * (i0 + threadIdx.x), img[2 * b], img[2 * b + 1], H, W);
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < HWn; j += blockDim.x) {
      const int64_t y = j / W, x = j % W;
      scalar_t v = fb[j];
      for (int i = 0; i < n; ++i) {
        const auto& r = cells[i];
        if (y >= r.y0 && y <= r.y1 && x >= r.x0 && x <= r.x1) v = max(v, r.inv_area);
      }
      fb[j] = v;
    }
  }
  long long zeros = 0;
  for (int64_t j = threadIdx.x; j < HWn; j += blockDim.x) zeros += fb[j] == scalar_t(0);
  zeros = block_allreduce(zeros, SumOp{}, red);
  const scalar_t v = zeros > 0 ? scalar_t(1) / static_cast<scalar_t>(zeros) : scalar_t(0);
  scalar_t* gb = bg + b * HWn;
  for (int64_t j = threadIdx.x; j < HWn; j += blockDim.x) gb[j] = fb[j] == scalar_t(0) ? v : scalar_t(0);
}

}  // namespace

void fgd_masks(const at::Tensor& boxes, const at::Tensor& offsets, const at::Tensor& img_shapes, const at::Tensor& fg,
               const at::Tensor& bg) {
  const int64_t B = fg.size(0), H = fg.size(1), W = fg.size(2);
  AT_DISPATCH_FLOATING_TYPES(boxes.scalar_type(), "fgd_masks", [&] {
    launch<masks_kernel<scalar_t>>(checked_grid(B), kThreads, 0, boxes.data_ptr<scalar_t>(),
                                   offsets.data_ptr<int64_t>(), img_shapes.data_ptr<scalar_t>(), H, W,
                                   fg.data_ptr<scalar_t>(), bg.data_ptr<scalar_t>());
  });
}

namespace {
constexpr FgdMasksKernels kKernels{&fgd_masks};
}  // namespace

TORCH_LIBRARY_IMPL(hcam_ops, CUDA, m) {
  m.impl("fgd_masks", cuda_entry<&hcam_ops::fgd_masks, &kKernels>());
}

}  // namespace hcam_ops::cuda
