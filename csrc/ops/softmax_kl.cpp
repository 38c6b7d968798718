// softmax_kl: per-row KL between softmax(p / T) and softmax(q / T), SPEC section 1 steps 3-4.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(hcam_ops, m) {
  // p, q [..., N] -> [...]
  m.def("softmax_kl(Tensor p_logits, Tensor q_logits, float temperature, str direction) -> Tensor");
  m.def(
      "softmax_kl_backward(Tensor grad, Tensor p_logits, Tensor q_logits, float temperature,"
      " str direction) -> (Tensor, Tensor)");
}
