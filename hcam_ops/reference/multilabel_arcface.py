"""Plain-PyTorch multi-label ArcFace: the contract of hcam_ops.multilabel_arcface_loss."""

import math

import torch
import torch.nn.functional as F


def multilabel_arcface_loss(
    features,
    weight,
    labels,
    scale=30.0,
    margin=0.5,
    easy_margin=False,
    reduction="mean",
    return_logits=False,
    *,
    check_inputs=True,
    chunk_size=None,
):
    cos = F.linear(F.normalize(features, dim=-1, eps=1e-12), F.normalize(weight, dim=-1, eps=1e-12))
    sin = torch.sqrt(torch.clamp(1 - cos * cos, min=1e-9))
    phi = cos * math.cos(margin) - sin * math.sin(margin)
    if easy_margin:
        phi = torch.where(cos > 0, phi, cos)
    else:
        phi = torch.where(cos > math.cos(math.pi - margin), phi, cos - math.sin(math.pi - margin) * margin)
    y = labels.to(cos.dtype)
    logits = scale * torch.where(y == 1, phi, cos)
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction=reduction)
    return (loss, logits) if return_logits else loss


def arcface_logits(features, weight, scale=30.0):
    return scale * F.linear(F.normalize(features, dim=-1, eps=1e-12), F.normalize(weight, dim=-1, eps=1e-12))
