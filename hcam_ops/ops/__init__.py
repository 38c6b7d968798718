"""The Python face of each fused op: binding, fake impl, autograd, checks."""

from .cam_gather import cam_gather
from .cam_kl import cam_kl_loss, hierarchical_cam_kl_loss
from .minmax_normalize import minmax_normalize
from .softmax_kl import softmax_kl

__all__ = ["cam_gather", "cam_kl_loss", "hierarchical_cam_kl_loss", "minmax_normalize", "softmax_kl"]
