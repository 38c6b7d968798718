"""The H-CAST training loss (``deit/engine_hier.py``) with the CAM-consistency term (docs/ops/cam.md):

    L = sum_levels CE_l + gk_weight * L_gk + cam_weight * L_cons

- ``CE_l``: soft-target cross-entropy against the level's mixed targets under
  mixup (timm's ``SoftTargetCrossEntropy``), else cross-entropy with label
  smoothing (timm's ``LabelSmoothingCrossEntropy`` = ``F.cross_entropy(...,
  label_smoothing=s)``).
- ``L_gk``: ``KLDivLoss(reduction="batchmean")`` between ``log_softmax`` over
  the concatenated logits of all levels, coarsest first, and the
  L1-normalised concatenation of the levels' targets (the mixed targets under
  mixup, else one-hot).
- ``L_cons``: CAM consistency on ``centroid1`` (``hcam_ops.cam_kl_loss``),
  each head's argmax class, the coarser map a detached teacher; by default
  the species/family pair only (the default), ``pairs="adjacent"`` for every
  adjacent pair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ... import ops

CAM_PAIRS = ("first", "adjacent")


def global_kl(logits: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """H-CAST's ``L_gk``: every level's logits and targets concatenated,
    coarsest level first (as published; the value does not depend on the
    order). In float32, or float64 when the inputs are float64: lower
    precisions are widened to float32, as autocast does for losses."""
    dtype = torch.float64 if all(t.dtype == torch.float64 for t in (*logits, *targets)) else torch.float32
    log_p = torch.log_softmax(torch.cat([lg.to(dtype) for lg in reversed(logits)], dim=1), dim=1)
    q = F.normalize(torch.cat([t.to(dtype) for t in reversed(targets)], dim=1), p=1, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean")


def level_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets ``[B, K]``: ``sum(-target * log_softmax)`` averaged;
    class indices ``[B]``: cross-entropy with label smoothing."""
    logits = logits.float()
    if target.dim() == 2:
        return torch.sum(-target * torch.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=smoothing)


def cam_consistency(
    heads: Sequence[torch.nn.Module],
    logits: Sequence[torch.Tensor],
    features: torch.Tensor,
    pairs: str = "first",
    cam_loss: Callable = ops.hierarchical_cam_kl_loss,
) -> torch.Tensor:
    """The CAM-consistency ``L_cons`` on ``features`` (``centroid1``), in float32
    whatever autocast chose for the tokens. ``pairs="first"``: levels 0 and 1
    (species/family); ``"adjacent"``: every adjacent pair, summed."""
    if pairs not in CAM_PAIRS:
        raise ValueError(f"cam pairs must be one of {CAM_PAIRS}, got {pairs!r}")
    n = 2 if pairs == "first" else len(logits)
    weights = [h.weight.float() for h in heads[:n]]
    classes = [lg.detach().argmax(1) for lg in logits[:n]]
    return cam_loss(features.float(), weights, classes)


def hierarchical_loss(
    heads: Sequence[torch.nn.Module],
    logits: Sequence[torch.Tensor],
    intermediates: dict,
    targets: Sequence[torch.Tensor],
    num_classes: Sequence[int],
    *,
    smoothing: float = 0.0,
    gk_weight: float = 0.0,
    cam_weight: float = 0.0,
    cam_pairs: str = "first",
    cam_loss: Callable = ops.hierarchical_cam_kl_loss,
) -> dict[str, torch.Tensor]:
    """``targets``: per level, class indices ``[B]`` or soft targets
    ``[B, K_l]`` (mixup). Returns ``loss`` and its parts, detached: ``ce``
    (the sum over levels), ``ce_l{k}``, ``gk_loss``, ``cam_loss``."""
    parts, total = {}, 0.0
    for k, (lg, t) in enumerate(zip(logits, targets)):
        ce = level_loss(lg, t, smoothing)
        parts[f"ce_l{k}"] = ce.detach()
        total = total + ce
    parts["ce"] = total.detach()
    loss = total
    if gk_weight:
        soft = [t if t.dim() == 2 else F.one_hot(t, n).float() for t, n in zip(targets, num_classes)]
        gk = global_kl(logits, soft)
        loss = loss + gk_weight * gk
        parts["gk_loss"] = gk.detach()
    if cam_weight:
        cam = cam_consistency(heads, logits, intermediates["centroid1"], cam_pairs, cam_loss)
        loss = loss + cam_weight * cam
        parts["cam_loss"] = cam.detach()
    parts["loss"] = loss
    return parts
