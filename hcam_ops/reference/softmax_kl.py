"""Plain-PyTorch softmax_kl: the contract of hcam_ops.softmax_kl."""

import torch
import torch.nn.functional as F


def reduce_rows(per_row: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return per_row
    if reduction == "sum" or per_row.dim() == 0:
        return per_row.sum()
    return per_row.sum() / max(per_row.shape[0], 1)


def softmax_kl(p_logits, q_logits, temperature=1.0, direction="fine_to_coarse", reduction="batchmean"):
    lp = F.log_softmax(p_logits / temperature, dim=-1)
    lq = F.log_softmax(q_logits / temperature, dim=-1)
    if direction == "fine_to_coarse":
        per_row = (lp.exp() * (lp - lq)).sum(-1)
    else:
        per_row = (lq.exp() * (lq - lp)).sum(-1)
    return reduce_rows(per_row, reduction)
