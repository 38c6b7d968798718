"""Class activation maps of the multi-label timm classifiers, built on
pytorch-grad-cam: one map per class (each class separately, never summed, as
the report's section 6.5), on margin-free logits, with any method of
:mod:`hcam_ops.cam.methods` by name (``"gradcam"``, ``"scorecam"``,
``"gradcam++"``, ...).

Each model declares its layer in its timm ``pretrained_cfg``, as timm's
``first_conv`` and ``classifier`` keys name modules:

- ``cam_layer``: the module path (``.``-separated; an integer part indexes a
  ``Sequential`` / ``ModuleList``, ``-1`` the last), or a tuple of paths, the
  first the model has;
- ``cam_reshape``: how the layer's output becomes the ``[B, C, h, w]`` map
  Grad-CAM weights: ``None`` (it already is), ``"nhwc"`` (a Swin layer's
  NHWC map) or ``"tokens"`` (a ViT's tokens: prefix tokens dropped, the rest
  laid on the patch grid of the model's timm patch embed);
- ``cam_neck_layer``: the same for ``target="neck"``.

The report's layers: the last Swin block for the Swin models (its
ArcFaceWrapper's ``backbone.layers[-1].blocks[-1]``), the head convolution
for EfficientNet (its ``model._conv_head``); EVA towers use the last block's
input norm. A model without ``cam_layer`` gets the generic rule
(:data:`GENERIC_CAM_LAYER`): its backbone's last Swin block, else its
backbone's final norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# The layer of a model whose pretrained_cfg names none (the Swin rule above).
GENERIC_CAM_LAYER = ("backbone.layers.-1.blocks.-1", "backbone.norm")
GENERIC_CAM_RESHAPE = "nhwc"


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


def module_at(model: nn.Module, path: str) -> nn.Module | None:
    """The submodule at ``path`` (``"backbone.layers.-1.blocks.-1"``), or
    ``None`` where the model has none."""
    m = model
    for part in path.split("."):
        if isinstance(m, (nn.Sequential, nn.ModuleList)) and part.lstrip("-").isdigit():
            if not -len(m) <= int(part) < len(m):
                return None
            m = m[int(part)]
        else:
            m = getattr(m, part, None)
        if not isinstance(m, nn.Module):
            return None
    return m


def _first_module(model: nn.Module, paths) -> nn.Module | None:
    for path in (paths,) if isinstance(paths, str) else paths:
        m = module_at(model, path)
        if m is not None:
            return m
    return None


def _reshape(model: nn.Module, kind: str | None):
    if kind is None:
        return None
    if kind == "nhwc":
        return swin_reshape_transform
    if kind == "tokens":
        for m in model.modules():
            grid = getattr(getattr(m, "patch_embed", None), "grid_size", None)
            if grid is not None:
                return token_reshape_transform(grid, m.num_prefix_tokens)
        raise ValueError(f"class_cams: cam_reshape 'tokens' needs a timm patch embed in {type(model).__name__}")
    raise ValueError(f"class_cams: cam_reshape must be None, 'nhwc' or 'tokens', got {kind!r}")


def default_target_layer(model: nn.Module, target: str = "report"):
    """``(layer, reshape_transform)`` for ``model``, from its
    ``pretrained_cfg`` (see the module docstring). ``target``: ``"report"``
    (``cam_layer``, the report's layer) or ``"neck"`` (``cam_neck_layer``:
    the ArcFace model's feature-module map after PSA, NCHW)."""
    if target not in ("report", "neck"):
        raise ValueError(f"class_cams: target must be 'report' or 'neck', got {target!r}")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = type(model).__name__
    if target == "neck":
        paths = cfg.get("cam_neck_layer")
        if not paths:
            raise ValueError(
                f"class_cams: target 'neck' needs a model whose pretrained_cfg has a cam_neck_layer, got {name}"
            )
        reshape = None
    elif cfg.get("cam_layer"):
        paths, reshape = cfg["cam_layer"], cfg.get("cam_reshape")
    else:
        paths, reshape = GENERIC_CAM_LAYER, GENERIC_CAM_RESHAPE
    layer = _first_module(model, paths)
    if layer is None:
        raise ValueError(f"class_cams: {name} has no module at {paths!r} (its pretrained_cfg's CAM layer)")
    return layer, _reshape(model, reshape)


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
    ``method``: a name of :mod:`hcam_ops.cam.methods` (any spelling
    ``normalise`` accepts); ``target_layer``: a module, or ``"report"``
    (default) / ``"neck"``."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from .methods import MASK_METHODS, METHODS, cam_methods, normalise

    key = normalise(method) if isinstance(method, str) else None
    if key in MASK_METHODS:
        raise ValueError(
            f"class_cams: {method!r} draws attention masks, not class maps: hcam_ops.cam.attention_masks(model, "
            f"images, method={key!r})"
        )
    if key not in METHODS:
        raise ValueError(f"class_cams: method must be one of {cam_methods()}, got {method!r}")
    if target_layer is None or isinstance(target_layer, str):
        target_layer, default_transform = default_target_layer(model, target_layer or "report")
        reshape_transform = reshape_transform or default_transform
    classes = list(range(model.num_classes)) if classes is None else list(classes)
    was_training = model.training
    model.eval()
    wrapped = CosineLogits(model)
    maps = []
    try:
        with METHODS[key](model=wrapped, target_layers=[target_layer], reshape_transform=reshape_transform) as cam:
            for k in classes:
                grayscale = cam(input_tensor=images, targets=[ClassifierOutputTarget(k)] * images.shape[0])
                maps.append(torch.from_numpy(grayscale))
    finally:
        model.train(was_training)
    return torch.stack(maps, dim=1)
