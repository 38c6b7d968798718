"""python -m hcam_ops.cam --checkpoint run/best.pth --image leaf.jpg --out dir/

Reads a checkpoint of ``python -m hcam_ops.train`` (either task) and rebuilds
the model from the file alone: its name, config and class names are in it.
Multi-label models: one Grad-CAM overlay per class (PNG), a GIF across them,
and the predicted probabilities (``scores.txt``). Hierarchical (H-CAST)
models: one CAM per level for the predicted class (on ``centroid1``, mapped
back through the superpixels), a GIF, and the predictions per level.
A bare state dict needs ``--model`` (and ``--classes``).

``--method cls-attention`` (a ViT's last-block class-token attention) and
``--method attnpool`` (a CLIP-style attention pool, e.g. ``--model
resnet50_clip``) draw the model's own attention instead: each head's map, its
mask (the map above its own mean) and the fused mask (LOCATE / BiT-Align,
docs/attention_masks.md), with the head scores in ``heads.txt``."""

from __future__ import annotations

import argparse
import os

import torch
from PIL import Image, UnidentifiedImageError

from .. import checkpoint
from .._cli import CLIError, CLIParser, InputError, check_file, check_out_dir, image_side
from ..data.plant_pathology import LEAF_CLASSES

# timm, torchvision, pytorch-grad-cam and hcam_ops.models are imported where
# used, so that --help answers at once.

# The tasks whose checkpoints this tool reads.
TASKS = ("hierarchical", "multilabel")


def _method(text: str) -> str:
    """``--method``: a name of the registry of :mod:`hcam_ops.cam.methods`
    (checked when parsed; the registry loads pytorch-grad-cam)."""
    from .methods import MASK_METHODS, METHODS, cam_methods, mask_methods, normalise

    if normalise(text) not in METHODS and normalise(text) not in MASK_METHODS:
        raise CLIError(f"--method {text!r}: one of {', '.join(cam_methods() + mask_methods())}")
    return text


def _heads(text: str) -> list[int]:
    """``--heads 0,1,3``: head indices from 0, each once."""
    try:
        heads = [int(t) for t in text.split(",")]
    except ValueError:
        raise CLIError(f"--heads {text!r}: comma-separated head indices, such as 0,1,3") from None
    if any(h < 0 for h in heads) or len(set(heads)) != len(heads):
        raise CLIError(f"--heads {text!r}: head indices from 0, each once")
    return heads


