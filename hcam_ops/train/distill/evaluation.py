"""COCO box mAP of a detector on the validation split (torchmetrics'
``MeanAveragePrecision``, pycocotools backend). Under DDP every rank detects
its shard; predictions and targets are gathered and rank 0 computes the
metric, which is then shared so every rank monitors the same value."""

from __future__ import annotations

import math

import torch

from ..distributed import World, sum_across
from .data import unpad

KEYS = ("map", "map_50", "map_75")


@torch.no_grad()
def detect(model, loader, device) -> tuple[list[dict], list[dict]]:
    """``(predictions, targets)`` per image, on the CPU."""
    model.eval()
    preds, targets = [], []
    for batch in loader:
        images, truth = unpad(batch, device)
        for out, t in zip(model(images), truth):
            preds.append(
                {
                    k: out[k].detach().float().cpu() if k != "labels" else out[k].cpu()
                    for k in ("boxes", "scores", "labels")
                }
            )
            targets.append({"boxes": t["boxes"].cpu(), "labels": t["labels"].cpu()})
    return preds, targets


def coco_map(preds: list[dict], targets: list[dict]) -> dict[str, float]:
    from torchmetrics.detection import MeanAveragePrecision

    if not targets:
        return {k: math.nan for k in KEYS}
    # Gathered already: no sync of its own (rank 0 alone computes).
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools", sync_on_compute=False)
    metric.update(preds, targets)
    result = metric.compute()
    return {k: float(result[k]) for k in KEYS}


def evaluate(model, loader, device, world: World) -> dict[str, float]:
    preds, targets = detect(model, loader, device)
    if world.distributed:
        import torch.distributed as dist

        everything = [None] * world.size
        dist.all_gather_object(everything, (preds, targets))
        preds = [p for part in everything for p in part[0]]
        targets = [t for part in everything for t in part[1]]
    result = coco_map(preds, targets) if world.main else {k: 0.0 for k in KEYS}
    # Rank 0's values on every rank (the others add zeros).
    return sum_across(result, world, device)
