#include "cam_features.h"

#include <ATen/ops/empty.h>

#include <algorithm>

namespace hcam_ops {

namespace {

at::Tensor checked_weight(const at::Tensor& w, const at::Tensor& features, int64_t C, const char* op, int64_t level) {
  TORCH_CHECK(w.dim() == 2, op, ": weight of level ", level, " must be [K, C], got shape ", w.sizes());
  TORCH_CHECK(w.size(1) == C, op, ": weight of level ", level, " has ", w.size(1), " channels, features have ", C);
  TORCH_CHECK(w.size(0) > 0, op, ": weight of level ", level, " has no classes");
  TORCH_CHECK(w.scalar_type() == features.scalar_type(), op, ": weight of level ", level, " is ", w.scalar_type(),
              ", features are ", features.scalar_type(), "; cast one to the other's dtype");
  TORCH_CHECK(w.device() == features.device(), op, ": weight of level ", level, " is on ", w.device(), ", features on ",
              features.device());
  return w.contiguous();
}

void check_index_tensor(const at::Tensor& idx, const at::Tensor& features, int64_t B, const char* op) {
  TORCH_CHECK(idx.scalar_type() == at::kLong, op, ": class indices must be int64, got ", idx.scalar_type());
  TORCH_CHECK(idx.device() == features.device(), op, ": class indices are on ", idx.device(), ", features on ",
              features.device());
  TORCH_CHECK(idx.dim() >= 1 && idx.size(0) == B, op, ": class indices must have B = ", B, " rows, got shape ",
              idx.sizes());
}

}  // namespace

FeatureView view_features(const at::Tensor& f, const char* op) {
  TORCH_CHECK(f.dim() == 3 || f.dim() == 4, op, ": features must be [B, N, C] tokens or a [B, C, H, W] map, got shape ",
              f.sizes());
  check_float_type(f, op, "features");
  FeatureView v;
  v.B = f.size(0);
  if (f.dim() == 3) {
    v.N = f.size(1);
    v.C = f.size(2);
    if (f.is_contiguous()) {
      v.data = f;
    } else if (f.transpose(1, 2).is_contiguous()) {
      v.data = f.transpose(1, 2);
      v.channels_first = true;
    } else {
      v.data = f.contiguous();
    }
  } else {
    v.C = f.size(1);
    v.N = f.size(2) * f.size(3);
    if (f.is_contiguous()) {
      v.data = f.view({v.B, v.C, v.N});
      v.channels_first = true;
    } else if (f.is_contiguous(at::MemoryFormat::ChannelsLast)) {
      v.data = f.permute({0, 2, 3, 1}).reshape({v.B, v.N, v.C});
    } else {
      v.data = f.contiguous().view({v.B, v.C, v.N});
      v.channels_first = true;
    }
  }
  TORCH_CHECK(v.N > 0, op, ": features have no spatial positions (N = 0), shape ", f.sizes());
  TORCH_CHECK(v.C > 0, op, ": features have no channels (C = 0), shape ", f.sizes());
  return v;
}

std::pair<at::Tensor, at::Tensor> empty_features_grad(const at::Tensor& features, const FeatureView& v) {
  const auto opts = features.options();
  if (features.dim() == 3) {
    if (!v.channels_first) {
      auto g = at::empty({v.B, v.N, v.C}, opts);
      return {g, g};
    }
    auto alias = at::empty({v.B, v.C, v.N}, opts);
    return {alias.transpose(1, 2), alias};
  }
  const int64_t H = features.size(2), W = features.size(3);
  if (v.channels_first) {
    auto g = at::empty({v.B, v.C, H, W}, opts);
    return {g, g.view({v.B, v.C, v.N})};
  }
  auto nhwc = at::empty({v.B, H, W, v.C}, opts);
  return {nhwc.permute({0, 3, 1, 2}), nhwc.view({v.B, v.N, v.C})};
}

Levels levels_of_index(const at::Tensor& weight, const at::Tensor& index, const FeatureView& v,
                       const at::Tensor& features, const char* op) {
  check_index_tensor(index, features, v.B, op);
  TORCH_CHECK(index.dim() == 2, op, ": index must be [B] or [B, L], got shape ", index.sizes());
  TORCH_CHECK(index.size(1) > 0, op, ": index has no levels (L = 0)");
  Levels lv;
  const auto w = checked_weight(weight, features, v.C, op, 0);
  const auto idx = index.contiguous();
  lv.index_tensors.push_back(idx);
  lv.index_stride = idx.size(1);
  const int64_t* base = idx.data_ptr<int64_t>();
  for (int64_t l = 0; l < idx.size(1); ++l) {
    lv.weights.push_back(w);
    lv.index.push_back(base + l);
  }
  return lv;
}

Levels levels_of_lists(at::TensorList weights, at::TensorList indices, const FeatureView& v, const at::Tensor& features,
                       const char* op) {
  TORCH_CHECK(weights.size() == indices.size(), op, ": got ", weights.size(), " weights and ", indices.size(),
              " index tensors; one of each per level");
  Levels lv;
  for (size_t l = 0; l < weights.size(); ++l) {
    lv.weights.push_back(checked_weight(weights[l], features, v.C, op, l));
    check_index_tensor(indices[l], features, v.B, op);
    TORCH_CHECK(indices[l].dim() == 1, op, ": class index of level ", l, " must be [B], got shape ",
                indices[l].sizes());
    const auto idx = indices[l].contiguous();
    lv.index_tensors.push_back(idx);
    lv.index.push_back(idx.data_ptr<int64_t>());
  }
  lv.index_stride = 1;
  return lv;
}

void check_index_range(const Levels& levels, int64_t B, const char* op) {
  if (levels.size() == 0) return;
  for (int64_t l = 0; l < levels.size(); ++l) {
    const int64_t K = levels.weights[l].size(0);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t k = levels.index[l][b * levels.index_stride];
      TORCH_CHECK(k >= 0 && k < K, op, ": class index ", k, " of sample ", b, " at level ", l, " is outside [0, ", K,
                  ")");
    }
  }
}

