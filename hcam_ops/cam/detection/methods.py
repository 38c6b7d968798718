"""CAM methods by name: pytorch-grad-cam's classes, plus FeatmapAM.

Gradient methods (``gradcam``, ``gradcam++``, ``xgradcam``, ``eigengradcam``)
explain the detector's losses (loss mode); gradient-free ones (``eigencam``,
``ablationcam``, ``featmapam``) explain its detections (predict mode).

``eigencam`` is pytorch-grad-cam's EigenCAM with the sign of the principal
component fixed (pytorch-grad-cam's own Seg-Eigen-CAM correction: the larger
tail is positive). An SVD component's sign is arbitrary; uncorrected, about a
third of the maps of the synthetic test detector highlight the background
and zero the objects.

FeatmapAM is mmdet's activation map (the seed's last method): the target
layer's (``abs``-ed, resized) channels averaged, no weights at all: what the
layer responds to, whatever the boxes. pytorch-grad-cam has no equivalent
(EigenCAM is the first principal component, not the mean), so it is a
``BaseCAM`` subclass here.
"""

from __future__ import annotations

import numpy as np
from pytorch_grad_cam import AblationCAM, EigenCAM, EigenGradCAM, GradCAM, GradCAMPlusPlus, XGradCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

from .errors import DetCAMInputError


class SignedEigenCAM(EigenCAM):
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


GRADIENT_METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "eigengradcam": EigenGradCAM,
}
GRADIENT_FREE_METHODS = {"eigencam": SignedEigenCAM, "ablationcam": AblationCAM, "featmapam": FeatmapAM}
METHODS = {**GRADIENT_METHODS, **GRADIENT_FREE_METHODS}

# Spellings people use for the same methods (class names, mmdet's keys).
_ALIASES = {"gradcamplusplus": "gradcam++", "gradcampp": "gradcam++"}


def canonical_method(name: str) -> str:
    """The registry key for ``name`` (case, ``-`` and ``_`` ignored)."""
    if not isinstance(name, str):
        raise DetCAMInputError("method", f"expected a name, got {type(name).__name__}")
    key = name.lower().replace("-", "").replace("_", "")
    key = _ALIASES.get(key, key)
    if key not in METHODS:
        raise DetCAMInputError("method", f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return key


def needs_gradients(name: str) -> bool:
    return canonical_method(name) in GRADIENT_METHODS
