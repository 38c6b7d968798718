"""The ablation layer for FPN outputs (mmdet's DetAblationLayer), on
pytorch-grad-cam's ``AblationLayer``.

AblationCAM swaps the target layer for this one and scores the model once per
ablated channel. Channels are numbered over the concatenation the FPN reshape
transform makes (level 0's channels first); ``locate`` maps such an index to
``(level, channel)`` by cumulative channel counts and bisection, so levels of
any widths work (pytorch-grad-cam's ``AblationLayerFasterRCNN`` assumes five
levels of 256). The ablated channel is set to ``value`` (mmdet's -1000: FPN
outputs are not post-ReLU, so zero would not remove them). The container the
layer returns has the target layer's type and keys: torchvision's heads read
FPN levels by name (``MultiScaleRoIAlign`` wants ``'0'..'3'``).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from pytorch_grad_cam.ablation_layer import AblationLayer


def channel_offsets(channel_counts: Sequence[int]) -> np.ndarray:
    """Cumulative channel counts: level ``l`` holds global channels
    ``[offsets[l-1], offsets[l])``."""
    return np.cumsum([int(c) for c in channel_counts])


def locate(index: int, channel_counts: Sequence[int]) -> tuple[int, int]:
    """``(level, channel within the level)`` of global channel ``index``."""
    offsets = channel_offsets(channel_counts)
    if not 0 <= index < offsets[-1]:
        raise IndexError(f"channel {index} out of range for {int(offsets[-1])} channels")
    level = bisect.bisect_right(offsets, index)
    start = int(offsets[level - 1]) if level > 0 else 0
    return level, int(index) - start


class FPNAblationLayer(AblationLayer):
    """Ablates one channel per batch member across FPN levels (a dict or a
    list/tuple of ``[B, C_l, H_l, W_l]``); a single tensor is handled by the
    base class, as pytorch-grad-cam does for classifiers."""

    def __init__(self, value: float = -1000.0):
        super().__init__()
        self.value = float(value)
        self.activations = None

    def set_next_batch(self, input_batch_index, activations, num_channels_to_ablate):
        """The ``input_batch_index``-th member of every level, repeated
        ``num_channels_to_ablate`` times (one copy per channel to ablate)."""
        if isinstance(activations, torch.Tensor):
            return super().set_next_batch(input_batch_index, activations, num_channels_to_ablate)

        def repeat(level: torch.Tensor) -> torch.Tensor:
            one = level[input_batch_index : input_batch_index + 1].clone()
            return one.repeat(num_channels_to_ablate, *([1] * (one.dim() - 1)))

        if isinstance(activations, Mapping):
            self.activations = OrderedDict((k, repeat(v)) for k, v in activations.items())
        else:
            self.activations = type(activations)(repeat(v) for v in activations)

    def __call__(self, x):
        if isinstance(self.activations, torch.Tensor):
            return super().__call__(x)
        levels = list(self.activations.values()) if isinstance(self.activations, Mapping) else list(self.activations)
        counts = [level.shape[1] for level in levels]
        for i in range(levels[0].shape[0]):
            level, channel = locate(int(self.indices[i]), counts)
            levels[level][i, channel] = self.value
        return self.activations
