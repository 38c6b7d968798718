"""What FGDLoss distils, as maps to look at (``hcam_ops.train distill``'s
dump tool draws them)."""

from __future__ import annotations

import torch


def spatial_attention(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """FGD's spatial attention ``A_s`` ``[B, H, W]`` of a map ``[B, C, H, W]``:
    ``H W softmax(mean_C |x| / T)`` over the positions (FGD, Yang et al. 2022,
    eq. 3; the fused op computes it inside its kernels and returns only the
    loss terms)."""
    B, _, H, W = x.shape
    weights = torch.softmax(x.abs().mean(1).reshape(B, -1) / temperature, dim=1)
    return (H * W * weights).reshape(B, H, W)


@torch.no_grad()
def level_maps(loss, student, teacher, **kw) -> list[dict[str, torch.Tensor]]:
    """Per level of ``loss`` (an FGDLoss), ``[B, H, W]`` maps ``fg``, ``bg``,
    ``fp`` (zeros without the FP term), ``teacher_attention`` and
    ``student_attention`` (``A_s`` of the adapted maps), on the adapted grid."""
    students, teachers = loss._pairs(student, teacher)
    temperature = loss.op_kwargs["spatial_temperature"]
    out = []
    for i, (s_in, t_in) in enumerate(zip(students, teachers)):
        s, t = loss.levels[i].adapt(s_in, t_in)
        B, _, H, W = t.shape
        fg, bg, fp = loss._level_masks(i, (H, W), kw)
        out.append(
            {
                "fg": fg.reshape(B, H, W).float(),
                "bg": bg.reshape(B, H, W).float(),
                "fp": torch.zeros(B, H, W, device=t.device) if fp is None else fp.reshape(B, H, W).float(),
                "teacher_attention": spatial_attention(t.float(), temperature),
                "student_attention": spatial_attention(s.float(), temperature),
            }
        )
    return out
