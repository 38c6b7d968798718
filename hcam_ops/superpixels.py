"""Superpixel segment maps for CAST-style models: SEEDS from OpenCV's contrib
module (``cv2.ximgproc``), SLIC from scikit-image as the fallback."""

from __future__ import annotations

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

METHODS = ("seeds", "slic")


def _as_uint8_hwc(image) -> np.ndarray:
    """A PIL image, an HxWx3 uint8 array, or a [3, H, W] float tensor in [0, 1]."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"Superpixels: a tensor image must be [3, H, W], got {tuple(image.shape)}")
        arr = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"Superpixels: an array image must be HxWx3, got {arr.shape}")
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _seeds_available() -> bool:
    try:
        import cv2

        # The plain OpenCV build ships an empty ``cv2.ximgproc`` (typing stubs),
        # so ask for the function itself.
        return hasattr(getattr(cv2, "ximgproc", None), "createSuperpixelSEEDS")
    except ImportError:
        return False


class Superpixels:
    """``image -> segments [H, W]`` int64 with ids ``0 .. n-1``.

    Args:
        num_segments: the target count (about 196 at 224 x 224).
        method: ``"seeds"`` (falls back to ``"slic"`` when OpenCV's contrib
            module is missing) or ``"slic"``.
        max_segments: a hard bound for the model's token count; a map with
            more segments has its ids merged in raster order (id ``i`` becomes
            ``i * max_segments // n``; both methods number segments roughly in
            raster order, so merged ids are neighbours).
    """

    def __init__(
        self,
        num_segments: int = 196,
        method: str = "seeds",
        max_segments: int = 256,
        seeds_levels: int = 4,
        seeds_prior: int = 2,
        seeds_iterations: int = 10,
        slic_compactness: float = 10.0,
    ):
        if method not in METHODS:
            raise ValueError(f"Superpixels: method must be one of {METHODS}, got {method!r}")
        if num_segments <= 0 or max_segments <= 0:
            raise ValueError(
                f"Superpixels: num_segments and max_segments must be positive, got {num_segments}, {max_segments}"
            )
        self.num_segments, self.max_segments = num_segments, max_segments
        self.method = method if method == "slic" or _seeds_available() else "slic"
        self.seeds_args = (seeds_levels, seeds_prior, seeds_iterations)
        self.slic_compactness = slic_compactness

    def _labels(self, arr: np.ndarray) -> np.ndarray:
        if self.method == "seeds":
            import cv2

            levels, prior, iterations = self.seeds_args
            h, w = arr.shape[:2]
            seeds = cv2.ximgproc.createSuperpixelSEEDS(w, h, 3, self.num_segments, levels, prior)
            seeds.iterate(cv2.cvtColor(arr, cv2.COLOR_RGB2HSV), iterations)
            return seeds.getLabels()
        from skimage.segmentation import slic

        return slic(arr, n_segments=self.num_segments, compactness=self.slic_compactness, start_label=0)

    def __call__(self, image) -> torch.Tensor:
        labels = self._labels(_as_uint8_hwc(image))
        _, ids = np.unique(labels, return_inverse=True)
        ids = ids.reshape(labels.shape).astype(np.int64)
        n = int(ids.max()) + 1
        if n > self.max_segments:
            ids = ids * self.max_segments // n
        return torch.from_numpy(ids)


class WithSuperpixels(torch.utils.data.Dataset):
    """Wraps a dataset of ``(image [3, H, W] in [0, 1], target)`` into
    ``(normalised image, segments [H, W], target)``: the segments are computed
    on the image the model sees, before normalisation, and batch with the
    default collate."""

    def __init__(
        self, dataset, superpixels: Superpixels | None = None, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD
    ):
        self.dataset = dataset
        self.superpixels = superpixels or Superpixels()
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        image, target = self.dataset[i]
        segments = self.superpixels(image)
        return (image - self.mean) / self.std, segments, target
