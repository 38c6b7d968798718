"""Data for the multi-label task: a CSV of one-hot labels next to an image
folder, and a synthetic multi-label image set made on the fly (the CLI's
default)."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence

import torch
from PIL import Image, UnidentifiedImageError

from ..._cli import not_utf8

# timm and torchvision are imported where used: the training CLI's --help
# imports this module and should not wait for them.

AUGMENTS = ("report", "light")


def train_transform(size: int, augment: str = "report", vflip: bool = False):
    """Training augmentations. ``"report"``: the report's section 3.2 list,
    in its order (resize, horizontal flip, rotation 30, colour jitter 0.2 on
    all four, affine: 10 degrees, translate 0.1, scale 0.9-1.1); ``vflip``
    adds a vertical flip after the horizontal one. ``"light"``: our earlier
    set (vertical flip always, hue 0.02, no rotation in the affine)."""
    from torchvision import transforms

    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    if augment == "light":
        vflip = True
    ops = [transforms.Resize((size, size)), transforms.RandomHorizontalFlip()]
    if vflip:
        ops.append(transforms.RandomVerticalFlip())
    ops.append(transforms.RandomRotation(30))
    if augment == "report":
        ops += [
            transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2),
            transforms.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        ]
    else:
        ops += [
            transforms.ColorJitter(0.2, 0.2, 0.2, 0.02),
            transforms.RandomAffine(0, translate=(0.1, 0.1), scale=(0.9, 1.1)),
        ]
    return transforms.Compose([*ops, transforms.ToTensor(), normalize()])


def eval_transform(size: int):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor(), normalize()])


def normalize():
    """timm's ImageNet normalisation, which every model here trains with."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision import transforms

    return transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


class CsvMultiLabel(torch.utils.data.Dataset):
    """``image,<class 1>,<class 2>,...`` with 0/1 columns; images under ``root``.
    Every row's image is checked (:meth:`check_images`), so a bad row is
    named with its CSV line before training starts, not as a traceback from
    a data-loading worker an epoch later."""

    def __init__(self, csv_path: str, root: str, classes: Sequence[str], transform, check_images: bool = True):
        try:
            with open(csv_path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames:
                    raise ValueError(f"{csv_path}: empty file (expected a header: image,<class>,...)")
                missing = [c for c in classes if c not in reader.fieldnames]
                if missing:
                    raise ValueError(f"{csv_path}: no column for the classes {missing} (columns: {reader.fieldnames})")
                key = reader.fieldnames[0]
                rows = list(reader)
        except UnicodeDecodeError as e:
            raise ValueError(not_utf8(csv_path, e)) from None
        if not rows:
            raise ValueError(f"{csv_path}: a header but no rows")
        labels = []
        for number, r in enumerate(rows, start=2):  # line 1 is the header
            if not (r.get(key) or "").strip():
                raise ValueError(f"{csv_path} line {number}: no image name in column {key!r}")
            labels.append([_binary(r[c], csv_path, number, c) for c in classes])
        self.paths = [os.path.join(root, r[key]) for r in rows]
        self.rows = [f"{csv_path} line {number}" for number in range(2, len(rows) + 2)]
        self.labels = torch.tensor(labels)
        self.transform = transform
        if check_images:
            self.check_images()

    def check_images(self) -> None:
        """Every row's image is a file PIL identifies, else a ``ValueError``
        naming the CSV line (``check_images=False`` defers this, so that a
        caller reads the labels of all its CSVs first)."""
        for path, row in zip(self.paths, self.rows):
            _check_image(path, row)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        try:
            image = Image.open(self.paths[i]).convert("RGB")
        except OSError as e:  # changed since the check in __init__
            raise ValueError(f"{self.rows[i]}: image {self.paths[i]}: {e.strerror or e}") from None
        return self.transform(image), self.labels[i]


def _check_image(path: str, row: str) -> None:
    """``path`` is a file PIL identifies as an image (its header only is
    read), else a ``ValueError`` naming ``row``."""
    if not os.path.isfile(path):
        raise ValueError(f"{row}: image {path}: {'a folder' if os.path.isdir(path) else 'no such file'}")
    try:
        with Image.open(path):
            pass
    except OSError as e:
        reason = "not an image PIL can read" if isinstance(e, UnidentifiedImageError) else (e.strerror or str(e))
        raise ValueError(f"{row}: image {path}: {reason}") from None


def _binary(cell, path: str, line: int, column: str) -> float:
    """A label cell: 0 or 1 (as written by pandas too: 0.0, 1.0)."""
    text = (cell or "").strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise ValueError(f"{path} line {line}, column {column!r}: {text!r} is not a label (0 or 1)")
    return value


class SyntheticMultiLabel(torch.utils.data.Dataset):
    """Each class is a coloured blob pattern of its own hue; an image holds a
    random subset of the classes (at least one), with noise. Deterministic
    per index."""

    def __init__(self, num_classes: int = 6, size: int = 64, length: int = 256, seed: int = 0, train: bool = True):
        self.num_classes, self.size, self.length, self.seed = num_classes, size, length, seed
        self.norm = normalize()
        self.flip = train
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.rand(length, num_classes, generator=g) < 0.3).float()
        self.labels[self.labels.sum(1) == 0, 0] = 1.0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        S = self.size
        img = 0.35 + 0.05 * torch.randn(3, S, S, generator=g)
        ys, xs = torch.meshgrid(
            torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij"
        )
        for k in torch.nonzero(self.labels[i])[:, 0].tolist():
            hue = 2 * math.pi * k / self.num_classes
            colour = torch.tensor([math.cos(hue), math.cos(hue + 2.1), math.cos(hue + 4.2)]) * 0.4 + 0.5
            cy, cx = (torch.rand(2, generator=g) * 0.6 + 0.2) * S
            blob = (((ys - cy) ** 2 + (xs - cx) ** 2) < (0.15 * S) ** 2).float()
            img = img * (1 - blob) + colour.view(3, 1, 1) * blob
        if self.flip and bool(torch.rand(1, generator=g) < 0.5):
            img = torch.flip(img, dims=[2])
        return self.norm(img.clamp(0, 1)), self.labels[i]


def oversample_weights(labels: torch.Tensor, classes: Sequence[int], factor: float) -> torch.Tensor:
    """Sampling weights: ``factor`` for a sample holding any of ``classes``, else 1."""
    w = torch.ones(labels.shape[0])
    if classes:
        w[labels[:, list(classes)].sum(1) > 0] = factor
    return w


def duplicate(dataset, classes: Sequence[int], copies: int):
    """The report's oversampling (section 3.3, its dataset's
    ``_augment_complex_class``): every sample holding any of ``classes``
    appears ``copies`` times in all (the original and ``copies - 1``
    duplicates). Returns a ``Subset`` that keeps ``.labels``."""
    hit = torch.nonzero(dataset.labels[:, list(classes)].sum(1) > 0)[:, 0].tolist()
    indices = list(range(len(dataset))) + hit * (copies - 1)
    subset = torch.utils.data.Subset(dataset, indices)
    subset.labels = dataset.labels[indices]
    return subset
