"""The report's EVA-CLIP attention pictures (section 5.8): for one image, the
class token's attention in every layer (heads fused, or each head apart)
and the rollout over all layers, each frame labelled, assembled into a GIF
(one second a frame, as the report's)::

    python -m hcam_ops.cam.attention_gif --checkpoint run/best.pth --image leaf.jpg --out dir/

Any timm ViT-style model works (EVA, EVA-CLIP, ViT, and the models wrapping
them, such as ``eva_clip_stn_bce``). Maps are drawn on the input image; with
an STN in front they are in the warped image's frame, as the report's.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .overlay import save_overlays
from .rollout import HEAD_FUSIONS, _normalise, attention_maps, class_token_maps, prefix_tokens, rollout, token_grid


def attention_frames(
    model: nn.Module,
    x: torch.Tensor,
    head_fusion: str = "mean",
    discard_ratio: float = 0.9,
    heads: bool = False,
) -> tuple[torch.Tensor, list[str]]:
    """For one input ``x [1, 3, H, W]``: ``(maps [F, h, w] in [0, 1], names)``,
    a frame per layer (``layer_01`` ...; with ``heads`` also
    ``layer_01_head_1`` ... after each layer's fused frame) and ``rollout``
    last."""
    if x.shape[0] != 1:
        raise ValueError(f"attention_frames: one image at a time, got a batch of {x.shape[0]}")
    attns = list(attention_maps(model, x).values())
    prefix = prefix_tokens(model, None)
    grid = token_grid(model, attns[0].shape[-1] - prefix)
    fused = class_token_maps(attns, grid, prefix, head_fusion)[0]  # [L, h, w]
    per_head = class_token_maps(attns, grid, prefix, None)[0] if heads else None  # [L, heads, h, w]
    frames, names = [], []
    for i, layer in enumerate(fused, start=1):
        frames.append(layer)
        names.append(f"layer_{i:02d}")
        if heads:
            frames.extend(per_head[i - 1])
            names.extend(f"layer_{i:02d}_head_{j + 1}" for j in range(per_head.shape[1]))
    rel = rollout(attns, discard_ratio, head_fusion, prefix)
    frames.append(_normalise(rel.reshape(1, *grid))[0])
    names.append("rollout")
    return torch.stack(frames), names


def save_attention_gif(
    model: nn.Module,
    image: torch.Tensor,
    out_dir: str,
    x: torch.Tensor | None = None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.9,
    heads: bool = False,
    prefix: str = "attention",
    duration: int = 1000,
) -> list[str]:
    """Labelled PNGs and ``{prefix}.gif`` for ``image [3, H, W]`` in [0, 1];
    ``x`` is the model's input (default: ``image`` with the ImageNet
    normalisation the multi-label models train with)."""
    if x is None:
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
        x = ((image - mean) / std).unsqueeze(0)
    maps, names = attention_frames(model, x, head_fusion, discard_ratio, heads)
    maps = F.interpolate(maps[:, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return save_overlays(image, maps.clamp(0, 1), names, out_dir, prefix=prefix, duration=duration)


def main(argv=None) -> list[str]:
    from .._cli import CLIError, CLIParser, check_out_dir, image_side
    from .__main__ import load_model, read_image

    ap = CLIParser(prog="python -m hcam_ops.cam.attention_gif", description=__doc__)
    ap.add_argument("--checkpoint", help="a checkpoint of hcam_ops.train, or a bare state dict (with --model)")
    ap.add_argument("--model", help="the timm name, for a bare state dict or no checkpoint (random weights)")
    ap.add_argument("--image", action="append", required=True, help="repeat for several images (a GIF each)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--img-size", type=image_side, help="default: the checkpoint's, else 224")
    ap.add_argument("--classes", help="comma-separated class names (default: the checkpoint's)")
    ap.add_argument("--head-fusion", default="mean", choices=HEAD_FUSIONS)
    ap.add_argument("--discard-ratio", type=float, default=0.9, help="rollout: share of the weakest weights dropped")
    ap.add_argument("--heads", action="store_true", help="a frame per head too")
    args = ap.parse_args(argv)
    check_out_dir(args.out)
    if not 0 <= args.discard_ratio < 1:
        raise CLIError(f"--discard-ratio {args.discard_ratio}: must be in [0, 1)")
    model, task, _, _, size = load_model(args)
    if task != "multilabel":
        raise CLIError(f"--checkpoint {args.checkpoint}: attention GIFs are for ViT-style multi-label models")
    model.eval()
    paths = []
    for path in args.image:
        image = read_image(path, size)
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            paths += save_attention_gif(
                model, image, args.out, None, args.head_fusion, args.discard_ratio, args.heads, prefix=stem
            )
        except ValueError as e:
            raise CLIError(f"--model {args.model or args.checkpoint}: {e}") from None
    print(f"wrote {len(paths)} files to {args.out}")
    return paths


if __name__ == "__main__":
    main()
