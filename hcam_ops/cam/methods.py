"""Every CAM method by name, for the classifier tools (``class_cams``, ``python
-m hcam_ops.cam``) and the detector tools (``DetCAMVisualizer``, ``python -m
hcam_ops.cam.detect``) alike: pytorch-grad-cam's classes plus two of ours.

A name is looked up after :func:`normalise`: case, ``-`` and ``_`` ignored,
then :data:`ALIASES`; so pytorch-grad-cam's class names (``GradCAM``,
``KPCA_CAM``), mmdet's det_cam_visualizer keys (``featmap_am``) and the
lower-case names of pytorch-grad-cam's README (``gradcam++``) all resolve.

Ours:

- ``signedeigencam``: pytorch-grad-cam's EigenCAM with the sign of the
  principal component fixed (pytorch-grad-cam's own Seg-Eigen-CAM
  correction: the larger tail is positive). An SVD component's sign is
  arbitrary; uncorrected, about a third of the maps of the synthetic test
  detector highlight the background and zero the objects, so the detector
  tools' ``eigencam`` is this class (:data:`DETECTOR_METHODS`), while the
  classifier tools' ``eigencam`` stays pytorch-grad-cam's own.
- ``featmapam``: mmdet's det_cam_visualizer activation map (its FeatmapAM):
  the target layer's (``abs``-ed, resized) channels averaged, no weights at
  all: what the layer responds to, whatever the target. pytorch-grad-cam has
  no equivalent (EigenCAM is the first principal component, not the mean),
  so it is a ``BaseCAM`` subclass here.

Beside them, :data:`MASK_METHODS`: ``cls-attention`` and ``attnpool``, the
seed 002's attention masks (:mod:`hcam_ops.cam.attention_masks`), which the
CAM CLI (``python -m hcam_ops.cam --method cls-attention``) draws.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytorch_grad_cam as pgc
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

from .attention_masks import ATTNPOOL, CLS_ATTENTION, attention_masks


class SignedEigenCAM(pgc.EigenCAM):
    """EigenCAM whose principal component points at the salient side."""

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth=False):
        return get_2d_projection_with_sign_correction(activations)


class FeatmapAM(BaseCAM):
    """The channel mean of the target layer's activations; with
    ``eigen_smooth``, their (sign-corrected) first principal component, as
    BaseCAM smooths weighted activations, all weights being 1 here."""

    def __init__(self, model, target_layers, reshape_transform=None):
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth=False):
        if eigen_smooth:
            return get_2d_projection_with_sign_correction(activations)
        return np.mean(activations, axis=1)


# Registry key -> pytorch-grad-cam class name.
_PYTORCH_GRAD_CAM = {
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

#: The registry: key -> class. Only what the installed pytorch-grad-cam has
#: (older releases lack some), and ours.
METHODS: dict[str, type] = {
    **{k: getattr(pgc, v) for k, v in _PYTORCH_GRAD_CAM.items() if hasattr(pgc, v)},
    "signedeigencam": SignedEigenCAM,
    "featmapam": FeatmapAM,
}

#: The attention-mask methods (docs/attention_masks.md): not a map per class
#: but the model's own attention (a ViT's class token, a CLIP-style
#: attention pool), binarised per head and fused, as the seed 002's LOCATE /
#: BiT-Align masks. Key -> ``f(model, images, heads=None) -> AttentionMasks``;
#: the CAM CLI draws them, ``class_cams`` refuses them.
MASK_METHODS = {key: partial(attention_masks, method=key) for key in (CLS_ATTENTION, ATTNPOOL)}

#: Normalised spellings that are not registry keys: pytorch-grad-cam's class
#: name for Grad-CAM++ and its short form.
ALIASES = {"gradcamplusplus": "gradcam++", "gradcampp": "gradcam++"}


def normalise(name: str) -> str:
    """The registry key ``name`` spells (case, ``-`` and ``_`` ignored, then
    :data:`ALIASES`); whether it is a key of :data:`METHODS` is the caller's
    check."""
    key = name.lower().replace("-", "").replace("_", "")
    return ALIASES.get(key, key)


def cam_methods() -> list[str]:
    """The registry's keys, sorted: the names ``class_cams`` accepts."""
    return sorted(METHODS)


def mask_methods() -> list[str]:
    """The attention-mask methods' keys, sorted (:data:`MASK_METHODS`)."""
    return sorted(MASK_METHODS)


# The detector tools' methods (the ones they are built and tested for; the
# other keys are refused there). Gradient methods explain the detector's
# losses (loss mode); gradient-free ones explain its detections (predict mode).
GRADIENT_METHODS = {k: METHODS[k] for k in ("gradcam", "gradcam++", "xgradcam", "eigengradcam")}
GRADIENT_FREE_METHODS = {"eigencam": SignedEigenCAM, "ablationcam": METHODS["ablationcam"], "featmapam": FeatmapAM}
DETECTOR_METHODS = {**GRADIENT_METHODS, **GRADIENT_FREE_METHODS}
