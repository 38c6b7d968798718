"""Class activation maps for the multi-label models, built on
pytorch-grad-cam: one map per class (each class separately, never summed, as
the report's section 6.5), on margin-free logits, with any of the library's
methods by name (``"gradcam"``, ``"scorecam"``, ``"gradcam++"``, ...).

Default target layers are the report's: the last Swin block for the Swin
models (its ArcFaceWrapper's ``backbone.layers[-1].blocks[-1]``), the head
convolution for EfficientNet (its ``model._conv_head``); EVA towers use the
last block's input norm, its tokens laid back on the patch grid.
"""

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


def token_reshape_transform(grid: tuple[int, int], num_prefix_tokens: int):
    """A ViT's ``[B, prefix + h * w, C]`` tokens as a ``[B, C, h, w]`` map
    (prefix tokens dropped)."""
    h, w = grid

    def reshape(t: torch.Tensor) -> torch.Tensor:
        t = t[:, num_prefix_tokens:]
        return t.reshape(t.shape[0], h, w, t.shape[-1]).permute(0, 3, 1, 2)

    return reshape


def _method_classes() -> dict:
    import pytorch_grad_cam as pgc

    names = {
        "gradcam": "GradCAM",
        "gradcam++": "GradCAMPlusPlus",
        "hirescam": "HiResCAM",
        "scorecam": "ScoreCAM",
        "xgradcam": "XGradCAM",
        "ablationcam": "AblationCAM",
        "eigencam": "EigenCAM",
        "eigengradcam": "EigenGradCAM",
        "layercam": "LayerCAM",
        "gradcamelementwise": "GradCAMElementWise",
        "kpcacam": "KPCA_CAM",
        "shapleycam": "ShapleyCAM",
    }
    # Only what the installed pytorch-grad-cam has (older releases lack some).
    return {k: getattr(pgc, v) for k, v in names.items() if hasattr(pgc, v)}


def cam_methods() -> list[str]:
    """The method names :func:`class_cams` accepts here."""
    return sorted(_method_classes())


def default_target_layer(model: nn.Module, target: str = "report"):
    """``(layer, reshape_transform)`` for ``model``. ``target``: ``"report"``
    (the report's layer, see the module docstring) or ``"neck"`` (the ArcFace
    model's feature-module map after PSA, NCHW)."""
    from ..models.arc_psa_swin import ArcPSASwin, PSANFeatureModule
    from ..models.efficientnet import EfficientNetBCE
    from ..models.eva_clip import EvaCLIP

    if target not in ("report", "neck"):
        raise ValueError(f"class_cams: target must be 'report' or 'neck', got {target!r}")
    if target == "neck":
        if not isinstance(model, ArcPSASwin):
            raise ValueError(f"class_cams: target 'neck' needs an ArcPSASwin, got {type(model).__name__}")
        fm = model.feature_module
        return (fm.relu2 if isinstance(fm, PSANFeatureModule) else fm.expand), None
    if isinstance(model, EfficientNetBCE):
        return model.conv_head, None
    if isinstance(model, EvaCLIP):
        tower = model.base_model
        return tower.blocks[-1].norm1, token_reshape_transform(tower.patch_embed.grid_size, tower.num_prefix_tokens)
    if hasattr(model, "backbone") and hasattr(model.backbone, "layers"):
        return model.backbone.layers[-1].blocks[-1], swin_reshape_transform
    return model.backbone.norm, swin_reshape_transform


def class_cams(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[int] | None = None,
    method: str = "gradcam",
    target_layer: nn.Module | str | None = None,
    reshape_transform=None,
) -> torch.Tensor:
    """Maps ``[B, K, H, W]`` in [0, 1] at the images' size, one per class in
    ``classes`` (default: every class), each computed on its own.
    ``target_layer``: a module, or ``"report"`` (default) / ``"neck"``."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    methods = _method_classes()
    if method not in methods:
        raise ValueError(f"class_cams: method must be one of {sorted(methods)}, got {method!r}")
    if target_layer is None or isinstance(target_layer, str):
        target_layer, default_transform = default_target_layer(model, target_layer or "report")
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
