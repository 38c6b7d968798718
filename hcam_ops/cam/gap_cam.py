"""GAP-CAM through hcam_ops.cam_gather: for a model whose head is linear on a
globally pooled feature map, the class map is the head row dotted with the
map at every position. Batched, on the map's device, no hooks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.cam_gather import cam_gather
from ..ops.minmax_normalize import minmax_normalize


def gap_cam(
    feature_map: torch.Tensor,
    weight: torch.Tensor,
    classes: torch.Tensor,
    size: tuple[int, int] | None = None,
    normalize: bool = True,
    relu: bool = True,
) -> torch.Tensor:
    """``feature_map [B, C, h, w]``, head ``weight [K, C]``, ``classes`` int64
    ``[B]`` or ``[B, L]`` -> maps ``[B, h, w]`` or ``[B, L, h, w]`` (min-max
    normalised per map unless ``normalize=False``), resized bilinearly to
    ``size`` when given.

    ``relu`` (default) clips each map at zero before normalising, as Grad-CAM
    does (Selvaraju et al.; pytorch-grad-cam): a heat map of the evidence for
    the class, equal to Grad-CAM's on the same layer of a GAP + linear head up
    to the normalisation's eps. ``relu=False`` keeps the raw map, whose min-max
    normalisation is what H-CAST's CAM-consistency loss compares
    (``cam_kl_loss``)."""
    B, C, h, w = feature_map.shape
    cams = cam_gather(feature_map, weight.to(feature_map.dtype), classes)  # [B, N] or [B, L, N]
    if relu:
        cams = cams.clamp_min(0)
    if normalize:
        cams = minmax_normalize(cams)
    cams = cams.reshape(B, -1, h, w)
    if size is not None:
        cams = F.interpolate(cams.float(), size=size, mode="bilinear", align_corners=False)
    return cams if classes.dim() == 2 else cams[:, 0]