void check_rows(const at::Tensor& x, const char* op) {
  TORCH_CHECK(is_float_type(x.scalar_type()), op, ": expected float16, bfloat16, float32 or float64, got ",
              x.scalar_type());
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) > 0, op, ": expected a non-empty last dimension, got shape ", x.sizes());
}

void check_same_rows(const at::Tensor& p, const at::Tensor& q, const char* op) {
  check_rows(p, op);
  TORCH_CHECK(p.sizes() == q.sizes(), op, ": the two logit tensors differ in shape: ", p.sizes(), " and ", q.sizes());
  TORCH_CHECK(p.scalar_type() == q.scalar_type(), op, ": the two logit tensors differ in dtype: ", p.scalar_type(),
              " and ", q.scalar_type());
  TORCH_CHECK(p.device() == q.device(), op, ": the two logit tensors are on ", p.device(), " and ", q.device());
}

void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& ref, const char* ref_name,
                       const char* op) {
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), ", ", ref_name, " on ", ref.device());
}

bool parse_direction(c10::string_view direction, const char* op) {
  if (direction == "fine_to_coarse") return true;
  if (direction == "coarse_to_fine") return false;
  TORCH_CHECK(false, op, ": direction must be 'fine_to_coarse' or 'coarse_to_fine', got '", std::string(direction),
              "'");
}

int64_t rows_per_split(int64_t rows, int64_t units, int64_t target, int64_t min_rows) {
  const int64_t max_splits = std::max<int64_t>(1, (rows + min_rows - 1) / min_rows);
  const int64_t want = std::max<int64_t>(1, (target + units - 1) / std::max<int64_t>(units, 1));
  const int64_t splits = std::min(max_splits, want);
  return (rows + splits - 1) / splits;
}

}  // namespace hcam_ops
