"""python -m hcam_ops.cam --checkpoint run/best.pth --image leaf.jpg --out dir/

Reads a checkpoint of ``python -m hcam_ops.train`` (either task) and rebuilds
the model from the file alone: its name, config and class names are in it.
Multi-label models: one Grad-CAM overlay per class (PNG), a GIF across them,
and the predicted probabilities (``scores.txt``). Hierarchical (H-CAST)
models: one CAM per level for the predicted class (on ``centroid1``, mapped
back through the superpixels), a GIF, and the predictions per level.
A bare state dict needs ``--model`` (and ``--classes``)."""

from __future__ import annotations

import argparse
import os

import torch
from PIL import Image, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms

from .. import checkpoint, models
from .._cli import CLIError, CLIParser, check_file
from ..data.plant_pathology import LEAF_CLASSES
from .methods import cam_methods
from .overlay import save_overlays

MEAN, STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def parse_args(argv=None):
    ap = CLIParser(
        prog="python -m hcam_ops.cam", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", help="a checkpoint of hcam_ops.train, or a bare state dict (with --model)")
    ap.add_argument("--model", help="the timm name, for a bare state dict or no checkpoint (random weights)")
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--img-size", type=int, help="default: the checkpoint's, else 224")
    ap.add_argument("--classes", help="comma-separated class names (default: the checkpoint's)")
    ap.add_argument(
        "--method", default="gradcam", choices=cam_methods(), help="multi-label models: a pytorch-grad-cam method"
    )
    ap.add_argument(
        "--target",
        default="report",
        choices=["report", "neck"],
        help="multi-label models: the report's layer (default) or the ArcFace model's PSA feature map",
    )
    return ap.parse_args(argv)


def load_model(args):
    """``(model, task, class names per level, superpixel settings, image size)``."""
    import timm

    ckpt = checkpoint.load(args.checkpoint, "--checkpoint") if args.checkpoint else None
    if ckpt is not None and checkpoint.is_model_checkpoint(ckpt):
        overrides = {"img_size": args.img_size} if args.img_size else {}
        model = models.build_model(ckpt, args.checkpoint, **overrides)
        state, size = ckpt["task_state"], args.img_size or ckpt["model_config"].get("img_size", 224)
        if ckpt["task"] == "hierarchical":
            return model, "hierarchical", state["hierarchy"]["names"], state["superpixels"], size
        names = args.classes.split(",") if args.classes else state["classes"]
        return model, "multilabel", [names], None, size
    if not args.model:
        raise CLIError("--model is required with a bare state dict or without --checkpoint")
    names = args.classes.split(",") if args.classes else list(LEAF_CLASSES)
    if args.model.startswith(("hcast", "cast")):
        raise CLIError(f"--model {args.model}: hierarchical models need a checkpoint of hcam_ops.train")
    try:
        model = timm.create_model(args.model, num_classes=len(names), img_size=args.img_size or 224)
    except RuntimeError as e:  # timm: unknown model
        raise CLIError(f"--model {args.model}: {e}") from None
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt.get("model", ckpt))
        except RuntimeError as e:
            raise CLIError(
                f"--checkpoint {args.checkpoint}: does not fit --model {args.model} ({str(e).splitlines()[0]})"
            ) from None
    return model, "multilabel", [names], None, args.img_size or 224


def read_image(path: str, size: int) -> torch.Tensor:
    check_file(path, "--image")
    try:
        image = Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise CLIError(f"--image {path}: not a readable image ({e})") from None
    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])(image)


def main(argv=None):
    args = parse_args(argv)
    model, task, names, superpixels, size = load_model(args)
    model.eval()
    image = read_image(args.image, size)
    x = transforms.Normalize(MEAN, STD)(image).unsqueeze(0)
    if task == "hierarchical":
        from ..superpixels import Superpixels
        from .hierarchy_cam import hierarchy_cams

        segments = Superpixels(superpixels["num_segments"], superpixels["method"], superpixels["max_segments"])(image)
        cams, classes, probs = hierarchy_cams(model, x, segments[None])
        labels = [f"L{l}_{names[l][int(k)]}" for l, k in enumerate(classes[0])]
        paths = save_overlays(image, cams[0], labels, args.out)
        lines = [f"level {l}\t{names[l][int(k)]}\t{float(probs[l][0, k]):.4f}" for l, k in enumerate(classes[0])]
    else:
        from .classifier import class_cams

        cams = class_cams(model, x, method=args.method, target_layer=args.target)[0]
        probs = model.predict(x)[0].tolist()
        paths = save_overlays(image, cams, names[0], args.out, scores=probs)
        lines = [f"{n}\t{p:.4f}" for n, p in zip(names[0], probs)]
    with open(os.path.join(args.out, "scores.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
