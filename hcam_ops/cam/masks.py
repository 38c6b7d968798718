"""Attention maps made into masks, a head chosen, and the masks fused: the
seed 002's rule, as LOCATE (``Reagan1311/LOCATE``, ``models/locate.py``,
``Net.forward``) and BiT-Align's locate model (``models/locate.py``, the same
``Net.forward`` extended; read in ``DAWDSE/BiT-Align`` and
``sdbhcx/BiT-Align``, which agree) write it:

1. each map binarised at its own spatial mean, strictly
   (:func:`binarize_at_mean`);
2. a score per head, from a guidance the caller has (BiT-Align: the cosine
   similarity of the class's text embedding with the head's mask-weighted
   mean feature, :func:`masked_similarity`; or the IoU of the head's mask
   with a guidance mask, :func:`mask_iou`), the best head chosen
   (:func:`select_heads`); LOCATE instead fixes the heads (``[0, 1, 3]``);
3. the fusion (:func:`fuse_masks`): LOCATE ``minmax(mean of the chosen
   heads' masks)``; BiT-Align ``minmax(0.5 * pool mask + 0.5 * mean of the
   chosen heads' masks)``, the pool mask being the attention pool's map
   (averaged over its heads) binarised; ``minmax`` is LOCATE's
   ``normalize_minmax`` (``models/model_util.py``, :func:`normalize_minmax`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._cli import InputError

# LOCATE's normalize_minmax eps: a constant map becomes zeros.
MINMAX_EPS = 1e-15


def _maps(maps, name: str, dims: int | None = None) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or not maps.is_floating_point():
        raise InputError(name, f"expected a floating tensor, got {getattr(maps, 'dtype', type(maps).__name__)}")
    if maps.dim() < 2 or (dims is not None and maps.dim() != dims):
        want = f"{dims}-D" if dims is not None else "[..., h, w]"
        raise InputError(name, f"expected {want} maps, got shape {tuple(maps.shape)}")
    if maps.shape[-1] * maps.shape[-2] == 0:
        raise InputError(name, f"empty maps: shape {tuple(maps.shape)}")
    return maps


def binarize_at_mean(maps: torch.Tensor) -> torch.Tensor:
    """``maps [..., h, w]`` -> ``1`` where a map exceeds its own spatial mean,
    ``0`` elsewhere (ties at the mean stay ``0``; a constant map is all
    ``0``), in the maps' dtype: ``map > map.flatten(-2).mean(-1)`` of the
    seed, LOCATE and BiT-Align (they return ``float32``)."""
    maps = _maps(maps, "maps")
    mean = maps.flatten(-2).mean(-1)[..., None, None]
    return (maps > mean).to(maps.dtype)


def normalize_minmax(maps: torch.Tensor, eps: float = MINMAX_EPS) -> torch.Tensor:
    """LOCATE's ``normalize_minmax`` per map of ``[B, h, w]``:
    ``(x - min) / (max(x - min) + eps)``; a constant map becomes zeros."""
    maps = _maps(maps, "maps", dims=3)
    shifted = maps - maps.flatten(1).amin(1)[:, None, None]
    return shifted / (shifted.flatten(1).amax(1)[:, None, None] + eps)


def _binary(masks, name: str, dims: int) -> torch.Tensor:
    masks = _maps(masks, name, dims)
    if not ((masks == 0) | (masks == 1)).all():
        raise InputError(name, "expected binary masks (0 or 1), as binarize_at_mean gives")
    return masks


def mask_iou(masks: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """``[B, heads]``: IoU of each head's mask ``masks [B, heads, h, w]``
    with the guidance mask ``guide [B, h, w]`` (binary both); ``1`` when
    both are empty, as the training loop's ``cam_iou``."""
    masks, guide = _binary(masks, "masks", 4), _binary(guide, "guide", 3)
    if guide.shape != masks.shape[:1] + masks.shape[2:]:
        raise InputError("guide", f"expected shape {(masks.shape[0], *masks.shape[2:])}, got {tuple(guide.shape)}")
    g = guide[:, None].to(masks.dtype)
    inter = (masks * g).flatten(2).sum(-1)
    union = (masks + g - masks * g).flatten(2).sum(-1)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def masked_similarity(masks: torch.Tensor, features: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``[B, heads]``: BiT-Align's head score, the cosine similarity of
    ``query [B, C]`` (there the class's CLIP text embedding) with the mean
    over all positions of ``features [B, C, h, w]`` weighted by the head's
    mask ``masks [B, heads, h, w]``."""
    masks, features = _maps(masks, "masks", 4), _maps(features, "features", 4)
    if features.shape[0] != masks.shape[0] or features.shape[2:] != masks.shape[2:]:
        raise InputError(
            "features",
            f"expected [{masks.shape[0]}, C, {masks.shape[2]}, {masks.shape[3]}], got {tuple(features.shape)}",
        )
    if not isinstance(query, torch.Tensor) or query.shape != features.shape[:2]:
        raise InputError("query", f"expected shape {tuple(features.shape[:2])}, got {getattr(query, 'shape', query)}")
    pooled = torch.einsum("bkhw,bchw->bkc", masks, features) / (masks.shape[2] * masks.shape[3])
    return F.cosine_similarity(query[:, None], pooled, dim=-1)


def select_heads(scores: torch.Tensor) -> torch.Tensor:
    """``[B]`` int64: each image's best head by ``scores [B, heads]`` (the
    first of equal best, as ``torch.argmax``); BiT-Align's
    ``argmax(attn_cosine_sim, dim=1)``."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[1] == 0:
        raise InputError("scores", f"expected [B, heads] scores, got {getattr(scores, 'shape', type(scores).__name__)}")
    if not torch.isfinite(scores).all():
        raise InputError("scores", "must be finite")
    return scores.argmax(1)


def _chosen(head_masks: torch.Tensor, heads, batch_coupled: bool) -> torch.Tensor:
    """The mean of the chosen heads' masks, ``[B, h, w]``."""
    B, H = head_masks.shape[:2]
    if isinstance(heads, torch.Tensor) and heads.dim() == 1 and not batch_coupled:
        if heads.shape[0] != B or heads.dtype != torch.int64:
            raise InputError(
                "heads", f"expected [{B}] int64 head indices (select_heads), got {heads.dtype} {tuple(heads.shape)}"
            )
        index = heads
    else:
        index = heads.tolist() if isinstance(heads, torch.Tensor) else list(heads)
        if not index or any(not isinstance(i, int) or isinstance(i, bool) for i in index):
            raise InputError("heads", f"expected head indices, got {heads!r}")
    bad = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index) if not 0 <= int(i) < H]
    if bad:
        raise InputError("heads", f"{bad[0]} is not one of the {H} heads")
    if isinstance(index, torch.Tensor):
        return head_masks[torch.arange(B, device=head_masks.device), index.to(head_masks.device)]
    # One list for the whole batch: LOCATE's fixed heads, or BiT-Align's
    # per-image choices taken literally (batch_coupled).
    return head_masks[:, index].mean(1)


