"""python -m hcam_ops.cam.detect --checkpoint ck.pth --image img.jpg --method ablationcam --out dir/

CAMs of a torchvision detector's detections (mmdet's det_cam_visualizer, as
flags): the image is detected (--score-thr, --topk), then the chosen method
explains the kept boxes together, and one PNG per image is written: the CAM
(normalised inside the boxes unless --no-norm-in-bbox) with the boxes, class
names and scores. --per-box adds one PNG per box, its CAM explaining it alone.

The checkpoint is one of hcam_ops.cam.detection.save_checkpoint (model name,
classes and sizes inside), or a bare state dict with --model (and
--num-classes, else read off the classifier). Nothing is downloaded.
Gradient-free methods (eigencam, ablationcam, featmapam) default to the FPN
output (--target-layers neck); gradient methods (gradcam, gradcam++,
xgradcam, eigengradcam) explain the losses against the detections and need a
single-map layer (default: the backbone's last stage)."""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import checkpoint
from .._cli import CLIError, CLIParser, InputError, check_device, check_file, check_out_dir

# The detectors and the CAM methods (torchvision, timm, pytorch-grad-cam) are
# imported where used, so that --help answers at once; a wrong --model or
# --method lists the names there are.

# Library argument -> the flag that sets it.
FLAGS = {
    "image": "--image",
    "method": "--method",
    "target_layers": "--target-layers",
    "score_thr": "--score-thr",
    "checkpoint": "--checkpoint",
    "model": "--model",
    "num_classes": "--num-classes",
    "max_shape": "--max-shape",
    "batch_size": "--batch-size",
    "ratio_channels_to_ablate": "--ratio-channels-to-ablate",
    "match_iou_thr": "--match-iou-thr",
    "aug_smooth": "--aug-smooth",
}


