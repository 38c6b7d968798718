"""Attention rollout (Abnar & Zuidema, 2020) for timm ViT-style models: the
product over blocks of (A + I) / 2, heads averaged, read from the class
token's row."""

from __future__ import annotations

import torch
from torch import nn


def attention_rollout(
    model: nn.Module, images: torch.Tensor, discard_ratio: float = 0.0, num_prefix_tokens: int | None = None
) -> torch.Tensor:
    """``[B, h, w]`` relevance of the patches to the class token, in [0, 1].

    timm's attention runs fused (the weights are never materialised), so the
    weights are recomputed from each block's ``qkv`` output, caught by a hook.
    ``discard_ratio`` zeroes that fraction of the lowest weights per row."""
    blocks = [m for m in model.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")]
    if not blocks:
        raise ValueError("attention_rollout: no attention modules with a qkv projection in this model")
    attns = []

    def hook(module, _inp, out):
        B, N, _ = out.shape
        q, k, _ = out.reshape(B, N, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
        if hasattr(module, "q_norm"):
            q, k = module.q_norm(q), module.k_norm(k)
        attns.append(torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1).mean(1))

    handles = [b.qkv.register_forward_hook(lambda m, i, o, b=b: hook(b, i, o)) for b in blocks]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    N = attns[0].shape[-1]
    eye = torch.eye(N, device=images.device)
    rollout = eye.expand(images.shape[0], N, N)
    for a in attns:
        if discard_ratio > 0:
            k = int(N * discard_ratio)
            low = a.topk(k, dim=-1, largest=False).indices
            a = a.scatter(-1, low, 0.0)
        a = (a + eye) / 2
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    prefix = getattr(model, "num_prefix_tokens", 1) if num_prefix_tokens is None else num_prefix_tokens
    rel = rollout[:, 0, prefix:]
    side = int(round(rel.shape[-1] ** 0.5))
    rel = rel.reshape(-1, side, rel.shape[-1] // side)
    lo, hi = rel.flatten(1).aminmax(dim=1)
    return (rel - lo.view(-1, 1, 1)) / (hi - lo).clamp_min(1e-12).view(-1, 1, 1)
