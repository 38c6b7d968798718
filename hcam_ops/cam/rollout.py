"""Attention maps of timm ViT-style models (ViT, EVA / EVA-CLIP, and the
models wrapping them) read with timm's ``AttentionExtract``, as the report's
section 5.8, and attention rollout (Abnar & Zuidema, 2020) over them.

timm runs attention fused (``scaled_dot_product_attention``: the weights are
never materialised), so the extraction switches every attention module to
its explicit path for the pass and back afterwards."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

HEAD_FUSIONS = ("mean", "max", "min", "mean_std")


@contextlib.contextmanager
def unfused_attention(model: nn.Module):
    modules = [m for m in model.modules() if getattr(m, "fused_attn", None) is True]
    for m in modules:
        m.fused_attn = False
    try:
        yield
    finally:
        for m in modules:
            m.fused_attn = True


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """``{layer name: [B, heads, N, N]}`` softmaxed attention of every block,
    in order (timm's AttentionExtract on the ``attn_drop`` modules, which
    receive the weights; ``names``: other fnmatch patterns)."""
    from timm.utils import AttentionExtract

    was_training = model.training
    try:
        with unfused_attention(model):
            extractor = AttentionExtract(model, names=names or ["*attn.attn_drop"], method="hook")
            try:
                maps = extractor(images)
            finally:
                # AttentionExtract leaves its hooks on the model; later passes
                # (training included) would keep storing every attention map.
                for handle in extractor.hooks._handles:
                    handle.remove()
    except RuntimeError as e:
        if "No module names found" in str(e):
            raise ValueError(f"attention_maps: no attention modules in this {type(model).__name__}") from None
        raise
    finally:
        model.train(was_training)
    return dict(maps)


def fuse_heads(attn: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """``[B, heads, N, N] -> [B, N, N]`` as the report's ``head_fusion``."""
    if head_fusion == "mean":
        return attn.mean(1)
    if head_fusion == "max":
        return attn.amax(1)
    if head_fusion == "min":
        return attn.amin(1)
    if head_fusion == "mean_std":
        return attn.mean(1) / attn.std(1).clamp_min(1e-12)
    raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {head_fusion!r}")


def token_grid(model: nn.Module, num_patches: int) -> tuple[int, int]:
    """The patch grid ``(h, w)``: the model's (or its tower's) patch embed,
    else a square."""
    for m in model.modules():
        grid = getattr(getattr(m, "patch_embed", None), "grid_size", None)
        if grid is not None and grid[0] * grid[1] == num_patches:
            return int(grid[0]), int(grid[1])
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"cannot lay {num_patches} patch tokens on a grid")
    return side, side


def prefix_tokens(model: nn.Module, num_prefix_tokens: int | None) -> int:
    return getattr(model, "num_prefix_tokens", 1) if num_prefix_tokens is None else num_prefix_tokens


def _normalise(rel: torch.Tensor) -> torch.Tensor:
    lo = rel.flatten(1).amin(1).view(-1, *([1] * (rel.dim() - 1)))
    hi = rel.flatten(1).amax(1).view(-1, *([1] * (rel.dim() - 1)))
    return (rel - lo) / (hi - lo).clamp_min(1e-12)


def rollout(
    attentions: list[torch.Tensor], discard_ratio: float = 0.9, head_fusion: str = "mean", num_prefix_tokens: int = 1
) -> torch.Tensor:
    """``[B, N - prefix]`` relevance of the patch tokens to the first token
    through all layers: heads fused, the lowest ``discard_ratio`` of each
    fused matrix zeroed (the first token's attention to the prefix tokens
    kept), ``(A + I) / 2``, rows renormalised, multiplied layer by layer."""
    B, N = attentions[0].shape[0], attentions[0].shape[-1]
    eye = torch.eye(N, device=attentions[0].device, dtype=torch.float32)
    result = eye.expand(B, N, N)
    k = int(N * N * discard_ratio)
    for attn in attentions:
        a = fuse_heads(attn.float(), head_fusion)
        if k > 0:
            flat = a.reshape(B, N * N)
            drop = torch.zeros_like(flat, dtype=torch.bool).scatter(1, flat.topk(k, dim=1, largest=False).indices, True)
            drop[:, :num_prefix_tokens] = False
            a = flat.masked_fill(drop, 0.0).reshape(B, N, N)
        a = (a + eye) / 2
        # Rows renormalised (keepdim): the report's vit-explain code divides
        # by the row sums broadcast over the columns instead.
        a = a / a.sum(-1, keepdim=True)
        result = a @ result
    return result[:, 0, num_prefix_tokens:]


def attention_rollout(
    model: nn.Module,
    images: torch.Tensor,
    discard_ratio: float = 0.9,
    num_prefix_tokens: int | None = None,
    head_fusion: str = "mean",
) -> torch.Tensor:
    """``[B, h, w]`` rollout relevance of the patches to the class token, in
    [0, 1]; the report's defaults (mean over heads, discard 0.9)."""
    maps = list(attention_maps(model, images).values())
    prefix = prefix_tokens(model, num_prefix_tokens)
    rel = rollout(maps, discard_ratio, head_fusion, prefix)
    h, w = token_grid(model, rel.shape[-1])
    return _normalise(rel.reshape(-1, h, w))


def class_token_maps(
    attentions: list[torch.Tensor], grid: tuple[int, int], num_prefix_tokens: int = 1, head_fusion: str | None = "mean"
) -> torch.Tensor:
    """Per layer of ``attentions`` (``[B, heads, N, N]`` each), the class
    token's attention to the patches laid on ``grid``, each map in [0, 1]:
    ``[B, L, h, w]`` with the heads fused as ``head_fusion``, or
    ``[B, L, heads, h, w]`` with the heads kept apart (``head_fusion=None``)."""
    h, w = grid
    out = []
    for attn in attentions:
        a = attn.float() if head_fusion is None else fuse_heads(attn.float(), head_fusion).unsqueeze(1)
        row = a[:, :, 0, num_prefix_tokens:]  # [B, heads or 1, patches]
        out.append(_normalise(row.reshape(-1, h, w)).reshape(row.shape[0], row.shape[1], h, w))
    stacked = torch.stack(out, dim=1)
    return stacked[:, :, 0] if head_fusion is not None else stacked


def layer_maps(
    model: nn.Module,
    images: torch.Tensor,
    head_fusion: str | None = "mean",
    num_prefix_tokens: int | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Per layer, the class token's attention to the patches, each map in
    [0, 1]: ``([B, L, h, w], layer names)`` with the heads fused as
    ``head_fusion``, or ``([B, L, heads, h, w], names)`` with the heads kept
    apart (``head_fusion=None``); :func:`class_token_maps` of the model's
    attention."""
    maps = attention_maps(model, images)
    attns = list(maps.values())
    prefix = prefix_tokens(model, num_prefix_tokens)
    grid = token_grid(model, attns[0].shape[-1] - prefix)
    return class_token_maps(attns, grid, prefix, head_fusion), list(maps)
