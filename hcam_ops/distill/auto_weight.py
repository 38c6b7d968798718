"""Ours: one global factor on the distillation terms, set from the first
training batches so that the largest term matches the detection loss.

FGD's authors advise choosing the loss weights so that the distillation terms
are about the size of the detection losses, keeping the published ratios
between them (yzd-v/FGD issues 11 and 72). The published weights are tuned
for COCO FPN features of pretrained backbones; on other features the terms can
be 10^2-10^4 times the detection loss. This scales all of them by one factor,
so the ratios stay the published ones:

    factor = sum over the first ``batches`` batches of the detection loss
             / the same sum of the batch's largest distillation term

Until ``batches`` batches have been seen the factor is the running estimate
(so the first steps are already balanced), then it is frozen. It is a buffer:
a checkpoint keeps it, and a resumed run (mid-calibration too) goes on with
the same sums. Under torch.distributed each batch's sums are all-reduced
first, so every rank uses the same factor."""

from __future__ import annotations

import torch
from torch import nn


class AutoDistillWeight(nn.Module):
    """``update(detection_loss, terms)`` -> the factor for this batch (a 0-d
    tensor without gradient). ``batches``: how many training batches set it."""

    def __init__(self, batches: int = 10):
        super().__init__()
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f"AutoDistillWeight: batches must be a positive int, got {batches!r}")
        self.batches = batches
        # float64 sums: over a few batches they are exact enough, and the
        # factor is a ratio of two of them.
        self.register_buffer("detection_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("term_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    @property
    def frozen(self) -> bool:
        return int(self.seen) >= self.batches

    def factor(self) -> torch.Tensor:
        """The current factor (1 before any batch; the frozen one after ``batches``)."""
        if int(self.seen) == 0:
            return torch.ones((), dtype=torch.float64, device=self.seen.device)
        return self.detection_sum / self.term_sum.clamp_min(torch.finfo(torch.float64).tiny)

    @torch.no_grad()
    def update(self, detection_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        if not terms:
            raise ValueError("AutoDistillWeight: no distillation terms to scale")
        if not self.frozen:
            largest = torch.stack([v.detach().double() for v in terms.values()]).max()
            sums = torch.stack([detection_loss.detach().double().reshape(()), largest]).to(self.seen.device)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(sums)
            if not bool(torch.isfinite(sums).all()):
                # A non-finite batch sets nothing (the engine's --on-nonfinite
                # decides about the step itself).
                return self.factor()
            self.detection_sum += sums[0]
            self.term_sum += sums[1]
            self.seen += 1
        return self.factor()

    def extra_repr(self) -> str:
        return f"batches={self.batches}"
