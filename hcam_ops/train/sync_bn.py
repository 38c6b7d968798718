"""Batch statistics over every process's batch, so that BatchNorm under data
parallelism normalises exactly as one process would on the global batch.

On CUDA this is torch's ``SyncBatchNorm``. Torch's refuses CPU tensors, so for
gloo runs :class:`GlooSyncBatchNorm` does the same with a differentiable
``all_reduce`` of the per-channel sums.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch.

    The per-channel count, sum and sum of squares are all-reduced in float64
    (exact enough that the biased variance matches one process's two-pass
    variance to float32 rounding); the all-reduce is autograd-aware, so the
    gradient also flows through the other ranks' statistics, as in torch's
    ``SyncBatchNorm``. Running statistics are updated as ``nn.BatchNorm``
    does (unbiased variance, ``momentum``).
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlooSyncBatchNorm: expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        x64 = x.double()
        count = x64.new_full((1,), x.numel() / x.shape[1])
        stats = torch.cat([count, x64.sum(dims), (x64 * x64).sum(dims)])
        stats = dist_fn.all_reduce(stats)
        C = x.shape[1]
        n, total, total_sq = stats[0], stats[1 : C + 1], stats[C + 1 :]
        mean = total / n
        var = (total_sq / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        shape = [1, C] + [1] * (x.dim() - 2)
        y = (x64 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert(model: nn.Module, device: torch.device) -> tuple[nn.Module, int]:
    """Every BatchNorm of ``model`` made synchronous for ``device``'s backend;
    returns the model and how many layers were converted."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model, 0
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model), len(bns)
    return _convert_cpu(model), len(bns)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        out = GlooSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        # A frozen BatchNorm stays frozen: DDP would otherwise wait for its gradients.
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


__all__ = ["GlooSyncBatchNorm", "convert"]
