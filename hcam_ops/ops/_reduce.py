"""The reductions of the per-row losses (softmax_kl, cam_kl_loss)."""

import torch

from ._checks import check_choice


def reduce_rows(per_row: torch.Tensor, reduction: str, op: str) -> torch.Tensor:
    """'none': per row; 'sum'; 'batchmean': the sum over the batch size (the
    first dim, as F.kl_div), 0 for an empty batch."""
    check_choice(reduction, ("batchmean", "sum", "none"), op, "reduction")
    if reduction == "none":
        return per_row
    total = per_row.sum()
    if reduction == "sum" or per_row.dim() == 0:
        return total
    return total / max(per_row.shape[0], 1)
