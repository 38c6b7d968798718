"""Data for hierarchical training.

- A synthetic hierarchical image set made on the fly (the CLI's default, no
  download).
- An ImageFolder tree of fine classes with a hierarchy file.
- The layouts of the published H-CAST loaders (``deit/dataset/``), with their
  hierarchies (``published.py``):

  CUB-200-2011 (``--data-set cub``): ``ROOT/train/NNN.Name/*.jpg`` and
  ``ROOT/test/NNN.Name/*.jpg``, the ``images_split`` folder that the
  published ``arrange_birds.py`` makes from ``train_test_split.txt``. The
  species is ``NNN - 1`` (the published loader's ImageFolder index when all
  200 folders are there); families and orders come from the published tree
  and are named ``family_NN`` / ``order_NN`` (the tree has ids only).
  Validation is ``test/``, as published.

  FGVC-Aircraft 2013b (``--data-set aircraft``): ``ROOT/fgvc-aircraft-2013b/
  data/images/<id>.jpg`` with ``images_variant_trainval.txt`` (training) and
  ``images_variant_test.txt`` (validation), lines ``<id> <variant>``. The
  variant's label is its position in the published ``Air.csv``; families and
  manufacturers come from the published tree, named after the dataset's own
  ``images_family_trainval.txt`` / ``images_manufacturer_trainval.txt`` when
  those files are there (else ``family_NN`` / ``manufacturer_NN``).

Real images get the published transforms (timm's ``create_transform``:
RandAugment, colour jitter, bicubic random-resized crop, random erasing;
evaluation resizes to ``size / crop ratio`` and centre-crops). Superpixels are
computed per item on the image the model sees (for real images the
augmented, de-normalised one, as published).
"""

from __future__ import annotations

import math
import os
import re

import torch

from . import published
from .hierarchy import Hierarchy

# timm and torchvision are imported where used: the training CLI's --help
# imports this module and should not wait for them.


