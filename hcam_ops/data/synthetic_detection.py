"""A synthetic detection set made on the fly: big, saturated shapes (one class
per shape) on low-contrast textured backgrounds, with exact boxes, labels and
masks, for tests and demos of detectors (CAMs, distillation).

Items are what torchvision's detectors take: ``image`` float ``[3, H, W]`` in
[0, 1] and ``target`` with ``boxes`` float32 ``[N, 4]`` (x1, y1, x2, y2 in
pixels, x2/y2 exclusive: a box of one pixel is ``(x, y, x + 1, y + 1)``) and
``labels`` int64 ``[N]`` in ``1..num_classes`` (0 is the background of
torchvision's R-CNNs, so build a detector with ``dataset.num_classes + 1``),
plus ``masks`` uint8 ``[N, H, W]`` (with ``masks=True``) and ``image_id``.
Item ``i`` depends only on ``(seed, i)``: the same on every call and worker.

``collate`` batches items as lists (detector inputs differ in object count),
and ``to_coco`` writes a COCO instances file (and optionally the images).

:class:`HardSyntheticDetection` (ours) is the harder set of the distillation
benchmark: eight classes (a shape and a hue each), objects over a 2.5x scale
range that overlap and occlude each other, clutter in any hue.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

CLASSES = ("circle", "square", "triangle", "diamond")

# Base colours per class (RGB in [0, 1]): saturated and far from the greyish
# backgrounds, so a tiny detector learns the set in a few hundred CPU steps.
_PALETTE = ((0.95, 0.15, 0.1), (0.1, 0.85, 0.2), (0.15, 0.3, 0.95), (0.95, 0.85, 0.1))


class SyntheticDetection(Dataset):
    """``num_images`` images of ``image_size`` ``(H, W)``, each with
    ``objects`` (a ``(min, max)`` count) shapes of side ``object_size`` (a
    ``(min, max)`` fraction of ``min(H, W)``); boxes never overlap, so every
    object is fully visible. ``num_classes`` (1 to 4) picks the first classes
    of ``CLASSES``. ``texture`` is the amplitude of the background pattern
    and ``colour_jitter`` the per-object deviation from the class colour."""

    def __init__(
        self,
        num_images: int = 64,
        image_size: int | Sequence[int] = 128,
        num_classes: int = 3,
        objects: Sequence[int] = (1, 3),
        object_size: Sequence[float] = (0.25, 0.45),
        seed: int = 0,
        texture: float = 0.12,
        colour_jitter: float = 0.08,
        masks: bool = False,
    ):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if len(image_size) != 2 or min(image_size) < 16:
            raise ValueError(f"image_size: expected an int or (H, W), each >= 16, got {image_size!r}")
        if not 1 <= num_classes <= len(CLASSES):
            raise ValueError(f"num_classes: must be in 1..{len(CLASSES)}, got {num_classes}")
        lo, hi = objects
        if not 1 <= lo <= hi:
            raise ValueError(f"objects: expected (min, max) with 1 <= min <= max, got {tuple(objects)}")
        smin, smax = object_size
        if not 0.02 <= smin <= smax <= 0.9:
            raise ValueError(
                f"object_size: expected (min, max) fractions with 0.02 <= min <= max <= 0.9, got {object_size}"
            )
        if num_images < 0:
            raise ValueError(f"num_images: must be >= 0, got {num_images}")
        self.num_images = int(num_images)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.classes = CLASSES[:num_classes]
        self.objects = (int(lo), int(hi))
        self.object_size = (float(smin), float(smax))
        self.seed = int(seed)
        self.texture = float(texture)
        self.colour_jitter = float(colour_jitter)
        self.masks = bool(masks)

    @property
    def num_classes(self) -> int:
        """Object classes, without the background (labels are 1..num_classes)."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        index = index % self.num_images
        # One generator per item, keyed by (seed, index): items do not depend on
        # the order they are read in, nor on the DataLoader worker.
        rng = np.random.default_rng([self.seed, index])
        H, W = self.image_size
        image = _background(rng, H, W, self.texture)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5  # pixel centres

        boxes, labels, masks = [], [], []
        count = int(rng.integers(self.objects[0], self.objects[1] + 1))
        side_lo, side_hi = (f * min(H, W) for f in self.object_size)
        for _ in range(count):
            # Rejection sampling: a few tries to find a free spot; an image may
            # end up with fewer objects than drawn, never with none.
            for _try in range(50):
                side = rng.uniform(side_lo, side_hi)
                cx = rng.uniform(side / 2 + 1, W - side / 2 - 1)
                cy = rng.uniform(side / 2 + 1, H - side / 2 - 1)
                label = int(rng.integers(1, self.num_classes + 1))
                mask = _shape_mask(self.classes[label - 1], cx, cy, side, xx, yy)
                if not mask.any():
                    continue
                box = _mask_box(mask)
                if all(_gap(box, other) >= 2 for other in boxes):
                    break
            else:
                continue
            colour = np.clip(np.array(_PALETTE[label - 1]) + rng.normal(0, self.colour_jitter, 3), 0, 1)
            image[:, mask] = colour[:, None].astype(np.float32)
            boxes.append(box)
            labels.append(label)
            masks.append(mask)

        target = {
            "boxes": torch.tensor(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
        if self.masks:
            stacked = np.stack(masks) if masks else np.zeros((0, H, W), dtype=bool)
            target["masks"] = torch.from_numpy(stacked.astype(np.uint8))
        return torch.from_numpy(np.ascontiguousarray(image)), target


def collate(batch):
    """``[(image, target), ...]`` -> ``(list of images, list of targets)``, the
    form torchvision detectors take (object counts differ between images)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def to_coco(dataset: SyntheticDetection, path: str, image_dir: str | None = None) -> dict:
    """Writes the COCO instances JSON of ``dataset`` to ``path`` and returns it.

    Images are ``{index:06d}.png`` with ``id = index``; categories are the
    labels (``id`` 1..num_classes, ``name`` the shape); each annotation has
    ``bbox`` ``[x, y, w, h]``, ``area`` (the object's pixel count),
    ``iscrowd`` 0 and ``segmentation`` as uncompressed RLE (column-major run
    lengths starting with background, as pycocotools reads it). With
    ``image_dir``, the images are written there as PNG too."""
    from PIL import Image

    H, W = dataset.image_size
    if image_dir is not None:
        os.makedirs(image_dir, exist_ok=True)
    # Masks are needed for exact areas and segmentations, whatever the set's setting.
    source = dataset if dataset.masks else _with_masks(dataset)
    images, annotations = [], []
    for index in range(len(source)):
        image, target = source[index]
        name = f"{index:06d}.png"
        images.append({"id": index, "file_name": name, "width": W, "height": H})
        if image_dir is not None:
            rgb = (image.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
            Image.fromarray(rgb).save(os.path.join(image_dir, name))
        for box, label, mask in zip(target["boxes"].tolist(), target["labels"].tolist(), target["masks"].numpy()):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCO ids start at 1
                    "image_id": index,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": {"size": [H, W], "counts": mask_to_rle(mask)},
                }
            )
    coco = {
        "info": {"description": "hcam_ops SyntheticDetection", "seed": dataset.seed},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(dataset.classes)],
    }
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w") as f:
        json.dump(coco, f)
    return coco


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE of a binary ``[H, W]`` mask: run lengths over
    the column-major (Fortran) pixel order, the first run counting zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(edges).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    return [int(r) for r in runs]


def rle_to_mask(counts: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """The inverse of ``mask_to_rle``: a bool ``[H, W]`` mask."""
    H, W = size
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    if flat.size != H * W:
        raise ValueError(f"counts: the runs cover {flat.size} pixels, size {H}x{W} has {H * W}")
    return flat.reshape((H, W), order="F")


def _with_masks(dataset: SyntheticDetection) -> SyntheticDetection:
    clone = object.__new__(type(dataset))
    clone.__dict__.update(dataset.__dict__)
    clone.masks = True
    return clone


def _background(rng: np.random.Generator, H: int, W: int, amplitude: float) -> np.ndarray:
    """A greyish base colour plus two random plaids of stripes and fine noise:
    texture for the detector to ignore, kept low in contrast and saturation."""
    base = rng.uniform(0.35, 0.6) + rng.uniform(-0.05, 0.05, size=3)
    y = np.arange(H, dtype=np.float32)[:, None]
    x = np.arange(W, dtype=np.float32)[None, :]
    pattern = np.zeros((H, W), dtype=np.float32)
    for _ in range(2):
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(6, 24)
        phase = rng.uniform(0, 2 * math.pi)
        pattern += np.sin((x * math.cos(theta) + y * math.sin(theta)) * 2 * math.pi / period + phase)
    pattern = pattern / 2 * amplitude + rng.normal(0, amplitude / 3, size=(H, W))
    image = base[:, None, None] + pattern[None]
    return np.clip(image, 0, 1).astype(np.float32)


def _shape_mask(name: str, cx: float, cy: float, side: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    h = side / 2
    dx, dy = xx - cx, yy - cy
    if name == "circle":
        return dx * dx + dy * dy <= h * h
    if name == "square":
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if name == "diamond":
        return np.abs(dx) + np.abs(dy) <= h
    # Upright isosceles triangle: apex at the top centre, base along the bottom.
    inside_base = dy <= h
    return inside_base & (np.abs(dx) <= (dy + h) / 2)


def _mask_box(mask: np.ndarray) -> list[float]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def _gap(a: Sequence[float], b: Sequence[float]) -> float:
    """Pixels between two boxes (negative when they overlap)."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3])


# The harder set: eight classes, each a shape and a hue.
HARD_CLASSES = ("circle", "square", "triangle", "diamond", "ring", "cross", "ellipse", "bar")


class HardSyntheticDetection(SyntheticDetection):
    """Ours: the synthetic set made hard enough for a small detector to stay
    far from saturation (the distillation benchmark,
    ``benchmarks/methods/distillation.py``).

    Per image ``objects`` (default 2-5) shapes of ``num_classes`` (1-8) of
    ``HARD_CLASSES``, each class a shape and a hue (an eighth of the wheel
    apart, jittered by ``colour_jitter``; saturation and value random); sides
    drawn log-uniformly over ``object_size`` (default 0.3-0.75 of ``min(H,
    W)``: 19 to 48 px at 64 px, RetinaNet's smallest anchors being 32 px);
    objects may overlap and later ones occlude earlier ones: the box and mask
    are the visible part, and an object left with less than ``min_visible``
    of its pixels is dropped (its pixels stay, as clutter). ``clutter`` (a
    ``(min, max)`` count, default 1-4) distractors are drawn first: line
    segments and small five-lobed blobs in random colours, of no class. Item ``i`` depends only
    on ``(seed, i)``; ``to_coco`` exports it like the plain set."""

    def __init__(
        self,
        num_images: int = 64,
        image_size: int | Sequence[int] = 64,
        num_classes: int = 8,
        objects: Sequence[int] = (2, 5),
        object_size: Sequence[float] = (0.3, 0.75),
        seed: int = 0,
        texture: float = 0.15,
        colour_jitter: float = 0.03,
        masks: bool = False,
        clutter: Sequence[int] = (1, 4),
        min_visible: float = 0.5,
    ):
        if not 1 <= num_classes <= len(HARD_CLASSES):
            raise ValueError(f"num_classes: must be in 1..{len(HARD_CLASSES)}, got {num_classes}")
        super().__init__(num_images, image_size, 1, objects, object_size, seed, texture, colour_jitter, masks)
        self.classes = HARD_CLASSES[:num_classes]
        lo, hi = clutter
        if not 0 <= lo <= hi:
            raise ValueError(f"clutter: expected (min, max) with 0 <= min <= max, got {tuple(clutter)}")
        if not 0 < min_visible <= 1:
            raise ValueError(f"min_visible: must be in (0, 1], got {min_visible}")
        self.clutter = (int(lo), int(hi))
        self.min_visible = float(min_visible)

    def __getitem__(self, index: int):
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        index = index % self.num_images
        rng = np.random.default_rng([self.seed, index, 1])
        H, W = self.image_size
        image = _background(rng, H, W, self.texture)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5
        for _ in range(int(rng.integers(self.clutter[0], self.clutter[1] + 1))):
            image[:, _clutter_mask(rng, xx, yy)] = _random_colour(rng)[:, None]

        owner = np.full((H, W), -1, dtype=np.int64)  # which object each pixel shows
        drawn, labels = [], []
        side_lo, side_hi = (f * min(H, W) for f in self.object_size)
        for k in range(int(rng.integers(self.objects[0], self.objects[1] + 1))):
            side = float(np.exp(rng.uniform(np.log(side_lo), np.log(side_hi))))
            cx = rng.uniform(0.3 * side, W - 0.3 * side)  # may run off the edge a little
            cy = rng.uniform(0.3 * side, H - 0.3 * side)
            label = int(rng.integers(1, self.num_classes + 1))
            mask = _hard_shape_mask(self.classes[label - 1], cx, cy, side, xx, yy)
            colour = _class_colour(rng, label, self.colour_jitter)
            if not mask.any():
                continue
            image[:, mask] = colour[:, None]
            owner[mask] = k
            drawn.append((k, int(mask.sum())))
            labels.append(label)

        boxes, kept_labels, masks = [], [], []
        for (k, full), label in zip(drawn, labels):
            visible = owner == k
            if visible.sum() < max(self.min_visible * full, 4):
                continue
            boxes.append(_mask_box(visible))
            kept_labels.append(label)
            masks.append(visible)
        target = {
            "boxes": torch.tensor(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.tensor(kept_labels, dtype=torch.int64),
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
        if self.masks:
            stacked = np.stack(masks) if masks else np.zeros((0, H, W), dtype=bool)
            target["masks"] = torch.from_numpy(stacked.astype(np.uint8))
        return torch.from_numpy(np.ascontiguousarray(image)), target


def _class_colour(rng: np.random.Generator, label: int, jitter: float) -> np.ndarray:
    """The colour of an object of ``label``: its class's hue ``(label - 1) / 8``
    (an eighth of the wheel apart; jittered by ``jitter``), random saturation
    and value. Clutter takes any hue (``_random_colour``)."""
    import colorsys

    h = ((label - 1) / 8 + rng.normal(0, jitter)) % 1.0
    s, v = rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated colour of random hue (HSV with s, v in [0.6, 1])."""
    import colorsys

    h, s, v = rng.uniform(0, 1), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _clutter_mask(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A distractor: a line segment (1-2 px thick) or a small irregular blob."""
    H, W = xx.shape
    if rng.uniform() < 0.5:
        x0, y0 = rng.uniform(0, W), rng.uniform(0, H)
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.2, 0.6) * min(H, W)
        ux, uy = math.cos(angle), math.sin(angle)
        t = (xx - x0) * ux + (yy - y0) * uy
        d = np.abs(-(xx - x0) * uy + (yy - y0) * ux)
        return (d <= rng.uniform(0.5, 1.0)) & (t >= 0) & (t <= length)
    cx, cy, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.03, 0.08) * min(H, W)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.3 * np.sin(5 * angle + rng.uniform(0, 2 * math.pi))
    return np.hypot(xx - cx, yy - cy) <= r * wobble


def _hard_shape_mask(name: str, cx: float, cy: float, side: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    h = side / 2
    dx, dy = xx - cx, yy - cy
    if name == "ring":
        r2 = dx * dx + dy * dy
        return (r2 <= h * h) & (r2 >= (0.55 * h) ** 2)
    if name == "cross":
        arm = h / 3
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= h)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= h))
    if name == "ellipse":  # twice as wide as tall
        return (dx / h) ** 2 + (dy / (h / 2)) ** 2 <= 1
    if name == "bar":  # a tall rectangle, a third as wide as tall
        return (np.abs(dx) <= h / 3) & (np.abs(dy) <= h)
    return _shape_mask(name, cx, cy, side, xx, yy)
