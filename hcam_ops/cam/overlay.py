"""Overlays of class maps on an image: one PNG per class and an animated GIF
across them."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image


def overlay(image: torch.Tensor, cam: torch.Tensor) -> Image.Image:
    """``image [3, H, W]`` in [0, 1] and ``cam [H, W]`` in [0, 1] -> an RGB
    overlay (pytorch-grad-cam's colouring)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = image.detach().permute(1, 2, 0).float().clamp(0, 1).cpu().numpy().astype(np.float32)
    return Image.fromarray(show_cam_on_image(rgb, cam.detach().float().cpu().numpy(), use_rgb=True))


def save_overlays(
    image: torch.Tensor, cams: torch.Tensor, names: Sequence[str], out_dir: str, gif: bool = True, prefix: str = "cam"
) -> list[str]:
    """Writes ``{prefix}_{name}.png`` for each map of ``cams [K, H, W]`` and,
    with ``gif``, ``{prefix}.gif`` cycling through them. Returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    frames, paths = [], []
    for cam, name in zip(cams, names):
        img = overlay(image, cam)
        path = os.path.join(out_dir, f"{prefix}_{name}.png")
        img.save(path)
        frames.append(img)
        paths.append(path)
    if gif and frames:
        path = os.path.join(out_dir, f"{prefix}.gif")
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=800, loop=0)
        paths.append(path)
    return paths
