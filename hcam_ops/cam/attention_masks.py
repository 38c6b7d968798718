"""The seed 002's two attention masks of one model, and their fusion, as the
CAM CLI draws them (``--method cls-attention`` / ``attnpool``).

A model may have a ViT's class-token attention (:func:`cls_attention`), a
CLIP-style attention pool (:func:`pool_attention`), or both (BiT-Align's
locate model: a DINO ViT with an attention pool on its patch features).
What is there is read; the heads are chosen and the masks fused as in
:mod:`hcam_ops.cam.masks`:

- both: BiT-Align's fusion, ``minmax(0.5 * pool mask + 0.5 * chosen head's
  mask)``;
- class-token attention only: LOCATE's, ``minmax(mean of the chosen heads'
  masks)``;
- an attention pool only: nothing to fuse; the fused mask is the pool mask.

The head is chosen per image by ``scores [B, heads]`` when the caller has a
guidance (BiT-Align's text similarity, :func:`masked_similarity`), else by
the IoU of each head's mask with a guidance mask we can make without text:
the pool mask where the model has a pool, otherwise the mask of the
head-averaged class-token map (the head that best agrees with the heads'
consensus). ``heads`` fixes them instead, as LOCATE's ``[0, 1, 3]``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._cli import InputError
from .cls_attention import ATTENTION_MODULES, cls_attention
from .masks import binarize_at_mean, fuse_masks, mask_iou, select_heads
from .pool_attention import attention_pools, pool_attention

#: The two methods, by registry key (``hcam_ops.cam.methods.normalise``).
CLS_ATTENTION, ATTNPOOL = "clsattention", "attnpool"


@dataclass
class AttentionMasks:
    """Every map of :func:`attention_masks`; ``None`` where the model has no
    such attention. Shapes for a batch of ``B``."""

    cls_maps: torch.Tensor | None  # [B, heads, h, w] class-token attention, raw
    cls_masks: torch.Tensor | None  # [B, heads, h, w] each binarised at its mean
    pool_maps: torch.Tensor | None  # [B, pool heads, H, W] attention pool, raw
    pool_masks: torch.Tensor | None  # [B, pool heads, H, W] each binarised
    pool_mask: torch.Tensor | None  # [B, H, W] the head-averaged pool map binarised (BiT-Align's)
    scores: torch.Tensor | None  # [B, heads] the head scores (None with fixed heads)
    heads: torch.Tensor | list[int] | None  # [B] chosen head per image, or the fixed list
    fused: torch.Tensor  # [B, h, w] in [0, 1]


def _has_vit_attention(model: nn.Module) -> bool:
    return any(fnmatch.fnmatch(n, ATTENTION_MODULES) for n, _ in model.named_modules())


def attention_masks(
    model: nn.Module,
    images: torch.Tensor,
    method: str = CLS_ATTENTION,
    heads: Sequence[int] | None = None,
    scores: torch.Tensor | None = None,
    pool_weight: float = 0.5,
) -> AttentionMasks:
    """The masks of ``model`` on ``images``. ``method``: the attention the
    model must have (``"clsattention"`` or ``"attnpool"``); the other is
    read too where present. ``heads`` (fixed head indices) or ``scores``
    (``[B, heads]``, the caller's guidance) choose the class-token heads;
    neither: the IoU guidance of the module docstring."""
    if method not in (CLS_ATTENTION, ATTNPOOL):
        raise InputError("method", f"must be {CLS_ATTENTION!r} or {ATTNPOOL!r}, got {method!r}")
    if heads is not None and scores is not None:
        raise InputError("heads", "give heads or scores, not both")
    has_cls, has_pool = _has_vit_attention(model), bool(attention_pools(model))
    if method == CLS_ATTENTION and not has_cls:
        raise InputError(
            "model", f"cls-attention needs a timm ViT-style attention block; {type(model).__name__} has none"
        )
    if method == ATTNPOOL and not has_pool:
        raise InputError(
            "model", f"attnpool needs an AttentionPool2d (ours or timm's); {type(model).__name__} has none"
        )
    # One forward pass each: the class-token read switches timm's fused
    # attention off for its pass, the pool read only hooks the pool.
    cls_maps = cls_attention(model, images) if has_cls else None
    pool_maps = pool_attention(model, images) if has_pool else None
    cls_masks = binarize_at_mean(cls_maps) if cls_maps is not None else None
    pool_masks = binarize_at_mean(pool_maps) if pool_maps is not None else None
    pool_mask = binarize_at_mean(pool_maps.mean(1)) if pool_maps is not None else None
    if cls_masks is None:
        if heads is not None or scores is not None:
            raise InputError("heads" if heads is not None else "scores", "the model has no class-token heads to choose")
        return AttentionMasks(None, None, pool_maps, pool_masks, pool_mask, None, None, pool_mask.clone())
    if pool_mask is not None and pool_mask.shape[-2:] != cls_masks.shape[-2:]:
        raise InputError(
            "model",
            f"its attention pool's {tuple(pool_mask.shape[-2:])} map and its class-token attention's "
            f"{tuple(cls_masks.shape[-2:])} patch grid differ: no fusion",
        )
    if heads is not None:
        chosen = list(heads)
    else:
        if scores is None:
            guide = pool_mask if pool_mask is not None else binarize_at_mean(cls_maps.mean(1))
            scores = mask_iou(cls_masks, guide)
        elif not isinstance(scores, torch.Tensor) or scores.shape != cls_masks.shape[:2]:
            raise InputError(
                "scores", f"expected shape {tuple(cls_masks.shape[:2])}, got {getattr(scores, 'shape', scores)}"
            )
        chosen = select_heads(scores)
    fused = fuse_masks(cls_masks, chosen, pool_mask, pool_weight)
    return AttentionMasks(cls_maps, cls_masks, pool_maps, pool_masks, pool_mask, scores, chosen, fused)


def _scaled(maps: torch.Tensor) -> torch.Tensor:
    """Each map min-max scaled, for drawing (``[K, h, w]``)."""
    lo = maps.flatten(1).amin(1)[:, None, None]
    hi = maps.flatten(1).amax(1)[:, None, None]
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def mask_frames(masks: AttentionMasks, method: str, index: int = 0) -> tuple[list[torch.Tensor], list[str], list[bool]]:
    """For image ``index``: the frames to draw, ``(maps [h, w] in [0, 1],
    names, is_mask)``: the method's per-head maps (min-max scaled), their
    masks, the pool mask (``attnpool``) and the fused mask last. Heads are
    numbered from 0, as the indices ``heads`` takes."""
    maps, bins = (masks.cls_maps, masks.cls_masks) if method == CLS_ATTENTION else (masks.pool_maps, masks.pool_masks)
    prefix = "head" if method == CLS_ATTENTION else "pool_head"
    frames, names, is_mask = [], [], []
    for k, m in enumerate(_scaled(maps[index].float())):
        frames.append(m)
        names.append(f"{prefix}_{k}")
        is_mask.append(False)
    for k, m in enumerate(bins[index].float()):
        frames.append(m)
        names.append(f"{prefix}_{k}_mask")
        is_mask.append(True)
    if method == ATTNPOOL:
        frames.append(masks.pool_mask[index].float())
        names.append("pool_mask")
        is_mask.append(True)
    frames.append(masks.fused[index].float())
    names.append("fused")
    is_mask.append(True)
    return frames, names, is_mask


def head_lines(masks: AttentionMasks, index: int = 0) -> list[str]:
    """``heads.txt``: one line per class-token head (its score, and whether
    it was chosen), then the rule that fused the masks."""
    if masks.cls_masks is None:
        return ["fused\tthe pool mask (no class-token attention to fuse it with)"]
    heads = masks.heads
    chosen = {int(heads[index])} if isinstance(heads, torch.Tensor) else set(heads)
    lines = []
    for k in range(masks.cls_masks.shape[1]):
        fields = [f"head_{k}"]
        if masks.scores is not None:
            fields.append(f"{float(masks.scores[index, k]):.4f}")
        if k in chosen:
            fields.append("chosen")
        lines.append("\t".join(fields))
    if masks.pool_mask is not None:
        rule = "BiT-Align: minmax(0.5 * pool_mask + 0.5 * chosen head masks)"
    else:
        rule = "LOCATE: minmax(mean of the chosen head masks)"
    return [*lines, f"fused\t{rule}"]
