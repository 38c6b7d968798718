// softmax_kl: per-row KL between softmax(p / T) and softmax(q / T), docs/ops/cam.md#softmax_kl.
#include "softmax_kl.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "cam_features.h"

namespace hcam_ops {

at::Tensor softmax_kl(const SoftmaxKlKernels* kernels, const at::Tensor& p, const at::Tensor& q, double temperature,
                      c10::string_view direction) {
  const bool f2c = parse_direction(direction, "softmax_kl");
  check_same_rows(p, q, "softmax_kl");
  const c10::DeviceGuard guard(p.device());
  const auto pc = p.contiguous(), qc = q.contiguous();
  auto out = at::empty(p.sizes().slice(0, p.dim() - 1), p.options());
  if (pc.numel() > 0) kernels->forward(pc, qc, temperature, f2c, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor> softmax_kl_backward(const SoftmaxKlKernels* kernels, const at::Tensor& grad,
                                                       const at::Tensor& p, const at::Tensor& q, double temperature,
                                                       c10::string_view direction) {
  const char* op = "softmax_kl_backward";
  const bool f2c = parse_direction(direction, op);
  check_same_rows(p, q, op);
  // A grad of the wrong shape would be read past its end, and one on another
  // device would hand a kernel a foreign pointer.
  const auto rows = p.sizes().slice(0, p.dim() - 1);
  TORCH_CHECK(grad.sizes() == rows, op, ": grad must have the logits' shape without the last dim, ", rows, ", got ",
              grad.sizes());
  check_same_device(grad, "grad", p, "p_logits", op);
  const c10::DeviceGuard guard(p.device());
  const auto pc = p.contiguous(), qc = q.contiguous();
  const auto gc = grad.to(p.scalar_type()).contiguous();
  auto gp = at::empty_like(pc), gq = at::empty_like(qc);
  if (pc.numel() > 0) kernels->backward(gc, pc, qc, temperature, f2c, gp, gq);
  return {gp, gq};
}

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // p, q [..., N] -> [...]
  m.def("softmax_kl(Tensor p_logits, Tensor q_logits, float temperature, str direction) -> Tensor");
  m.def(
      "softmax_kl_backward(Tensor grad, Tensor p_logits, Tensor q_logits, float temperature,"
      " str direction) -> (Tensor, Tensor)");
}

}  // namespace hcam_ops
