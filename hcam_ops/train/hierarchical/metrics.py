"""Hierarchical classification metrics: accuracy per level, full-path
accuracy (every level right), the hierarchical consistency ratio (each
prediction's parent is the next level's prediction), and the IoU of the fine
and coarse CAMs (each binarised at its mean)."""

from __future__ import annotations

import torch

from ...models.cast import clusters_to_grid
from ...ops.cam_gather import cam_gather
from .hierarchy import Hierarchy


def cam_iou(model, logits: list[torch.Tensor], intermediates: dict) -> torch.Tensor:
    """Per sample, IoU of the finest and the next level's CAMs (predicted
    classes) on the token grid, each map thresholded at its own mean."""
    tokens = intermediates["centroid1"].float()
    maps = []
    for head, lg in zip(model.heads[:2], logits[:2]):
        cam = cam_gather(tokens, head.weight.float(), lg.argmax(1))
        maps.append(clusters_to_grid(cam, intermediates).flatten(1))
    a, b = (m > m.mean(1, keepdim=True) for m in maps)
    inter, union = (a & b).sum(1).float(), (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


class HierarchyMetrics:
    def __init__(self, hierarchy: Hierarchy):
        self.hierarchy = hierarchy
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.correct = [0] * len(self.hierarchy.num_classes)
        self.full = self.consistent = 0
        self.iou_sum = 0.0

    @torch.no_grad()
    def update(self, logits: list[torch.Tensor], labels: list[torch.Tensor], iou: torch.Tensor | None = None) -> None:
        preds = [lg.argmax(1) for lg in logits]
        right = [p == y for p, y in zip(preds, labels)]
        for l, r in enumerate(right):
            self.correct[l] += int(r.sum())
        self.full += int(torch.stack(right).all(0).sum())
        ok = torch.ones_like(preds[0], dtype=torch.bool)
        for l, parents in enumerate(self.hierarchy.parents):
            ok &= parents.to(preds[l].device)[preds[l]] == preds[l + 1]
        self.consistent += int(ok.sum())
        if iou is not None:
            self.iou_sum += float(iou.sum())
        self.n += preds[0].numel()

    def counts(self) -> dict[str, float]:
        """The sums behind the metrics (to add up over processes)."""
        out = {f"correct_l{l}": float(c) for l, c in enumerate(self.correct)}
        out.update(full=float(self.full), consistent=float(self.consistent), iou_sum=self.iou_sum, n=float(self.n))
        return out

    @staticmethod
    def from_counts(counts: dict[str, float]) -> dict[str, float]:
        n = max(counts["n"], 1)
        levels = sorted(k for k in counts if k.startswith("correct_l"))
        out = {f"acc_l{k[len('correct_l') :]}": counts[k] / n for k in levels}
        out.update(
            full_path_acc=counts["full"] / n, consistency=counts["consistent"] / n, cam_iou=counts["iou_sum"] / n
        )
        return out

    def compute(self) -> dict[str, float]:
        return self.from_counts(self.counts())
