// Host-side view of CAM-family inputs, shared by the CPU and CUDA
// implementations: feature layout, argument checks, and the per-level weight
// rows a feature pass reads.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <utility>
#include <vector>

#include "cam_math.h"
#include "common.h"

namespace hcam_ops {

// Features as a contiguous [B, R, S] buffer: rows of S contiguous elements.
// channels_first: rows are channels (R = C, S = N), as in a [B, C, H, W] map
// or a transposed [B, N, C] view; otherwise rows are positions (R = N, S = C),
// as in [B, N, C] tokens or a channels-last map. Either is read in place.
struct FeatureView {
  at::Tensor data;
  int64_t B = 0, N = 0, C = 0;
  bool channels_first = false;
  int64_t rows() const { return channels_first ? C : N; }
  int64_t cols() const { return channels_first ? N : C; }
};

FeatureView view_features(const at::Tensor& features, const char* op);

// Gradient buffer for `features`: the tensor to return (same shape, and the
// same strides whenever view_features read the input in place) and its
// contiguous [B, R, S] alias for the kernels to write.
std::pair<at::Tensor, at::Tensor> empty_features_grad(const at::Tensor& features, const FeatureView& view);

// The levels of one CAM computation: level l uses weight[l] ([K_l, C]) and
// class index[l][b * index_stride] for sample b.
struct Levels {
  std::vector<at::Tensor> weights;
  std::vector<const int64_t*> index;
  std::vector<at::Tensor> index_tensors;  // keep the index buffers alive
  int64_t index_stride = 1;

  int64_t size() const { return static_cast<int64_t>(weights.size()); }

  template <typename T>
  WeightRows<T> rows(int64_t first, int64_t count) const {
    WeightRows<T> r{};
    for (int64_t l = 0; l < count; ++l) {
      r.base[l] = weights[first + l].data_ptr<T>();
      r.index[l] = index[first + l];
      r.num_rows[l] = weights[first + l].size(0);
    }
    for (int64_t l = count; l < kPassLevels; ++l) {
      r.base[l] = nullptr;
      r.index[l] = index[first];
      r.num_rows[l] = 0;
    }
    r.index_stride = index_stride;
    r.row_len = weights[first].size(1);
    return r;
  }
};

// One weight [K, C] and an index [B, L]: L levels sharing the weight.
Levels levels_of_index(const at::Tensor& weight, const at::Tensor& index, const FeatureView& v,
                       const at::Tensor& features, const char* op);
// A weight [K_l, C] and an index [B] per level.
Levels levels_of_lists(at::TensorList weights, at::TensorList indices, const FeatureView& v, const at::Tensor& features,
                       const char* op);

// Raises a clear error for a class index outside [0, K_l); the indices must be
// host memory. The drivers call it where the device's passes ask for it
// (CamPasses::checks_index_range: the CPU's); on CUDA it would cost a device
// sync, so the Python front checks there and the kernels write NaN for such a
// sample instead of reading out of bounds.
void check_index_range(const Levels& levels, int64_t B, const char* op);

// Rows for the row ops: a supported float dtype and a non-empty last dim; the
// pair form also checks that p and q agree in shape, dtype and device.
void check_rows(const at::Tensor& x, const char* op);
void check_same_rows(const at::Tensor& p, const at::Tensor& q, const char* op);

// Raises "<op>: <name> is on <device>, <ref_name> on <device>" unless t is on
// ref's device: a backward's grad or saved tensors must be, or a kernel would
// be handed a pointer to another device's memory.
void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name,
                       const char* op);
inline void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& features, const char* op) {
  check_same_device(t, name, features, "features", op);
}

// "fine_to_coarse" -> true, "coarse_to_fine" -> false; anything else raises.
bool parse_direction(c10::string_view direction, const char* op);

// Rows handled per block or task along a reduced dimension of `rows`, so that
// about `target` pieces of work exist in all.
int64_t rows_per_split(int64_t rows, int64_t units, int64_t target, int64_t min_rows);

}  // namespace hcam_ops
