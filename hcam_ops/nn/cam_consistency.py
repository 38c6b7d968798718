"""CAMConsistencyLoss: the CAM-consistency term of a hierarchical classifier."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.cam_kl import hierarchical_cam_kl_loss


def head_weight(head: nn.Module) -> torch.Tensor:
    """The [K, C] weight of a linear head or a 1x1 conv head."""
    if isinstance(head, nn.Linear):
        return head.weight
    if isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1) and head.groups == 1:
        return head.weight
    raise TypeError(f"CAMConsistencyLoss: a head must be nn.Linear or a 1x1 nn.Conv2d, got {type(head).__name__}")


def classes_of(selector: torch.Tensor) -> torch.Tensor:
    """Floating [B, K] logits -> their argmax (the method's choice); integer [B] targets as they are."""
    if selector.is_floating_point():
        if selector.dim() != 2:
            raise ValueError(f"CAMConsistencyLoss: logits must be [B, K], got shape {tuple(selector.shape)}")
        return selector.detach().argmax(dim=1)
    return selector.long()


class CAMConsistencyLoss(nn.Module):
    """Asks each finer head's CAM to follow the next coarser head's (docs/ops/cam.md#hierarchical_cam_kl_loss).

    Holds references to the heads (not registered as submodules: the model owns
    their parameters). A head's bias is ignored: it shifts a CAM by a constant,
    which the min-max normalisation removes.

    Example::

        loss_fn = CAMConsistencyLoss(model.head_species, model.head_family)
        loss = loss_fn(tokens, species_logits, family_logits)   # argmax classes
        loss = loss_fn(tokens, species_target, family_target)   # or targets
    """

    def __init__(
        self,
        fine_head: nn.Module,
        coarse_head: nn.Module,
        *coarser_heads: nn.Module,
        temperature: float = 1.0,
        eps: float = 1e-6,
        direction: str = "fine_to_coarse",
        reduction: str = "batchmean",
    ):
        super().__init__()
        heads = (fine_head, coarse_head, *coarser_heads)
        for h in heads:
            head_weight(h)
        self._heads = heads  # a tuple: not registered, no duplicate parameters
        self.temperature, self.eps = temperature, eps
        self.direction, self.reduction = direction, reduction

    def forward(self, features: torch.Tensor, *selectors: torch.Tensor) -> torch.Tensor:
        """features ``[B, N, C]`` or ``[B, C, H, W]``; one selector per head,
        fine to coarse: ``[B, K]`` logits (argmax) or ``[B]`` class targets."""
        if len(selectors) != len(self._heads):
            raise ValueError(f"CAMConsistencyLoss: {len(self._heads)} heads but {len(selectors)} selectors")
        weights = [head_weight(h) for h in self._heads]
        if features.dtype != weights[0].dtype:
            # Under autocast the tokens come out in reduced precision while the
            # heads stay float32: take the maps in the features' dtype.
            weights = [w.to(features.dtype) for w in weights]
        return hierarchical_cam_kl_loss(
            features,
            weights,
            [classes_of(s) for s in selectors],
            self.temperature,
            self.eps,
            self.direction,
            self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"levels={len(self._heads)}, temperature={self.temperature}, eps={self.eps}, "
            f"direction={self.direction!r}, reduction={self.reduction!r}"
        )
