"""Pictures of detection CAMs: per-box normalisation, the heat-map overlay,
and boxes with class names and scores in per-class colours (RGB throughout)."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np


def class_colours(num_labels: int) -> np.ndarray:
    """``[num_labels, 3]`` uint8 RGB, indexed by label: hues a golden-ratio
    step apart (neighbouring labels differ most), the same on every run (mmdet's
    det_cam_visualizer draws them at random, so colours change between pictures)."""
    colours = []
    for label in range(num_labels):
        hue = (label * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 1.0)
        colours.append((round(255 * r), round(255 * g), round(255 * b)))
    return np.array(colours, dtype=np.uint8).reshape(-1, 3)


def box_region(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """Integer pixel bounds ``(x1, y1, x2, y2)`` (x2/y2 exclusive) covering
    ``box``, clipped to the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1 = max(0, math.floor(x1)), max(0, math.floor(y1))
    x2, y2 = min(width, math.ceil(x2)), min(height, math.ceil(y2))
    return x1, y1, x2, y2


def normalize_in_boxes(cam: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """mmdet's ``with_norm_in_bboxes``: ``cam`` min-max normalised inside
    each box (0 outside every box), the boxes' maps merged by maximum, then
    normalised again. Each box's maximum is 1 (unless the map is constant in
    it), so weak and strong detections show alike. (mmdet's code passes a
    2-D crop to ``scale_cam_image``, which normalises it row by row; here the
    whole crop is normalised.)"""
    cam = np.asarray(cam, dtype=np.float32)
    H, W = cam.shape
    merged = np.zeros_like(cam)
    for box in boxes:
        x1, y1, x2, y2 = box_region(box, H, W)
        if x2 <= x1 or y2 <= y1:
            continue
        crop = cam[y1:y2, x1:x2]
        low, high = float(crop.min()), float(crop.max())
        scaled = (crop - low) / (high - low) if high > low else np.zeros_like(crop)
        merged[y1:y2, x1:x2] = np.maximum(merged[y1:y2, x1:x2], scaled)
    high = float(merged.max())
    return merged / high if high > 0 else merged


def to_uint8_rgb(image) -> np.ndarray:
    """``[H, W, 3]`` uint8 from a uint8 array, a float array in [0, 1], or a
    tensor ``[3, H, W]``."""
    if hasattr(image, "detach"):
        image = image.detach().cpu()
        image = image.permute(1, 2, 0).numpy() if image.dim() == 3 and image.shape[0] == 3 else image.numpy()
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))


def overlay_cam(image, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """The jet heat map of ``cam`` (values in [0, 1]) over ``image``, uint8 RGB
    (pytorch-grad-cam's ``show_cam_on_image``)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = to_uint8_rgb(image).astype(np.float32) / 255.0
    return show_cam_on_image(
        rgb, np.clip(np.asarray(cam, dtype=np.float32), 0, 1), use_rgb=True, image_weight=image_weight
    )


def draw_detections(
    image,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float] | None = None,
    class_name: Callable[[int], str] | Sequence[str] | None = None,
    colours: np.ndarray | None = None,
    thickness: int = 2,
) -> np.ndarray:
    """A copy of ``image`` (uint8 RGB) with each box outlined in its label's
    colour, and its class name (and score) on a filled tag above it, or just
    inside its top edge where there is no room above."""
    canvas = to_uint8_rgb(image).copy()
    H, W = canvas.shape[:2]
    labels = [int(v) for v in labels]
    if colours is None:
        colours = class_colours(max(labels, default=0) + 1)
    if class_name is None:
        name_of = lambda label: f"class {label}"
    elif callable(class_name):
        name_of = class_name
    else:
        names = list(class_name)
        name_of = lambda label: names[label - 1] if 1 <= label <= len(names) else f"class {label}"
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, min(H, W) / 900)
    for i, (box, label) in enumerate(zip(boxes, labels)):
        colour = tuple(int(c) for c in colours[label % len(colours)])
        x1, y1, x2, y2 = box_region(box, H, W)
        cv2.rectangle(canvas, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, thickness)
        text = name_of(label) if scores is None else f"{name_of(label)} {float(scores[i]):.2f}"
        (tw, th), base = cv2.getTextSize(text, font, scale, 1)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1 + thickness
        cv2.rectangle(canvas, (x1, top), (min(W - 1, x1 + tw + 2), top + th + base + 2), colour, cv2.FILLED)
        # Dark text on light tags, light on dark: readable on every class colour.
        ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        cv2.putText(canvas, text, (x1 + 1, top + th + 1), font, scale, ink, 1, lineType=cv2.LINE_AA)
    return canvas
