"""The attention of a model's CLIP-style attention pool over the map's
positions, per head: the seed 002's ``image_features_attn`` (BiT-Align's
locate model, ``models/locate.py``: the ``AttentionPool2d`` on the DINO
patch features).

Two kinds of pool are read: ours (:class:`hcam_ops.nn.AttentionPool2d`,
which returns its weights) and timm's ``timm.layers.AttentionPool2d`` (the
head of timm's ``resnet*_clip`` models), whose weights are never handed to a
module, so they are recomputed here from its parameters and the map it
received: the same ``qkv`` split, resampled ``pos_embed``, scale and softmax
as its ``forward`` (timm 1.0's ``attention_pool2d.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._cli import InputError
from ..nn.attention_pool import AttentionPool2d


def _timm_pool_class():
    try:
        from timm.layers import AttentionPool2d as TimmAttentionPool2d
    except ImportError:  # timm is an extra; without it only our pool exists
        return None
    return TimmAttentionPool2d


def attention_pools(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every attention pool of ``model``, in module order."""
    kinds = tuple(k for k in (AttentionPool2d, _timm_pool_class()) if k is not None)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]


def timm_pool_weights(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, heads, 1 + H W]``: the first (pooled) token's softmaxed attention
    in timm's ``AttentionPool2d`` for its input ``x [B, C, H, W]``, column 0
    being the pooled token itself."""
    from timm.layers import resample_abs_pos_embed

    B, _, H, W = x.shape
    tokens = x.flatten(2).transpose(1, 2)
    first = tokens.mean(1, keepdim=True) if pool.cls_token is None else pool.cls_token.expand(B, -1, -1)
    tokens = torch.cat([first, tokens], dim=1)
    pos = resample_abs_pos_embed(pool.pos_embed.unsqueeze(0), (H, W), old_size=pool.feat_size, num_prefix_tokens=1)
    tokens = tokens + pos
    E, heads = pool.embed_dim, pool.num_heads
    if pool.qkv is None:
        q, k = pool.q(tokens[:, :1]), pool.k(tokens)
    else:
        # timm lays qkv's output out as (q | k | v), each heads x head_dim.
        q = F.linear(tokens[:, :1], pool.qkv.weight[:E], None if pool.qkv.bias is None else pool.qkv.bias[:E])
        k = F.linear(tokens, pool.qkv.weight[E : 2 * E], None if pool.qkv.bias is None else pool.qkv.bias[E : 2 * E])
    q = q.view(B, 1, heads, -1).transpose(1, 2)
    k = k.view(B, -1, heads, q.shape[-1]).transpose(1, 2)
    return F.softmax((q * pool.scale) @ k.transpose(-2, -1), dim=-1)[:, :, 0]


def _pool_map(pool: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(pool, AttentionPool2d):
        return pool(x, return_attention=True)[1]
    weights = timm_pool_weights(pool, x)
    return weights[:, :, 1:].reshape(x.shape[0], -1, *x.shape[-2:])


@torch.no_grad()
def pool_attention(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``[B, heads, H, W]``: the pooled token's attention to each position of
    the map the model's (last) attention pool receives when ``model`` runs
    on ``images``, each head apart; the pooled token's weight on itself is
    left out, as BiT-Align's ``[:, 0, 1:]``. The raw softmax weights.

    BiT-Align's ``image_features_attn`` is these maps averaged over the heads
    (``F.multi_head_attention_forward`` averages its weights unless told
    not to); the seed's "head 0" is that average's row 0, the pooled token."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise InputError("images", f"expected a batch [B, 3, H, W], got {getattr(images, 'shape', type(images))}")
    pools = attention_pools(model)
    if not pools:
        raise InputError("model", f"no AttentionPool2d (ours or timm's) in this {type(model).__name__}")
    name, pool = pools[-1]
    seen = []
    handle = pool.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    was_training = model.training
    try:
        model.eval()
        model(images)
    finally:
        handle.remove()
        model.train(was_training)
    if not seen:
        raise InputError("model", f"its forward never ran its attention pool {name!r}")
    return _pool_map(pool.eval(), seen[-1])
