"""Hierarchical mixup / cutmix (the published ``deit/mixup_hier.py``): timm's
``Mixup`` mixes the images once (one lambda per batch, or per element or pair
in those modes, and timm's pairing of each image with its mirror in the
batch, ``x.flip(0)``), and every level's targets are mixed with that same
lambda and pairing, so the mixed targets of the levels stay consistent with
one another. Label smoothing is applied to each level's one-hot targets
(``smoothing / K_l`` off value), as published.

The superpixels are not mixed: a mixed image keeps its own segments, as in
the published training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target


class HierarchicalMixup(Mixup):
    def __init__(self, num_classes: Sequence[int], **kwargs):
        super().__init__(num_classes=num_classes[0], **kwargs)
        self.levels = list(num_classes)

    def __call__(self, x: torch.Tensor, targets: Sequence[torch.Tensor]):
        """Mixes ``x`` in place; returns ``(x, [soft targets [B, K_l] per
        level])``. An odd batch (timm's mixing pairs images) is not mixed; its
        targets are the smoothed one-hot ones."""
        if len(x) % 2:
            lam = 1.0
        elif self.mode == "elem":
            lam = self._mix_elem(x)
        elif self.mode == "pair":
            lam = self._mix_pair(x)
        else:
            lam = self._mix_batch(x)
        return x, [mixup_target(t, n, lam, self.label_smoothing) for t, n in zip(targets, self.levels)]
