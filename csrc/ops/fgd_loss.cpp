// FGD / DistillBEV feature-distillation loss (docs/ops/fgd.md#fgd_loss): schema and the
// device-independent driver. The forward reads student and teacher once (fgd_math.h says
// how the terms come out of one pass); the backward reads them once more and
// writes d student, so the saved state is a few [B, HW] and [B, C] vectors.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <utility>

#include "cam_features.h"
#include "common.h"
#include "fgd_loss.h"

namespace hcam_ops {

namespace {

constexpr const char* kOp = "fgd_loss";

// A mask [B, H, W] or [B, 1, H, W] as a contiguous [B, HW] in the accumulation dtype.
at::Tensor mask_rows(const at::Tensor& m, const at::Tensor& s, const char* name) {
  const int64_t B = s.size(0), H = s.size(2), W = s.size(3);
  const bool ok = (m.dim() == 3 && m.size(0) == B && m.size(1) == H && m.size(2) == W) ||
                  (m.dim() == 4 && m.size(0) == B && m.size(1) == 1 && m.size(2) == H && m.size(3) == W);
  TORCH_CHECK(ok, kOp, ": ", name, " must be [B, H, W] or [B, 1, H, W] = [", B, ", ", H, ", ", W, "], got shape ",
              m.sizes());
  TORCH_CHECK(is_float_type(m.scalar_type()), kOp, ": ", name, " must be a float tensor, got ", m.scalar_type());
  TORCH_CHECK(m.device() == s.device(), kOp, ": ", name, " is on ", m.device(), ", student on ", s.device());
  return m.reshape({B, H * W}).to(acc_type_of(s.scalar_type())).contiguous();
}

FgdInputs make_inputs(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& fg_mask,
                      const at::Tensor& bg_mask, const std::optional<at::Tensor>& fp_mask) {
  TORCH_CHECK(student.dim() == 4, kOp, ": student must be [B, C, H, W], got shape ", student.sizes());
  TORCH_CHECK(teacher.sizes() == student.sizes(), kOp, ": teacher ", teacher.sizes(), " and student ", student.sizes(),
              " must have one shape");
  check_float_type(student, kOp, "student");
  TORCH_CHECK(teacher.scalar_type() == student.scalar_type(), kOp, ": teacher is ", teacher.scalar_type(), ", student ",
              student.scalar_type());
  TORCH_CHECK(teacher.device() == student.device(), kOp, ": teacher is on ", teacher.device(), ", student on ",
              student.device());
  TORCH_CHECK(student.size(1) > 0 && student.size(2) * student.size(3) > 0, kOp,
              ": maps need C > 0 and H * W > 0, got shape ", student.sizes());
  const int64_t B = student.size(0), C = student.size(1), HW = student.size(2) * student.size(3);
  FgdInputs in;
  // channels_last or strided maps are copied once: the kernels stream [C, HW] rows.
  in.student = student.contiguous().view({B, C, HW});
  in.teacher = teacher.contiguous().view({B, C, HW});
  in.fg = mask_rows(fg_mask, student, "fg_mask");
  in.bg = mask_rows(bg_mask, student, "bg_mask");
  // Absent, the fp term reads as zero: the kernels skip the mask, no [B, HW] of zeros.
  if (fp_mask.has_value() && fp_mask->defined()) in.fp = mask_rows(*fp_mask, student, "fp_mask");
  return in;
}

FgdParams make_params(double spatial_temperature, double channel_temperature, at::ArrayRef<double> weights,
                      int64_t spatial_mode, double spatial_student_ratio, bool spatial_mask, bool channel_mask,
                      int64_t batch) {
  TORCH_CHECK(std::isfinite(spatial_temperature) && spatial_temperature > 0, kOp,
              ": spatial_temperature must be positive and finite, got ", spatial_temperature);
  TORCH_CHECK(std::isfinite(channel_temperature) && channel_temperature > 0, kOp,
              ": channel_temperature must be positive and finite, got ", channel_temperature);
  TORCH_CHECK(weights.size() == kNumTerms, kOp, ": weights must hold ", int(kNumTerms),
              " values (fg, bg, attention, channel, spatial, fp), got ", weights.size());
  TORCH_CHECK(spatial_mode >= 0 && spatial_mode < kNumSpatialModes, kOp,
              ": spatial_mode must be 0 (teacher), 1 (combined) or 2 (student_mix), got ", spatial_mode);
  TORCH_CHECK(std::isfinite(spatial_student_ratio) && spatial_student_ratio >= 0, kOp,
              ": spatial_student_ratio must be non-negative and finite, got ", spatial_student_ratio);
  FgdParams p;
  p.inv_ts = 1.0 / spatial_temperature;
  p.inv_tc = 1.0 / channel_temperature;
  for (int k = 0; k < kNumTerms; ++k) {
    TORCH_CHECK(std::isfinite(weights[k]), kOp, ": weights must be finite, got ", weights[k]);
    p.scale[k] = weights[k] / static_cast<double>(std::max<int64_t>(batch, 1));
  }
  p.mode = spatial_mode;
  p.ratio = spatial_student_ratio;
  p.spatial_mask = spatial_mask;
  p.channel_mask = channel_mask;
  p.has_fp = false;
  return p;
}

// What both drivers start from: the parameters, checked first, and the inputs.
std::pair<FgdInputs, FgdParams> prepare(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& fg_mask,
                                        const at::Tensor& bg_mask, const std::optional<at::Tensor>& fp_mask,
                                        double spatial_temperature, double channel_temperature,
                                        at::ArrayRef<double> weights, int64_t spatial_mode,
                                        double spatial_student_ratio, bool spatial_mask, bool channel_mask) {
  auto p = make_params(spatial_temperature, channel_temperature, weights, spatial_mode, spatial_student_ratio,
                       spatial_mask, channel_mask, student.size(0));
  auto in = make_inputs(student, teacher, fg_mask, bg_mask, fp_mask);
  p.has_fp = in.fp.defined();
  return {std::move(in), p};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> fgd_loss(
    const FgdLossKernels* kernels, const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& fg_mask,
    const at::Tensor& bg_mask, const std::optional<at::Tensor>& fp_mask, double spatial_temperature,
    double channel_temperature, at::ArrayRef<double> weights, int64_t spatial_mode, double spatial_student_ratio,
    bool spatial_mask, bool channel_mask) {
  const c10::DeviceGuard guard(student.device());
  const auto [in, p] = prepare(student, teacher, fg_mask, bg_mask, fp_mask, spatial_temperature, channel_temperature,
                               weights, spatial_mode, spatial_student_ratio, spatial_mask, channel_mask);
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  const auto acc = student.options().dtype(acc_type_of(student.scalar_type()));
  auto col = at::empty({B, kNumCol, HW}, acc);
  auto row = at::empty({B, kNumRow, C}, acc);
  auto sample = at::empty({B, kNumSample}, acc);
  if (B == 0) {
    // An empty batch has zero loss (and a zero gradient).
    return {at::zeros({kNumTerms}, student.options()), col, row, sample};
  }
  auto per_sample = at::empty({B, kNumTerms}, acc);
  kernels->forward(in, p, col, row, sample, per_sample);
  // The finishers weight each sample's terms; a fixed-order sum over the batch.
  auto terms = per_sample.sum(0);
  return {terms.to(student.scalar_type()), col, row, sample};
}

at::Tensor fgd_loss_backward(const FgdLossKernels* kernels, const at::Tensor& grad, const at::Tensor& student,
                             const at::Tensor& teacher, const at::Tensor& fg_mask, const at::Tensor& bg_mask,
                             const std::optional<at::Tensor>& fp_mask, const at::Tensor& col, const at::Tensor& row,
                             const at::Tensor& sample, double spatial_temperature, double channel_temperature,
                             at::ArrayRef<double> weights, int64_t spatial_mode, double spatial_student_ratio,
                             bool spatial_mask, bool channel_mask) {
  const c10::DeviceGuard guard(student.device());
  const auto [in, p] = prepare(student, teacher, fg_mask, bg_mask, fp_mask, spatial_temperature, channel_temperature,
                               weights, spatial_mode, spatial_student_ratio, spatial_mask, channel_mask);
  const int64_t B = in.student.size(0), C = in.student.size(1), HW = in.student.size(2);
  TORCH_CHECK(grad.numel() == kNumTerms, kOp, "_backward: grad must hold ", int(kNumTerms), " values, got shape ",
              grad.sizes());
  TORCH_CHECK(col.sizes() == at::IntArrayRef({B, kNumCol, HW}) && row.sizes() == at::IntArrayRef({B, kNumRow, C}) &&
                  sample.sizes() == at::IntArrayRef({B, kNumSample}),
              kOp, "_backward: saved statistics do not match the maps ", student.sizes());
  // On another device than the maps, a kernel would be handed a foreign pointer.
  for (const auto& [t, name] : {std::pair{&grad, "grad"}, {&col, "col"}, {&row, "row"}, {&sample, "sample"}}) {
    check_same_device(*t, name, student, "student", "fgd_loss_backward");
  }
  auto grad_student = at::empty({B, C, HW}, in.student.options());
  if (B > 0) {
    const auto acc = acc_type_of(student.scalar_type());
    const auto g = grad.reshape({kNumTerms}).to(acc).contiguous();
    const auto c = col.to(acc).contiguous(), r = row.to(acc).contiguous(), s = sample.to(acc).contiguous();
    kernels->backward(in, p, g, c, r, s, grad_student);
  }
  return grad_student.view(student.sizes());
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // weights: (fg, bg, attention, channel, spatial, fp). spatial_mode: 0 teacher,
  // 1 combined, 2 student_mix (with spatial_student_ratio). fp_mask: None for
  // no fp term. Returns the six weighted terms [6] (the maps' dtype) and the
  // statistics the backward needs: col [B, 4, HW], row [B, 4, C], sample
  // [B, 10] (accumulation dtype).
  m.def(
      "fgd_loss(Tensor student, Tensor teacher, Tensor fg_mask, Tensor bg_mask, Tensor? fp_mask,"
      " float spatial_temperature, float channel_temperature, float[] weights, int spatial_mode,"
      " float spatial_student_ratio, bool spatial_mask, bool channel_mask) -> (Tensor, Tensor, Tensor, Tensor)");
  // d student for the upstream gradient of the six terms. The teacher and the
  // masks get none.
  m.def(
      "fgd_loss_backward(Tensor grad, Tensor student, Tensor teacher, Tensor fg_mask,"
      " Tensor bg_mask, Tensor? fp_mask, Tensor col, Tensor row, Tensor sample, float spatial_temperature,"
      " float channel_temperature, float[] weights, int spatial_mode, float spatial_student_ratio,"
      " bool spatial_mask, bool channel_mask) -> Tensor");
}

}  // namespace hcam_ops
