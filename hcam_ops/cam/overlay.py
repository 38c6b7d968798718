"""Overlays of maps on an image: one labelled PNG per map and an animated GIF
across them, one frame per map."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def overlay(image: torch.Tensor, cam: torch.Tensor) -> Image.Image:
    """``image [3, H, W]`` in [0, 1] and ``cam [H, W]`` in [0, 1] -> an RGB
    overlay (pytorch-grad-cam's colouring)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = image.detach().permute(1, 2, 0).float().clamp(0, 1).cpu().numpy().astype(np.float32)
    return Image.fromarray(show_cam_on_image(rgb, cam.detach().float().cpu().numpy(), use_rgb=True))


def caption_band(text: str, width: int) -> Image.Image:
    """The strip drawn above a frame: ``text`` in white on black."""
    height = max(14, width // 10)
    band = Image.new("RGB", (width, height), (0, 0, 0))
    try:
        font = ImageFont.load_default(size=height - 4)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font only
        font = ImageFont.load_default()
    ImageDraw.Draw(band).text((2, 1), text, fill=(255, 255, 255), font=font)
    return band


def labelled(frame: Image.Image, text: str) -> Image.Image:
    """``frame`` with :func:`caption_band` above it (the map stays uncovered)."""
    band = caption_band(text, frame.width)
    out = Image.new("RGB", (frame.width, frame.height + band.height))
    out.paste(band, (0, 0))
    out.paste(frame, (0, band.height))
    return out


def save_overlays(
    image: torch.Tensor,
    cams: torch.Tensor,
    names: Sequence[str],
    out_dir: str,
    gif: bool = True,
    prefix: str = "cam",
    scores: Sequence[float] | None = None,
    duration: int = 800,
) -> list[str]:
    """Writes ``{prefix}_{name}.png`` for each map of ``cams [K, H, W]`` and,
    with ``gif``, ``{prefix}.gif`` cycling through them. Every frame is
    captioned ``k/K name`` (``  p=0.93`` with ``scores``): the numbering also
    keeps two equal maps two frames, where a GIF writer would merge identical
    consecutive frames into one. Returns the paths."""
    if len(names) != cams.shape[0]:
        raise ValueError(f"save_overlays: {cams.shape[0]} maps but {len(names)} names")
    os.makedirs(out_dir, exist_ok=True)
    frames, paths = [], []
    K = len(names)
    for k, (cam, name) in enumerate(zip(cams, names)):
        text = f"{k + 1}/{K} {name}" + (f"  p={float(scores[k]):.2f}" if scores is not None else "")
        img = labelled(overlay(image, cam), text)
        path = os.path.join(out_dir, f"{prefix}_{name}.png")
        img.save(path)
        frames.append(img)
        paths.append(path)
    if gif and frames:
        path = os.path.join(out_dir, f"{prefix}.gif")
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration, loop=0)
        paths.append(path)
    return paths