def parse_args(argv=None):
    ap = CLIParser(
        prog="python -m hcam_ops.cam", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", help="a checkpoint of hcam_ops.train, or a bare state dict (with --model)")
    ap.add_argument("--model", help="the timm name, for a bare state dict or no checkpoint (random weights)")
    ap.add_argument("--image", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--img-size", type=image_side, help="default: the checkpoint's, else 224")
    ap.add_argument("--classes", help="comma-separated class names (default: the checkpoint's)")
    ap.add_argument(
        "--method",
        default="gradcam",
        type=_method,
        help="multi-label models: a CAM method of hcam_ops.cam.methods (gradcam, gradcam++, scorecam, eigencam, "
        "...; any other name lists them all); any model: cls-attention or attnpool, its attention masks",
    )
    ap.add_argument(
        "--heads",
        type=_heads,
        help="cls-attention / attnpool: the class-token heads to fuse, from 0 (LOCATE's 0,1,3); default: per "
        "image the head whose mask best overlaps the guidance mask (docs/attention_masks.md)",
    )
    ap.add_argument(
        "--target",
        default="report",
        choices=["report", "neck"],
        help="multi-label models: the report's layer (default) or the ArcFace model's PSA feature map",
    )
    args = ap.parse_args(argv)
    check_out_dir(args.out)
    if args.heads is not None:
        from .methods import MASK_METHODS, normalise

        if normalise(args.method) not in MASK_METHODS:
            raise CLIError(f"--heads: for --method cls-attention or attnpool, not {args.method}")
    return args


def _check_task(ckpt: dict, path: str) -> None:
    """A checkpoint of another tool is named with the tool that reads it."""
    from ..models.detection import DETECTOR_NAMES, DISTILLER_NAME

    name = ckpt["model_name"]
    if name == DISTILLER_NAME:
        raise CLIError(
            f"--checkpoint {path}: a detector distillation run's checkpoint; python -m "
            "hcam_ops.train.distill.convert takes its student out, whose CAMs python -m hcam_ops.cam.detect draws"
        )
    if name in DETECTOR_NAMES:
        raise CLIError(f"--checkpoint {path}: holds the detector {name}; python -m hcam_ops.cam.detect reads it")
    if ckpt.get("task") not in TASKS:
        raise CLIError(
            f"--checkpoint {path}: not a checkpoint of python -m hcam_ops.train {' or '.join(TASKS)} "
            f"(its model: {name}, its task: {ckpt.get('task')})"
        )


def _class_names(args, names: list[str], model) -> list[str]:
    """``--classes`` instead of ``names``, one per output of ``model``."""
    if not args.classes:
        return names
    given = [c.strip() for c in args.classes.split(",")]
    if len(given) != model.num_classes:
        raise CLIError(f"--classes {args.classes}: {len(given)} names for the model's {model.num_classes} classes")
    return given


def load_model(args):
    """``(model, task, class names per level, superpixel settings, image size)``."""
    import timm

    from .. import models

    ckpt = checkpoint.load(args.checkpoint, "--checkpoint") if args.checkpoint else None
    if ckpt is not None and checkpoint.is_model_checkpoint(ckpt):
        _check_task(ckpt, args.checkpoint)
        overrides = {"img_size": args.img_size} if args.img_size else {}
        try:
            model = models.build_model(ckpt, args.checkpoint, **overrides)
        except (TypeError, ValueError, AssertionError, RuntimeError) as e:
            if not overrides:
                raise
            raise CLIError(f"--img-size {args.img_size}: the {ckpt['model_name']} model cannot take it ({e})") from None
        state, size = ckpt["task_state"], args.img_size or ckpt["model_config"].get("img_size", 224)
        if ckpt["task"] == "hierarchical":
            return model, "hierarchical", state["hierarchy"]["names"], state["superpixels"], size
        return model, "multilabel", [_class_names(args, state["classes"], model)], None, size
    if not args.model:
        raise CLIError("--model is required with a bare state dict or without --checkpoint")
    names = args.classes.split(",") if args.classes else list(LEAF_CLASSES)
    if args.model.startswith(("hcast", "cast")):
        raise CLIError(f"--model {args.model}: hierarchical models need a checkpoint of hcam_ops.train")
    try:
        model = timm.create_model(args.model, num_classes=len(names), img_size=args.img_size or 224)
    except RuntimeError as e:  # timm: unknown model
        raise CLIError(f"--model {args.model}: {e}") from None
    except (TypeError, ValueError, AssertionError) as e:
        raise CLIError(f"--model {args.model} --img-size {args.img_size or 224}: {e}") from None
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt.get("model", ckpt))
        except RuntimeError as e:
            raise CLIError(
                f"--checkpoint {args.checkpoint}: does not fit --model {args.model} ({str(e).splitlines()[0]})"
            ) from None
    return model, "multilabel", [names], None, args.img_size or 224


def read_photo(path: str) -> Image.Image:
    """The ``--image`` file as an RGB picture, at its own size."""
    check_file(path, "--image")
    try:
        return Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise CLIError(f"--image {path}: not a readable image ({e})") from None


def read_image(path: str, size: int) -> torch.Tensor:
    """The ``--image`` file as the model sees it: ``[3, size, size]`` in [0, 1]."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])(read_photo(path))


def draw_attention_masks(args, model, photo: torch.Tensor, x: torch.Tensor) -> tuple[list[str], list[str]]:
    """``--method cls-attention|attnpool``: the frames of
    :func:`~hcam_ops.cam.attention_masks.mask_frames` drawn on the photo
    (maps resized bilinearly, masks by nearest cell), and ``heads.txt``'s
    lines. Returns ``(paths, lines)``."""
    import torch.nn.functional as F

    from .attention_masks import head_lines, mask_frames
    from .methods import MASK_METHODS, normalise
    from .overlay import save_overlays

    key = normalise(args.method)
    try:
        masks = MASK_METHODS[key](model, x, heads=args.heads)
    except InputError as e:
        flag = f"--heads {','.join(map(str, args.heads))}" if e.argument == "heads" else f"--method {args.method}"
        raise CLIError(f"{flag}: {e.message}") from None
    frames, names, is_mask = mask_frames(masks, key)
    size = photo.shape[1:]
    drawn = [
        F.interpolate(f[None, None], size, mode="nearest" if m else "bilinear")[0, 0].clamp(0, 1)
        for f, m in zip(frames, is_mask)
    ]
    paths = save_overlays(photo, torch.stack(drawn), names, args.out, prefix=key)
    return paths, head_lines(masks)


def main(argv=None):
    args = parse_args(argv)
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from torchvision.transforms.functional import normalize, resize, to_tensor

    from .overlay import save_overlays

    model, task, names, superpixels, size = load_model(args)
    model.eval()
    picture = read_photo(args.image)
    photo, image = to_tensor(picture), to_tensor(resize(picture, [size, size]))  # image: as read_image
    x = normalize(image, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD).unsqueeze(0)

    def at_photo_size(cams: torch.Tensor) -> torch.Tensor:
        # The maps are drawn on the photo as it is, not on the model's square input.
        return torch.nn.functional.interpolate(cams[None].float(), photo.shape[1:], mode="bilinear")[0].clamp(0, 1)

    from .methods import MASK_METHODS, normalise

    lines_file = "scores.txt"
    if normalise(args.method) in MASK_METHODS:
        paths, lines = draw_attention_masks(args, model, photo, x)
        lines_file = "heads.txt"
    elif task == "hierarchical":
        from ..superpixels import Superpixels
        from .hierarchy_cam import hierarchy_cams

        segments = Superpixels(superpixels["num_segments"], superpixels["method"], superpixels["max_segments"])(image)
        cams, classes, probs = hierarchy_cams(model, x, segments[None])
        labels = [f"L{l}_{names[l][int(k)]}" for l, k in enumerate(classes[0])]
        paths = save_overlays(photo, at_photo_size(cams[0]), labels, args.out)
        lines = [f"level {l}\t{names[l][int(k)]}\t{float(probs[l][0, k]):.4f}" for l, k in enumerate(classes[0])]
    else:
        from .classifier import class_cams
        from .progress import bars_only_on_a_tty

        with bars_only_on_a_tty():
            cams = class_cams(model, x, method=args.method, target_layer=args.target)[0]
        probs = model.predict(x)[0].tolist()
        paths = save_overlays(photo, at_photo_size(cams), names[0], args.out, scores=probs)
        lines = [f"{n}\t{p:.4f}" for n, p in zip(names[0], probs)]
    with open(os.path.join(args.out, lines_file), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
