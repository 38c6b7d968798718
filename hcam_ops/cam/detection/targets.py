"""The box score target (mmdet's DetBoxScoreTarget): the scalar a CAM
method explains, from what ``DetCAMModel`` returns for one image.

- Loss mode (a dict of ``loss_*`` tensors; gradient methods): the sum of the
  detector's losses against the reference boxes.
- Predict mode (a dict of ``boxes``/``labels``/``scores``; gradient-free
  methods): for every reference box, the predicted box of the same label that
  overlaps it most; when that IoU exceeds ``match_iou_thr``, the IoU plus the
  box's score, plus the Dice coefficient of the two masks where both exist.
  A reference box without such a match adds 0.

The match is taken among same-label predictions (mmdet takes the best
overlap of any label, then drops it if the label differs, so a bigger
neighbour of another class can hide a match). Dice is ``2|A.B| / (|A| + |B|)``
on the predicted mask probabilities (mmdet's formula lacks the 2).
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from .errors import DetCAMInputError


class DetBoxScoreTarget:
    def __init__(self, boxes, labels, masks=None, match_iou_thr: float = 0.5):
        self.boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
        self.labels = torch.as_tensor(np.asarray(labels, dtype=np.int64)).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise DetCAMInputError("labels", f"{len(self.labels)} labels for {len(self.boxes)} boxes")
        self.masks = None
        if masks is not None:
            self.masks = torch.as_tensor(np.asarray(masks, dtype=np.float32))
            if self.masks.dim() != 3 or len(self.masks) != len(self.boxes):
                raise DetCAMInputError("masks", f"expected [{len(self.boxes)}, H, W], got {tuple(self.masks.shape)}")
        if not 0.0 <= match_iou_thr < 1.0:
            raise DetCAMInputError("match_iou_thr", f"must be in [0, 1), got {match_iou_thr}")
        self.match_iou_thr = float(match_iou_thr)

    def __call__(self, output: dict) -> torch.Tensor:
        if any(key.startswith("loss") for key in output):
            return self._loss(output)
        return self._match(output)

    @staticmethod
    def _loss(losses: dict) -> torch.Tensor:
        total = None
        for key, value in losses.items():
            if "loss" not in key:
                continue
            value = sum(value) if isinstance(value, (list, tuple)) else value
            total = value if total is None else total + value
        return total

    def _match(self, pred: dict) -> torch.Tensor:
        boxes = pred["boxes"]
        device, dtype = boxes.device, boxes.dtype if boxes.is_floating_point() else torch.float32
        score = torch.zeros((), device=device, dtype=dtype)
        if len(boxes) == 0:
            return score
        pred_masks = pred.get("masks")
        for i in range(len(self.boxes)):
            same = torch.nonzero(pred["labels"] == self.labels[i].to(device)).flatten()
            if len(same) == 0:
                continue
            ious = box_iou(self.boxes[i : i + 1].to(device, dtype), boxes[same])[0]
            best = int(torch.argmax(ious))
            if ious[best] <= self.match_iou_thr:
                continue
            j = int(same[best])
            score = score + ious[best] + pred["scores"][j]
            if self.masks is not None and pred_masks is not None:
                score = score + dice(self.masks[i].to(device, dtype), pred_masks[j])
        return score


def dice(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Soft Dice ``2 sum(a b) / (sum a + sum b)`` of two ``[H, W]`` masks."""
    return 2 * (a * b).sum() / (a.sum() + b.sum() + eps)
