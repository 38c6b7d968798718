"""``python -m hcam_ops.train.distill.dump CKPT --out DIR [--batch N]``: what the
distillation sees on one batch.

For the first N images of the run's data (the split of ``--split``; the data
is the one the checkpoint was trained on, or ``--data``), one PNG per FPN
level (``level0_P3.png`` ... ``level4_P7.png``): a row per image with the
image and its boxes, then the level's ``fg``, ``bg`` and ``fp`` weights
(``fp`` is zero without DistillBEV's false-positive term), and the teacher's
and the student's spatial attention. CKPT is a distillation run's checkpoint.
"""

from __future__ import annotations

import os

import torch


def parse_args(argv=None):
    from ..._cli import CLIParser

    ap = CLIParser(prog="python -m hcam_ops.train.distill.dump", description=__doc__)
    ap.add_argument("checkpoint", metavar="CKPT", help="a distillation run's checkpoint (best.pth, last.pth)")
    ap.add_argument("--out", required=True, help="folder for the PNGs")
    ap.add_argument("--batch", type=int, default=4, help="images in the batch")
    ap.add_argument("--split", choices=("train", "val"), default="val")
    ap.add_argument("--data", help="synthetic or a COCO folder (default: the run's)")
    ap.add_argument("--epoch", type=int, help="the epoch FGDLoss.set_epoch gets (default: the checkpoint's)")
    return ap.parse_args(argv)


def level_maps(distiller, images: list[torch.Tensor], targets: list[dict]):
    """``(batched input [B, 3, H, W], boxes as the detector saw them, per level
    dict of [B, h, w] maps)``."""
    student = distiller.student
    distiller.eval()
    with torch.no_grad():
        image_list, seen = student.transform(images, targets)
        x = image_list.tensors
        students = list(student.backbone(x).values())
        teachers = distiller.teacher_features(x)
        kwargs = distiller.fgd_kwargs(x, seen, teachers, image_list.image_sizes)
        maps = distiller.distill_loss.maps(students, teachers, **kwargs)
    return x, [t["boxes"] for t in seen], maps


def write_pngs(out_dir: str, images: list[torch.Tensor], boxes, maps) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for level, per in enumerate(maps):
        keys = list(per)
        B = len(images)
        fig, axes = plt.subplots(B, 1 + len(keys), figsize=(2.2 * (1 + len(keys)), 2.2 * B), squeeze=False)
        for b in range(B):
            ax = axes[b, 0]
            ax.imshow(images[b].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            for x1, y1, x2, y2 in boxes[b].tolist():
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="white", linewidth=1))
            for j, key in enumerate(keys, start=1):
                m = per[key][b].float().cpu().numpy()
                axes[b, j].imshow(m, cmap="magma", interpolation="nearest")
                if b == 0:
                    axes[b, j].set_title(f"{key}\nmax {m.max():.3g}", fontsize=7)
            if b == 0:
                axes[b, 0].set_title("image", fontsize=7)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        H, W = next(iter(per.values())).shape[-2:]
        fig.suptitle(f"level {level} (P{level + 3}, {H}x{W})", fontsize=9)
        fig.tight_layout()
        path = os.path.join(out_dir, f"level{level}_P{level + 3}.png")
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv=None) -> list[str]:
    args = parse_args(argv)  # before the imports below: --help answers at once
    from ... import checkpoint
    from ..._cli import CLIError
    from ...models import build_model
    from ...models.detection import DISTILLER_NAME
    from . import data as D

    if args.batch < 1:
        raise CLIError(f"--batch {args.batch}: must be >= 1")
    ckpt = checkpoint.load(args.checkpoint, "CKPT")
    if not checkpoint.is_model_checkpoint(ckpt) or ckpt.get("model_name") != DISTILLER_NAME:
        raise CLIError(f"CKPT {args.checkpoint}: not a distillation run's checkpoint ({DISTILLER_NAME})")
    spec = ckpt.get("task_state") or {}
    source = args.data or spec.get("data", "synthetic")
    side = spec.get("image_size", [128, 128])
    if source == "synthetic":
        train, val = D.synthetic_splits(
            max(spec.get("synthetic_size", args.batch), args.batch * 4), side[0], spec.get("num_classes", 3),
            spec.get("seed", 0),
        )  # fmt: skip
    else:
        train, val = D.coco_splits(source, spec.get("val_fraction", 0.2))
    dataset = train if args.split == "train" else val
    n = min(args.batch, len(dataset))
    images, targets = zip(*(dataset[i] for i in range(n)))
    distiller = build_model(ckpt, args.checkpoint)
    distiller.set_epoch(ckpt.get("epoch", 0) if args.epoch is None else args.epoch)
    x, boxes, maps = level_maps(distiller, list(images), list(targets))
    # The normalised input back to [0, 1] for the pictures.
    t = distiller.student.transform
    mean, std = torch.tensor(t.image_mean)[:, None, None], torch.tensor(t.image_std)[:, None, None]
    shown = [(x[b] * std + mean) for b in range(n)]
    paths = write_pngs(args.out, shown, boxes, maps)
    print(f"wrote {len(paths)} PNGs ({n} images, {len(maps)} levels) to {args.out}")
    return paths


if __name__ == "__main__":
    main()
