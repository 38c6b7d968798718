// softmax_kl: per-row KL between softmax(p / T) and softmax(q / T), docs/ops/cam.md#softmax_kl.
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>

#include "cam_features.h"

namespace hcam_ops {

namespace {

using BackwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                                      c10::string_view);

// The backward's argument checks for every device, ahead of the per-device
// kernels (registered in cpu/ and cuda/): a grad of the wrong shape would be
// read past its end, and one on another device would hand a kernel a foreign
// pointer. BackendSelect is in every call's key set and comes after autograd
// and before the backends, so a kernel there sees each call once; it then
// passes the call on to the backend below it.
std::tuple<at::Tensor, at::Tensor> softmax_kl_backward_checked(c10::DispatchKeySet ks, const at::Tensor& grad,
                                                               const at::Tensor& p, const at::Tensor& q,
                                                               double temperature, c10::string_view direction) {
  const char* op = "softmax_kl_backward";
  check_same_rows(p, q, op);
  const auto rows = p.sizes().slice(0, p.dim() - 1);
  TORCH_CHECK(grad.sizes() == rows, op, ": grad must have the logits' shape without the last dim, ", rows, ", got ",
              grad.sizes());
  check_same_device(grad, "grad", p, "p_logits", op);
  static const auto handle =
      c10::Dispatcher::singleton().findSchemaOrThrow("hcam_ops::softmax_kl_backward", "").typed<BackwardFn>();
  const auto below = ks & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, c10::DispatchKey::BackendSelect);
  return handle.redispatch(below, grad, p, q, temperature, direction);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // p, q [..., N] -> [...]
  m.def("softmax_kl(Tensor p_logits, Tensor q_logits, float temperature, str direction) -> Tensor");
  m.def(
      "softmax_kl_backward(Tensor grad, Tensor p_logits, Tensor q_logits, float temperature,"
      " str direction) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(hcam_ops, BackendSelect, m) {
  m.impl("softmax_kl_backward", TORCH_FN(softmax_kl_backward_checked));
}

}  // namespace hcam_ops
