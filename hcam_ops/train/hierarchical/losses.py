"""The H-CAST training loss: cross-entropy per level, the label-hierarchy
consistency term L_gk, and CAM consistency L_cons on the first pooled tokens."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ... import ops
from .hierarchy import Hierarchy


def global_kl(logits: list[torch.Tensor], hierarchy: Hierarchy) -> torch.Tensor:
    """Sum over adjacent levels of KL(q || p_coarse), where q is the coarse
    distribution the finer prediction implies (its probabilities summed over
    each coarse class's children) and p_coarse the coarse head's own."""
    total = logits[0].new_zeros((), dtype=torch.float32)
    for l in range(len(logits) - 1):
        p = torch.softmax(logits[l].float(), dim=-1)
        implied = p.new_zeros(p.shape[0], logits[l + 1].shape[1]).index_add_(1, hierarchy.parents[l].to(p.device), p)
        total = total + F.kl_div(torch.log_softmax(logits[l + 1].float(), dim=-1), implied, reduction="batchmean")
    return total


def hierarchical_loss(
    model,
    logits: list[torch.Tensor],
    intermediates: dict,
    labels: list[torch.Tensor],
    hierarchy: Hierarchy,
    cam_weight: float = 0.0,
    gk_weight: float = 0.0,
    cam_loss: Callable = ops.hierarchical_cam_kl_loss,
) -> dict[str, torch.Tensor]:
    """``loss = sum_l CE_l + gk_weight * L_gk + cam_weight * L_cons``.

    ``L_cons`` is the CAM-KL loss over adjacent levels on ``centroid1``, with
    each head's argmax class; each coarser map is the detached teacher (the op
    does that). It runs in float32 whatever autocast chose for the tokens.
    Returns the parts too: ``ce``, ``gk_loss``, ``cam_loss``.
    """
    ce = sum(F.cross_entropy(lg.float(), y) for lg, y in zip(logits, labels))
    out = {"ce": ce.detach()}
    loss = ce
    if gk_weight:
        gk = global_kl(logits, hierarchy)
        loss = loss + gk_weight * gk
        out["gk_loss"] = gk.detach()
    if cam_weight:
        weights = [head.weight.float() for head in model.heads]
        classes = [lg.detach().argmax(1) for lg in logits]
        cam = cam_loss(intermediates["centroid1"].float(), weights, classes)
        loss = loss + cam_weight * cam
        out["cam_loss"] = cam.detach()
    out["loss"] = loss
    return out
