"""Data for hierarchical training: a synthetic hierarchical image set made on
the fly (the CLI's default, no download), and an ImageFolder tree of fine
classes with a hierarchy file."""

from __future__ import annotations

import math

import torch
from torchvision import datasets, transforms

from .hierarchy import Hierarchy


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


def image_folder(root: str, hierarchy: Hierarchy, size: int, train: bool) -> torch.utils.data.Dataset:
    """An ImageFolder tree (one folder per fine class, named as in the
    hierarchy file); labels are re-indexed to the hierarchy's fine classes."""
    aug = (
        [transforms.RandomResizedCrop(size, scale=(0.5, 1.0)), transforms.RandomHorizontalFlip()]
        if train
        else [transforms.Resize(int(size * 1.14)), transforms.CenterCrop(size)]
    )
    ds = datasets.ImageFolder(root, transform=transforms.Compose(aug + [transforms.ToTensor()]))
    index = {n: i for i, n in enumerate(hierarchy.names[0])}
    missing = [c for c in ds.classes if c not in index]
    if missing:
        raise ValueError(f"image_folder: folders not in the hierarchy: {missing[:5]}")
    ds.target_transform = lambda t: index[ds.classes[t]]
    return ds
