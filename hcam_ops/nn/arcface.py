"""MultiLabelArcFaceLoss: a multi-label classifier head with an angular margin."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.multilabel_arcface import arcface_logits, multilabel_arcface_loss


class MultiLabelArcFaceLoss(nn.Module):
    """Owns the class weight ``[num_classes, in_features]`` (Xavier-uniform).

    ``forward(features, labels)`` returns ``(loss, logits)``: the fused loss and
    the training logits (with the margin, detached). ``logits(features)`` gives
    the margin-free inference scores ``s * cos``, a plain differentiable
    function of the features (usable by Grad-CAM).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        scale: float = 30.0,
        margin: float = 0.5,
        easy_margin: bool = False,
        reduction: str = "mean",
    ):
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.scale, self.margin, self.easy_margin, self.reduction = scale, margin, easy_margin, reduction
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, features: torch.Tensor, labels: torch.Tensor):
        weight = self.weight if features.dtype == self.weight.dtype else self.weight.to(features.dtype)
        return multilabel_arcface_loss(
            features, weight, labels, self.scale, self.margin, self.easy_margin, self.reduction, return_logits=True
        )

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return arcface_logits(features, self.weight.to(features.dtype), self.scale)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, scale={self.scale}, "
            f"margin={self.margin}, easy_margin={self.easy_margin}"
        )
