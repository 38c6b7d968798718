"""Grad-CAM for the multi-label models, built on pytorch-grad-cam: one map per
class (each class separately, never summed), on margin-free cosine logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CosineLogits(nn.Module):
    """Makes a model emit its margin-free logits (``model.logits(x)``, for the
    ArcFace model ``s * cos``) from ``forward``, as Grad-CAM expects."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)


def swin_reshape_transform(t: torch.Tensor) -> torch.Tensor:
    """A timm Swin layer's NHWC activation as NCHW (what Grad-CAM weights)."""
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t


def default_target_layer(model: nn.Module):
    """The PSA module's last conv block (NCHW) for the ArcFace model, else the
    backbone's final norm (NHWC: use swin_reshape_transform)."""
    if hasattr(model, "neck"):
        return model.neck.expand, None
    return model.backbone.norm, swin_reshape_transform


def class_cams(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None = None,
    method: str = "gradcam",
    target_layer=None,
    reshape_transform=None,
) -> torch.Tensor:
    """Maps ``[B, K, H, W]`` in [0, 1] at the images' size, one per class in
    ``classes`` (default: every class), each computed on its own."""
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    methods = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "eigencam": EigenCAM}
    if method not in methods:
        raise ValueError(f"class_cams: method must be one of {sorted(methods)}, got {method!r}")
    if target_layer is None:
        target_layer, default_transform = default_target_layer(model)
        reshape_transform = reshape_transform or default_transform
    classes = list(range(model.num_classes)) if classes is None else list(classes)
    was_training = model.training
    model.eval()
    wrapped = CosineLogits(model)
    maps = []
    try:
        with methods[method](model=wrapped, target_layers=[target_layer], reshape_transform=reshape_transform) as cam:
            for k in classes:
                grayscale = cam(input_tensor=images, targets=[ClassifierOutputTarget(k)] * images.shape[0])
                maps.append(torch.from_numpy(grayscale))
    finally:
        model.train(was_training)
    return torch.stack(maps, dim=1)