def synthetic_hierarchy(levels: tuple[int, ...] = (8, 4, 2)) -> Hierarchy:
    """``levels[0]`` fine classes split evenly under each coarser level."""
    names = [[f"L{l}_{i}" for i in range(n)] for l, n in enumerate(levels)]
    parents = [torch.arange(levels[l]) * levels[l + 1] // levels[l] for l in range(len(levels) - 1)]
    return Hierarchy(names, parents)


class SyntheticHierarchical(torch.utils.data.Dataset):
    """Images whose background colour follows the coarse classes and whose
    foreground pattern (stripes at an angle and frequency) follows the fine
    class, with noise and a random position; deterministic per index. Items:
    ``(image [3, S, S] in [0, 1], fine label)``."""

    def __init__(self, hierarchy: Hierarchy, size: int = 64, length: int = 256, seed: int = 0):
        self.hierarchy, self.size, self.length, self.seed = hierarchy, size, length, seed
        self.coarsest = hierarchy.num_classes[-1]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        fine = i % self.hierarchy.num_classes[0]
        top = self.hierarchy.labels(torch.tensor([fine]))[-1].item()
        hue = 2 * math.pi * top / self.coarsest
        bg = torch.tensor([0.5 + 0.4 * math.cos(hue), 0.5 + 0.4 * math.cos(hue + 2.1), 0.5 + 0.4 * math.cos(hue + 4.2)])
        S = self.size
        ys, xs = torch.meshgrid(
            torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij"
        )
        angle = math.pi * fine / self.hierarchy.num_classes[0]
        freq = 0.25 + 0.1 * (fine % 3)
        stripes = (torch.sin(freq * (xs * math.cos(angle) + ys * math.sin(angle))) > 0).float()
        cy, cx = (torch.rand(2, generator=g) * 0.4 + 0.3) * S
        blob = (((ys - cy) ** 2 + (xs - cx) ** 2) < (0.3 * S) ** 2).float()
        fg = stripes * blob
        img = bg.view(3, 1, 1) * (1 - blob) + fg * 0.95 + (1 - fg) * blob * 0.1
        img = img + 0.05 * torch.randn(3, S, S, generator=g)
        return img.clamp(0, 1), fine


def published_transform(train: bool, size: int, args=None):
    """The published transforms (``deit/dataset/datasets.py``
    ``build_transform``); ``args`` carries the augmentation flags (``aa``,
    ``color_jitter``, ``reprob``, ``remode``, ``recount``,
    ``train_interpolation``, ``eval_crop_ratio``). Output: normalised tensors."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
    from torchvision import transforms

    get = (lambda k, d: getattr(args, k, d)) if args is not None else (lambda k, d: d)
    if train:
        return create_transform(
            input_size=size,
            is_training=True,
            color_jitter=get("color_jitter", 0.3),
            auto_augment=get("aa", "rand-m9-mstd0.5-inc1") or None,
            interpolation=get("train_interpolation", "bicubic"),
            re_prob=get("reprob", 0.25),
            re_mode=get("remode", "pixel"),
            re_count=get("recount", 1),
            mean=IMAGENET_DEFAULT_MEAN,
            std=IMAGENET_DEFAULT_STD,
        )
    return transforms.Compose(
        [
            transforms.Resize(int(size / get("eval_crop_ratio", 0.875)), interpolation=3),  # bicubic
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ]
    )


def image_folder(root: str, hierarchy: Hierarchy, size: int, train: bool, args=None) -> torch.utils.data.Dataset:
    """An ImageFolder tree (one folder per fine class, named as in the
    hierarchy file); labels are re-indexed to the hierarchy's fine classes."""
    from torchvision import datasets

    ds = datasets.ImageFolder(root, transform=published_transform(train, size, args))
    index = {n: i for i, n in enumerate(hierarchy.names[0])}
    missing = [c for c in ds.classes if c not in index]
    if missing:
        raise ValueError(f"image_folder: folders not in the hierarchy: {missing[:5]}")
    ds.target_transform = _Reindex([index[c] for c in ds.classes])
    return ds


class _Reindex:
    """ImageFolder index -> hierarchy index (a class, so DataLoader workers can pickle it)."""

    def __init__(self, table: list[int]):
        self.table = table

    def __call__(self, t: int) -> int:
        return self.table[t]


# -- CUB-200-2011 ------------------------------------------------------------------

CUB_FOLDER = re.compile(r"^(\d{3})\.(.+)$")


def cub_hierarchy(species_names: dict[int, str] | None = None) -> Hierarchy:
    """200 species -> 38 families -> 13 orders (the published tree).
    ``species_names[i]`` names species ``i`` (0-based); others are ``NNN``."""
    names = species_names or {}
    species = [names.get(i, f"{i + 1:03d}") for i in range(200)]
    families = [f"family_{i:02d}" for i in range(1, 39)]
    orders = [f"order_{i:02d}" for i in range(1, 14)]
    fam_order = {}
    for f, o in zip(published.CUB_FAMILY, published.CUB_ORDER):
        fam_order[f - 1] = o - 1
    parents = [
        torch.tensor([f - 1 for f in published.CUB_FAMILY]),
        torch.tensor([fam_order[f] for f in range(38)]),
    ]
    return Hierarchy([species, families, orders], parents)


def cub_species_folders(root: str) -> dict[int, str]:
    """``{species index: folder name}`` of ``root/train`` (``NNN.Name`` folders)."""
    split = os.path.join(root, "train")
    if not os.path.isdir(split):
        raise FileNotFoundError(f"{split}: no such folder (the CUB layout is ROOT/train and ROOT/test)")
    out = {}
    for name in sorted(os.listdir(split)):
        m = CUB_FOLDER.match(name)
        if not os.path.isdir(os.path.join(split, name)):
            continue
        if not m or not 1 <= int(m.group(1)) <= 200:
            raise ValueError(f"{os.path.join(split, name)}: not a CUB class folder (NNN.Name, NNN in 001..200)")
        out[int(m.group(1)) - 1] = name
    if not out:
        raise ValueError(f"{split}: no CUB class folders (NNN.Name)")
    return out


def cub(root: str, train: bool, size: int, args=None) -> torch.utils.data.Dataset:
    """The published CUB split: ``root/train`` or ``root/test`` (validation)."""
    split = os.path.join(root, "train" if train else "test")
    if not os.path.isdir(split):
        raise FileNotFoundError(f"{split}: no such folder (the CUB layout is ROOT/train and ROOT/test)")
    from torchvision import datasets

    ds = datasets.ImageFolder(split, transform=published_transform(train, size, args))
    table = []
    for c in ds.classes:
        m = CUB_FOLDER.match(c)
        if not m or not 1 <= int(m.group(1)) <= 200:
            raise ValueError(f"{os.path.join(split, c)}: not a CUB class folder (NNN.Name, NNN in 001..200)")
        table.append(int(m.group(1)) - 1)
    ds.target_transform = _Reindex(table)
    return ds


# -- FGVC-Aircraft ------------------------------------------------------------------


def _aircraft_data(root: str) -> str:
    path = os.path.join(root, "fgvc-aircraft-2013b", "data")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such folder (the Aircraft layout is ROOT/fgvc-aircraft-2013b/data)")
    return path


def _read_pairs(path: str) -> list[tuple[str, str]]:
    """Lines ``<image id> <name with spaces>``; errors name the file and line."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(" ", 1)
            if len(parts) != 2:
                raise ValueError(f"{path} line {number}: expected '<image id> <label>', got {line!r}")
            rows.append((parts[0], parts[1]))
    return rows


def aircraft_hierarchy(root: str | None = None) -> Hierarchy:
    """100 variants -> 70 families -> 30 manufacturers (the published tree).
    With ``root``, coarse classes take the names the dataset's own
    ``images_{family,manufacturer}_trainval.txt`` give the images of their
    variants; a published id that would get two names is an error naming
    the file."""
    variants = list(published.AIRCRAFT_VARIANTS)
    fam = [f - 1 for f in published.AIRCRAFT_FAMILY]
    manu = [m - 1 for m in published.AIRCRAFT_MANUFACTURER]
    fam_manu = dict(zip(fam, manu))
    families = [f"family_{i:02d}" for i in range(1, 71)]
    makers = [f"manufacturer_{i:02d}" for i in range(1, 31)]
    if root is not None:
        data = _aircraft_data(root)
        index = {v: i for i, v in enumerate(variants)}
        variant_of = {img: index.get(v) for img, v in _read_pairs(os.path.join(data, "images_variant_trainval.txt"))}
        for kind, ids, out in (("family", fam, families), ("manufacturer", manu, makers)):
            path = os.path.join(data, f"images_{kind}_trainval.txt")
            if not os.path.isfile(path):
                continue
            named = {}
            for img, name in _read_pairs(path):
                v = variant_of.get(img)
                if v is None:
                    continue
                if named.setdefault(ids[v], name) != name:
                    raise ValueError(
                        f"{path}: {kind} {ids[v] + 1} of the published tree holds both {named[ids[v]]!r} and {name!r}"
                    )
            for i, name in named.items():
                out[i] = name
    parents = [torch.tensor(fam), torch.tensor([fam_manu[f] for f in range(70)])]
    return Hierarchy([variants, families, makers], parents)


class Aircraft(torch.utils.data.Dataset):
    """The published FGVC-Aircraft loader's layout and labels (``trainval``
    for training, ``test`` for validation). Items: ``(image, variant label)``."""

    def __init__(self, root: str, train: bool, transform=None):
        data = _aircraft_data(root)
        labels = os.path.join(data, f"images_variant_{'trainval' if train else 'test'}.txt")
        if not os.path.isfile(labels):
            raise FileNotFoundError(f"{labels}: no such file")
        index = {v: i for i, v in enumerate(published.AIRCRAFT_VARIANTS)}
        self.samples = []
        for img, variant in _read_pairs(labels):
            if variant not in index:
                raise ValueError(f"{labels}: {variant!r} is not one of the 100 published variants")
            self.samples.append((os.path.join(data, "images", f"{img}.jpg"), index[variant]))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            image = im.convert("RGB")
        return (self.transform(image) if self.transform else image), label


def aircraft(root: str, train: bool, size: int, args=None) -> Aircraft:
    return Aircraft(root, train, published_transform(train, size, args))


# -- superpixels ------------------------------------------------------------------


class WithSegments(torch.utils.data.Dataset):
    """``(image, fine label)`` items -> ``(normalised image, segments [H, W],
    fine label)``. ``normalized``: the images come normalised (the published
    transforms); the superpixels are then computed on the de-normalised image,
    clamped to [0, 1]. Otherwise they are in [0, 1] and normalised here."""

    def __init__(self, dataset, superpixels, normalized: bool, mean=None, std=None):
        """``mean`` / ``std``: the normalisation (default: timm's ImageNet statistics)."""
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        mean = IMAGENET_DEFAULT_MEAN if mean is None else mean
        std = IMAGENET_DEFAULT_STD if std is None else std
        self.dataset, self.superpixels, self.normalized = dataset, superpixels, normalized
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, target = self.dataset[i]
        if self.normalized:
            return image, self.superpixels((image * self.std + self.mean).clamp(0, 1)), target
        return (image - self.mean) / self.std, self.superpixels(image), target
