"""Draws docs/images/attention_masks.png: the seed 002's attention masks
(docs/attention_masks.md) of a BiT-Align-shaped model on a synthetic image.

The model is a timm ViT-Tiny (random weights, seed 0) with our
AttentionPool2d on its patch tokens, as BiT-Align's locate model puts one on
DINO's patch features. Untrained, its heads still split the image by content
(the patch embedding sees the shapes), which is what the masks show; the
picture illustrates the rule, not a trained model. CPU, a few seconds::

    python scripts/attention_masks_figure.py [--out docs/images/attention_masks.png]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from hcam_ops.cam import attention_masks  # noqa: E402
from hcam_ops.nn import AttentionPool2d  # noqa: E402

SIZE, PATCH = 128, 16
GRID = SIZE // PATCH


class ViTWithPool(nn.Module):
    """A ViT and a CLIP-style attention pool on its patch tokens."""

    def __init__(self):
        super().__init__()
        self.vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=SIZE, num_classes=0)
        self.pool = AttentionPool2d(GRID, self.vit.embed_dim, 4)

    def forward(self, x):
        tokens = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens :]
        return self.pool(tokens.transpose(1, 2).reshape(x.shape[0], -1, GRID, GRID))


def synthetic_image(gen: torch.Generator) -> torch.Tensor:
    """``[3, SIZE, SIZE]`` in [0, 1]: a textured dark background, a bright
    square and a red disc."""
    img = 0.15 + 0.1 * torch.rand(3, SIZE, SIZE, generator=gen)
    img[:, 24:72, 56:112] = torch.tensor([0.95, 0.9, 0.6]).view(3, 1, 1)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    disc = (yy - 92) ** 2 + (xx - 36) ** 2 < 18**2
    img[:, disc] = torch.tensor([0.85, 0.2, 0.15]).view(3, 1)
    return img


def upsample(m: torch.Tensor, nearest: bool) -> torch.Tensor:
    mode = "nearest" if nearest else "bilinear"
    return torch.nn.functional.interpolate(m[None, None].float(), (SIZE, SIZE), mode=mode)[0, 0]


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/images/attention_masks.png")
    args = ap.parse_args(argv)
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    torch.manual_seed(0)
    model = ViTWithPool().eval()
    image = synthetic_image(torch.Generator().manual_seed(0))
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    out = attention_masks(model, ((image - mean) / std)[None])
    heads = out.cls_maps.shape[1]
    chosen = int(out.heads[0])

    fig, axes = plt.subplots(2, heads + 2, figsize=(2.3 * (heads + 2), 5.4))
    rgb = image.permute(1, 2, 0).numpy()

    def show(ax, m, title, nearest, cmap="jet"):
        ax.imshow(rgb)
        ax.imshow(upsample(m, nearest).numpy(), cmap=cmap, alpha=0.55, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)

    axes[0, 0].imshow(rgb)
    axes[0, 0].set_title("synthetic image", fontsize=9)
    for k in range(heads):
        m = out.cls_maps[0, k]
        show(axes[0, k + 1], (m - m.min()) / (m.max() - m.min()), f"CLS attention, head {k}", False)
        mark = "  (chosen)" if k == chosen else ""
        show(axes[1, k + 1], out.cls_masks[0, k], f"mask {k}: IoU {float(out.scores[0, k]):.2f}{mark}", True)
    pool = out.pool_maps[0].mean(0)
    show(axes[0, -1], (pool - pool.min()) / (pool.max() - pool.min()), "attention pool (head mean)", False)
    show(axes[1, -1], out.pool_mask[0], "pool mask", True)
    show(axes[1, 0], out.fused[0], "fused (0, 0.5, 1)", True)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        "Each map binarised at its own mean; the head whose mask best overlaps the pool mask is fused with it:\n"
        "minmax(0.5 pool mask + 0.5 head mask), as BiT-Align's locate model",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
