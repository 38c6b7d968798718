"""Hierarchical classification metrics, from sums that add up over processes:

- ``acc_l{k}`` / ``top5_l{k}``: top-1 / top-5 accuracy of level ``k`` (0 =
  finest; top-5 is top-``K`` for a level of ``K < 5`` classes);
- ``full_path_acc`` (FPA): every level right;
- ``tice``: tree-inconsistency error, the share of samples whose predicted
  path is not a path of the hierarchy (the published ``evaluate_detail``);
- ``consistency``: the hierarchical consistency ratio, the share of adjacent
  level pairs whose predictions agree with the tree (parent of the finer
  prediction = the coarser prediction), averaged over the pairs; with two
  levels it is ``1 - tice``;
- ``cam_iou``: IoU of the finest and the next level's CAMs (each for its
  predicted class, on ``centroid1``, mapped to the stem grid), each map
  thresholded at its own mean.
"""

from __future__ import annotations

import torch

from ...ops.cam_gather import cam_gather
from .hierarchy import Hierarchy


def cam_iou(heads, logits: list[torch.Tensor], intermediates: dict) -> torch.Tensor:
    """Per sample, the IoU of the level-0 and level-1 CAMs."""
    from ...models.cast import clusters_to_grid  # hcam_ops.models imports timm: not at import time

    tokens = intermediates["centroid1"].float()
    maps = []
    for head, lg in zip(heads[:2], logits[:2]):
        cam = cam_gather(tokens, head.weight.float(), lg.argmax(1))
        maps.append(clusters_to_grid(cam, intermediates).flatten(1))
    a, b = (m > m.mean(1, keepdim=True) for m in maps)
    inter, union = (a & b).sum(1).float(), (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def path_checks(hierarchy: Hierarchy, preds: list[torch.Tensor]) -> torch.Tensor:
    """``[B, L - 1]`` bool: pair ``l`` holds when the parent of the level-``l``
    prediction is the level-``l+1`` prediction."""
    if len(preds) < 2:
        return torch.ones(preds[0].shape[0], 0, dtype=torch.bool, device=preds[0].device)
    return torch.stack(
        [p.to(preds[l].device)[preds[l]] == preds[l + 1] for l, p in enumerate(hierarchy.parents)], dim=1
    )


class HierarchyMetrics:
    def __init__(self, hierarchy: Hierarchy):
        self.hierarchy = hierarchy
        self.levels = len(hierarchy.num_classes)
        self.reset()

    def reset(self) -> None:
        self.counts_ = {f"correct_l{l}": 0.0 for l in range(self.levels)}
        self.counts_.update({f"top5_l{l}": 0.0 for l in range(self.levels)})
        self.counts_.update(full=0.0, inconsistent=0.0, pairs_ok=0.0, iou_sum=0.0, iou_n=0.0, n=0.0)

    @torch.no_grad()
    def update(self, logits: list[torch.Tensor], labels: list[torch.Tensor], iou: torch.Tensor | None = None) -> None:
        c = self.counts_
        preds = [lg.argmax(1) for lg in logits]
        right = [p == y for p, y in zip(preds, labels)]
        for l, (lg, y, r) in enumerate(zip(logits, labels, right)):
            c[f"correct_l{l}"] += float(r.sum())
            top = lg.topk(min(5, lg.shape[1]), dim=1).indices
            c[f"top5_l{l}"] += float((top == y[:, None]).any(1).sum())
        c["full"] += float(torch.stack(right).all(0).sum())
        checks = path_checks(self.hierarchy, preds)
        c["inconsistent"] += float((~checks.all(1)).sum())
        c["pairs_ok"] += float(checks.float().mean(1).sum()) if checks.shape[1] else float(len(preds[0]))
        if iou is not None:
            c["iou_sum"] += float(iou.sum())
            c["iou_n"] += float(iou.numel())
        c["n"] += float(preds[0].numel())

    def counts(self) -> dict[str, float]:
        """The sums behind the metrics (to add up over processes)."""
        return dict(self.counts_)

    @staticmethod
    def from_counts(counts: dict[str, float]) -> dict[str, float]:
        n = max(counts["n"], 1.0)
        levels = sorted(int(k[len("correct_l") :]) for k in counts if k.startswith("correct_l"))
        out = {f"acc_l{l}": counts[f"correct_l{l}"] / n for l in levels}
        out.update({f"top5_l{l}": counts[f"top5_l{l}"] / n for l in levels})
        out.update(
            full_path_acc=counts["full"] / n,
            tice=counts["inconsistent"] / n,
            consistency=counts["pairs_ok"] / n,
        )
        if counts.get("iou_n", 0) > 0:
            out["cam_iou"] = counts["iou_sum"] / counts["iou_n"]
        return out

    def compute(self) -> dict[str, float]:
        return self.from_counts(self.counts())
