"""CenterNet Gaussian heatmaps (docs/ops/fgd.md#centernet-heatmaps): per class, the max over
objects of exp(-((x - p_x)^2 + (y - p_y)^2) / (2 sigma^2))."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's radius (in cells) within which a corner-shifted box keeps
    IoU >= min_overlap with the original: the smallest root of its three
    quadratic cases, as the CenterNet code computes it."""
    h, w = torch.as_tensor(height, dtype=torch.float64), torch.as_tensor(width, dtype=torch.float64)
    m = min_overlap
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * m, -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def gaussian_heatmaps(
    centers: torch.Tensor, sigmas: torch.Tensor, labels: torch.Tensor, num_classes: int, feat_shape: tuple[int, int]
) -> torch.Tensor:
    """``[num_classes, H, W]``: per class, the max over its objects of a
    Gaussian at ``centers[i] = (x, y)`` (in cells) with std ``sigmas[i]``;
    zero for a class with no object."""
    H, W = (int(v) for v in feat_shape)
    centers = torch.as_tensor(centers, dtype=torch.float32).reshape(-1, 2)
    dev = centers.device
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32, device=dev).expand(centers.shape[0])
    labels = torch.as_tensor(labels, dtype=torch.int64, device=dev).reshape(-1)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise IndexError(f"gaussian_heatmaps: labels must be in [0, {num_classes})")
    if bool((sigmas <= 0).any()):
        raise ValueError("gaussian_heatmaps: sigmas must be positive")
    ys = torch.arange(H, device=dev, dtype=torch.float32).view(1, H, 1)
    xs = torch.arange(W, device=dev, dtype=torch.float32).view(1, 1, W)
    d2 = (xs - centers[:, 0].view(-1, 1, 1)) ** 2 + (ys - centers[:, 1].view(-1, 1, 1)) ** 2
    g = torch.exp(-d2 / (2 * sigmas.view(-1, 1, 1) ** 2))
    out = torch.zeros(num_classes, H * W, device=dev)
    index = labels.view(-1, 1).expand(-1, H * W)
    return out.scatter_reduce_(0, index, g.reshape(-1, H * W), "amax").view(num_classes, H, W)


def centernet_heatmaps(
    boxes: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    num_classes: int,
    img_shape: tuple[int, int],
    feat_shape: tuple[int, int],
    min_overlap: float = 0.7,
) -> torch.Tensor:
    """``[B, num_classes, H, W]`` ground-truth heatmaps from per-image boxes
    ``(x1, y1, x2, y2)`` in pixels, as CenterNet builds them: the centre's
    cell (floored), ``sigma = (2 r + 1) / 6`` with ``r`` the integer
    :func:`gaussian_radius` of the box in cells (at least 0)."""
    img_h, img_w = img_shape
    H, W = feat_shape
    maps = []
    for b, lab in zip(boxes, labels):
        b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)
        scale = torch.tensor([W / img_w, H / img_h, W / img_w, H / img_h], device=b.device)
        cells = b * scale
        centers = torch.floor((cells[:, :2] + cells[:, 2:]) / 2)
        r = gaussian_radius(cells[:, 3] - cells[:, 1], cells[:, 2] - cells[:, 0], min_overlap)
        r = torch.clamp(torch.floor(r), min=0).to(torch.float32)
        maps.append(gaussian_heatmaps(centers, (2 * r + 1) / 6, lab, num_classes, feat_shape))
    return torch.stack(maps)