def fuse_masks(
    head_masks: torch.Tensor,
    heads: torch.Tensor | Sequence[int],
    pool_mask: torch.Tensor | None = None,
    pool_weight: float = 0.5,
    batch_coupled: bool = False,
) -> torch.Tensor:
    """The fused mask ``[B, h, w]`` in ``[0, 1]`` from the binary head masks
    ``head_masks [B, heads, h, w]``.

    ``heads``: one head per image (``[B]`` int64, :func:`select_heads`), or
    a list of heads for every image (LOCATE's ``[0, 1, 3]``), whose masks
    are averaged. Without ``pool_mask``: LOCATE's ``ego_sam =
    normalize_minmax(mean of the chosen heads' masks)``. With ``pool_mask
    [B, h, w]`` (the attention pool's binarised map): BiT-Align's ``ego_sam =
    normalize_minmax(pool_weight * pool_mask + (1 - pool_weight) * chosen)``,
    ``pool_weight`` 0.5 there.

    ``batch_coupled``: BiT-Align indexes ``ego_cls_attn[:, head_idxs]`` with
    the ``[B]`` choices, so every image averages the heads chosen for all
    images of its batch; ``True`` reproduces that, the default gives each
    image its own head (the two agree for one image). Its per-head
    ``normalize_minmax`` of the masks before the fusion is left out: on a
    binary mask it changes nothing beyond ``eps`` (``1 / (1 + 1e-15)``)."""
    head_masks = _binary(head_masks, "head_masks", 4)
    if not 0 <= pool_weight <= 1:
        raise InputError("pool_weight", f"must be in [0, 1], got {pool_weight}")
    chosen = _chosen(head_masks, heads, batch_coupled)
    if pool_mask is None:
        return normalize_minmax(chosen)
    pool_mask = _binary(pool_mask, "pool_mask", 3)
    if pool_mask.shape != chosen.shape:
        raise InputError("pool_mask", f"expected shape {tuple(chosen.shape)}, got {tuple(pool_mask.shape)}")
    return normalize_minmax(pool_weight * pool_mask.to(chosen.dtype) + (1 - pool_weight) * chosen)
