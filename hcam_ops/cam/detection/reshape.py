"""The FPN reshape transform (mmdet's ``reshape_transform``): what a target
layer returns (one map, or FPN levels as a dict/list) as the single
``[B, C_total, h, w]`` map pytorch-grad-cam weights.

Every level is ``abs()``-ed, resized bilinearly to a common ``(h, w)`` and
concatenated over channels in the levels' order (the order the FPN ablation
layer maps channel indices back by). The size rule is mmdet's:
``(min(max level h, max_shape[0]), min(max level w, max_shape[1]))``, or the
largest level's size when ``max_shape`` holds ``-1``.

Gradient methods take activations and gradients through the same transform;
mmdet refuses several levels there (a gradient hook can only sit on one
tensor), and so does this, with an error naming the layer. For them the
``abs()`` is skipped too: it would flip the sign of negative gradients, which
GradCAM's weights (signed means) depend on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .errors import DetCAMInputError


def normalize_max_shape(max_shape) -> tuple[int, int]:
    """``20``, ``(20,)``, ``(20, 30)``, ``-1`` or ``(-1, -1)`` -> a pair."""
    if isinstance(max_shape, int):
        max_shape = (max_shape,)
    shape = tuple(int(v) for v in max_shape)
    if len(shape) == 1:
        shape = shape * 2
    if len(shape) != 2 or any(v == 0 or v < -1 for v in shape):
        raise DetCAMInputError(
            "max_shape", f"expected (h, w) of positive sizes, or -1 for the largest level, got {max_shape!r}"
        )
    return shape


def feature_levels(features) -> list[torch.Tensor]:
    """A target layer's output as a list of maps (dict values in order)."""
    if isinstance(features, torch.Tensor):
        return [features]
    if isinstance(features, Mapping):
        return list(features.values())
    if isinstance(features, Sequence):
        return list(features)
    raise DetCAMInputError("target_layers", f"the layer returned a {type(features).__name__}, not maps")


class FPNReshapeTransform:
    """``max_shape``: see ``normalize_max_shape``; ``is_need_grad``: the CAM
    method uses gradients (refuse several levels, skip ``abs``);
    ``valid_region``: a callable giving the ``(h, w)`` share of each map that
    covers the image rather than the detector's batch padding
    (``DetCAMModel.valid_fraction``); ``layer_name`` names the layer in errors."""

    def __init__(
        self,
        max_shape=(20, 20),
        is_need_grad: bool = False,
        valid_region: Callable[[], tuple[float, float]] | None = None,
        layer_name: str = "the target layer",
    ):
        self.max_shape = normalize_max_shape(max_shape)
        self.is_need_grad = bool(is_need_grad)
        self.take_abs = not self.is_need_grad
        self.valid_region = valid_region
        self.layer_name = layer_name

    def target_size(self, levels: Sequence[torch.Tensor]) -> tuple[int, int]:
        max_h = max(level.shape[-2] for level in levels)
        max_w = max(level.shape[-1] for level in levels)
        if -1 in self.max_shape:
            return max_h, max_w
        return min(max_h, self.max_shape[0]), min(max_w, self.max_shape[1])

    def __call__(self, features) -> torch.Tensor:
        levels = feature_levels(features)
        if len(levels) > 1 and self.is_need_grad:
            raise DetCAMInputError(
                "target_layers",
                f"{self.layer_name} returns {len(levels)} feature levels; gradient methods need a layer "
                "with a single map (e.g. backbone.body.layer4, backbone.fpn.layer_blocks.0) or a gradient-free "
                "method (eigencam, ablationcam, featmapam)",
            )
        if any(level.dim() != 4 for level in levels):
            shapes = [tuple(level.shape) for level in levels]
            raise DetCAMInputError("target_layers", f"{self.layer_name} returns {shapes}, not [B, C, H, W] maps")
        levels = [self._crop(level) for level in levels]
        size = self.target_size(levels)
        resized = [
            F.interpolate(level.abs() if self.take_abs else level, size=size, mode="bilinear", align_corners=False)
            for level in levels
        ]
        return torch.cat(resized, dim=1)

    def _crop(self, level: torch.Tensor) -> torch.Tensor:
        if self.valid_region is None:
            return level
        fh, fw = self.valid_region()
        h = max(1, min(level.shape[-2], math.ceil(level.shape[-2] * fh - 1e-6)))
        w = max(1, min(level.shape[-1], math.ceil(level.shape[-1] * fw - 1e-6)))
        return level[..., :h, :w]
