"""What the multi-label models share: the three faces (``model(x)``,
``model(x, labels) -> (loss, logits)``, ``model.predict(x)``) and the
report's loss of its baselines. Their configs and builder are in
``_factory.py``, the class table in :mod:`hcam_ops.data.plant_pathology`."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The report's loss for its EfficientNet and EVA-CLIP baselines
    (``BCEWithLogitsLoss``), in float32 under autocast."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class MultiLabelFaces:
    """Mixed into the multi-label models: ``logits(x)`` (margin-free scores,
    what Grad-CAM and the metrics read) and ``predict(x)`` (probabilities)
    from timm's ``forward_features`` / ``forward_head``."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x).float())
