"""CAMs of the hierarchical (H-CAST) models: for each level, the predicted
class's head row dotted with the ``centroid1`` tokens (the maps the CAM
consistency loss compares), carried back to pixels through the graph-pooling
assignments and the superpixel map."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.cam_gather import cam_gather
from ..ops.minmax_normalize import minmax_normalize


@torch.no_grad()
def hierarchy_cams(model, images: torch.Tensor, segments: torch.Tensor):
    """``images [B, 3, H, W]`` (normalised), ``segments [B, H, W]`` ->
    ``(cams [B, L, H, W] in [0, 1], classes [B, L], probs: list of [B, K_l])``,
    level 0 the finest."""
    from ..models.cast import clusters_to_grid, split_outputs

    logits, inter = split_outputs(model(images, segments, return_intermediates=True), len(model.levels))
    tokens = inter["centroid1"].float()
    maps, classes = [], []
    for head, lg in zip(model.heads, logits):
        k = lg.argmax(1)
        cam = cam_gather(tokens, head.weight.float(), k)
        grid = clusters_to_grid(cam, inter)  # [B, h, w] on the stem grid
        maps.append(F.interpolate(grid[:, None], size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0])
        classes.append(k)
    cams = torch.stack(maps, 1)
    cams = minmax_normalize(cams.flatten(2)).view_as(cams)
    return cams, torch.stack(classes, 1), [lg.softmax(-1) for lg in logits]