def parse_args(argv=None):
    ap = CLIParser(
        prog="python -m hcam_ops.cam.detect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True, help="a save_checkpoint file, or a bare state dict with --model")
    ap.add_argument(
        "--model", help="detector name (retinanet_resnet50_fpn, fcos_resnet18_fpn, ...); default: the checkpoint's"
    )
    ap.add_argument("--image", nargs="+", required=True, help="one or more image files")
    ap.add_argument("--out", help="output folder (required unless --preview-model)")
    ap.add_argument(
        "--method",
        default="ablationcam",
        help="a detector method of hcam_ops.cam.methods (ablationcam, eigencam, featmapam, gradcam, ...)",
    )
    ap.add_argument("--target-layers", nargs="+", help="neck, backbone or dotted module paths (see --preview-model)")
    ap.add_argument("--score-thr", type=float, default=0.3, help="detections kept above this score")
    ap.add_argument("--topk", type=int, default=10, help="explain at most this many detections (0: all)")
    ap.add_argument(
        "--max-shape",
        type=int,
        nargs="+",
        default=[20, 20],
        help="FPN maps resized to at most H [W]; -1: largest level",
    )
    ap.add_argument("--no-norm-in-bbox", action="store_true", help="do not normalise the CAM inside each box")
    ap.add_argument("--aug-smooth", action="store_true", help="average over flips and brightness changes")
    ap.add_argument("--eigen-smooth", action="store_true", help="first principal component of the weighted maps")
    ap.add_argument("--per-box", action="store_true", help="also one PNG per box, explaining it alone")
    ap.add_argument("--batch-size", type=int, default=16, help="AblationCAM: ablated channels per forward")
    ap.add_argument("--ratio-channels-to-ablate", type=float, default=1.0, help="AblationCAM: share of channels")
    ap.add_argument("--ablation-value", type=float, default=-1000.0, help="AblationCAM: value of an ablated channel")
    ap.add_argument("--match-iou-thr", type=float, default=0.5, help="gradient-free target: IoU of a match")
    ap.add_argument("--num-classes", type=int, help="classes with the background (bare state dicts)")
    ap.add_argument("--classes", help="comma-separated names of labels 1..K (default: the checkpoint's)")
    ap.add_argument("--min-size", type=int, help="the detector's resize (default: the checkpoint's)")
    ap.add_argument("--max-size", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preview-model", action="store_true", help="print the detector's module names and exit")
    args = ap.parse_args(argv)
    if not args.preview_model and not args.out:
        raise CLIError("--out is required")
    if args.topk < 0:
        raise CLIError(f"--topk {args.topk}: must be >= 0")
    check_out_dir(args.out)
    return args


def _cli_error(e: InputError, args, where: str = "") -> CLIError:
    flag = FLAGS.get(e.argument, f"--{e.argument.replace('_', '-')}")
    value = getattr(args, flag[2:].replace("-", "_"), None)
    shown = " ".join(map(str, value)) if isinstance(value, list) else value
    # The value is shown once: some messages already start with it (a path).
    named = shown not in (None, False) and flag != "--image" and not e.message.startswith(str(shown))
    prefix = f"{flag} {shown}" if named else flag
    return CLIError(f"{prefix}: {e.message}{where}")


def load_model(args):
    """The ``DetCAMModel`` of ``--checkpoint``."""
    from ..models.detection import load_checkpoint
    from .detection import DetCAMModel

    check_file(args.checkpoint, "--checkpoint")
    overrides = {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v is not None}
    try:
        detector, classes, _ = load_checkpoint(args.checkpoint, args.model, args.num_classes, **overrides)
        if args.classes:
            classes = [c.strip() for c in args.classes.split(",")]
        return DetCAMModel(detector.to(check_device(args.device)), args.score_thr, classes)
    except InputError as e:
        if e.argument == "model":
            _other_tool(args.checkpoint)
        raise _cli_error(e, args) from None


def _other_tool(path: str) -> None:
    """A checkpoint this tool cannot read is named with the tool that can
    (read again only on this failure)."""
    from ..models.detection import DISTILLER_NAME

    ckpt = checkpoint.read(path, "--checkpoint")
    task = ckpt.get("task")
    if checkpoint.is_model_checkpoint(ckpt) and task in ("hierarchical", "multilabel"):
        raise CLIError(
            f"--checkpoint {path}: a classifier of python -m hcam_ops.train {task} ({ckpt['model_name']}); "
            "python -m hcam_ops.cam draws its CAMs"
        )
    if ckpt.get("model_name") == DISTILLER_NAME:
        raise CLIError(
            f"--checkpoint {path}: a detector distillation run's checkpoint; "
            "python -m hcam_ops.train.distill.convert takes its student out, which this tool reads"
        )


def read_image(path: str) -> np.ndarray:
    check_file(path, "--image")
    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise CLIError(f"--image {path}: not a readable image ({e})") from None


def preview(model) -> None:
    print("aliases: neck -> backbone (the FPN output), backbone -> backbone.body")
    for name, module in model.detector.named_modules():
        if name:
            print(f"{name}\t{type(module).__name__}")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def main(argv=None):
    args = parse_args(argv)
    model = load_model(args)
    if args.preview_model:
        preview(model)
        return
    from .detection import DetCAMVisualizer
    from .progress import bars_only_on_a_tty

    try:
        vis = DetCAMVisualizer(
            model,
            args.method,
            args.target_layers,
            max_shape=args.max_shape,
            batch_size=args.batch_size,
            ratio_channels_to_ablate=args.ratio_channels_to_ablate,
            match_iou_thr=args.match_iou_thr,
            ablation_value=args.ablation_value,
        )
    except InputError as e:
        raise _cli_error(e, args) from None
    os.makedirs(args.out, exist_ok=True)
    written = 0
    for path in args.image:
        image = read_image(path)
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            with bars_only_on_a_tty():
                ex = vis.explain(image, args.topk, args.aug_smooth, args.eigen_smooth)
                each = vis.explain_each(image, args.topk, args.aug_smooth, args.eigen_smooth) if args.per_box else []
        except InputError as e:
            raise _cli_error(e, args, f" (image {path})") from None
        pictures = [(f"{stem}_{vis.method}.png", ex)]
        for i, one in enumerate(each):
            name = _slug(model.class_name(int(one.labels[0])))
            pictures.append((f"{stem}_{vis.method}_box{i}_{name}.png", one))
        for filename, one in pictures:
            picture = vis.show_cam(image, one.boxes, one.labels, one.cam, one.scores, not args.no_norm_in_bbox)
            Image.fromarray(picture).save(os.path.join(args.out, filename))
            written += 1
        for box, label, score in zip(ex.boxes, ex.labels, ex.scores):
            coords = ", ".join(f"{v:.1f}" for v in box)
            print(f"{path}\t{model.class_name(int(label))}\t{score:.3f}\t[{coords}]")
    print(f"wrote {written} files to {args.out}")


if __name__ == "__main__":
    main()
