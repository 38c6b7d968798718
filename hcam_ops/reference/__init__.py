"""Plain-PyTorch versions of every hcam_ops op, with the same signatures: the
contract the fused kernels are tested against, and the benchmarks' baseline."""

from .cam_gather import cam_gather
from .cam_kl import cam_kl_loss, hierarchical_cam_kl_loss
from .minmax_normalize import minmax_normalize
from .softmax_kl import softmax_kl

__all__ = ["cam_gather", "cam_kl_loss", "hierarchical_cam_kl_loss", "minmax_normalize", "softmax_kl"]
