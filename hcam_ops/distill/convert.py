"""``python -m hcam_ops.distill.convert IN.pth OUT.pth``: the student alone.

IN is a checkpoint of a distillation run of ``python -m
hcam_ops.distill.train`` (student + frozen teacher + FGD modules). OUT keeps
only the student, as ``pth_transfer.py`` at the root of yzd-v/FGD does (the
teacher and the distillation modules are dropped, the ``student.`` prefix
removed):

- default: an ``hcam_ops.train`` checkpoint of the student alone (its
  ``model_name``/``model_config``, task state, epoch and metrics; no
  optimizer), which ``hcam_ops.train.build_model`` rebuilds, and which
  ``--teacher`` accepts;
- ``--state-dict-only``: the bare torchvision state dict
  (``torchvision.models.detection.RetinaNet``/``FCOS`` ``load_state_dict``);
- ``--detection``: a checkpoint of ``hcam_ops.cam.detection.save_checkpoint``,
  for ``python -m hcam_ops.cam.detect`` (CAMs of the student).
"""

from __future__ import annotations

import argparse
import os


def parse_args(argv=None):
    from ..train.errors import CLIParser

    ap = CLIParser(
        prog="python -m hcam_ops.distill.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("input", metavar="IN", help="a distillation run's checkpoint (best.pth, last.pth)")
    ap.add_argument("output", metavar="OUT", help="the student's checkpoint to write")
    form = ap.add_mutually_exclusive_group()
    form.add_argument("--state-dict-only", action="store_true", help="write the bare torchvision state dict")
    form.add_argument("--detection", action="store_true", help="write an hcam_ops.cam.detection checkpoint")
    return ap.parse_args(argv)


def student_checkpoint(ckpt: dict, path: str = "IN") -> dict:
    """The ``hcam_ops.train`` checkpoint of the student of a distiller checkpoint."""
    from ..train import checkpoint
    from ..train.distill import DISTILLER_NAME, student_state
    from ..train.errors import CLIError

    if not checkpoint.is_training_checkpoint(ckpt):
        raise CLIError(f"{path}: not a checkpoint of hcam_ops.train")
    if ckpt.get("model_name") != DISTILLER_NAME:
        raise CLIError(f"{path}: holds a {ckpt.get('model_name')!r}, not a distillation run's {DISTILLER_NAME}")
    student = ckpt["model_config"]["student"]
    return {
        "format": checkpoint.FORMAT,
        "task": ckpt.get("task", "distill"),
        "model_name": student["name"],
        "model_config": dict(student["config"]),
        "task_state": ckpt.get("task_state") or {},
        "model": student_state(ckpt["model"]),
        "epoch": ckpt.get("epoch"),
        "best": ckpt.get("best"),
        "metrics": ckpt.get("metrics") or {},
        "distilled_from": {
            "teacher": ckpt["model_config"]["teacher"]["name"],
            "preset": ckpt["model_config"]["preset"],
        },
    }


def main(argv=None) -> str:
    import torch

    from ..train import checkpoint

    args = parse_args(argv)
    out = student_checkpoint(checkpoint.load(args.input, "IN"), args.input)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if args.state_dict_only:
        torch.save(out["model"], args.output)
    elif args.detection:
        from ..cam.detection import save_checkpoint
        from ..train import build_model
        from ..train.distill import detectors  # noqa: F401  (registers the names with timm)
        from ..train.distill.detectors import FPN_CHANNELS

        config = out["model_config"]
        build = {k: v for k, v in config.items() if k != "num_classes"}
        if out["model_name"].endswith("resnet18_fpn"):
            build.setdefault("fpn_channels", FPN_CHANNELS)
        classes = out["task_state"].get("classes")
        save_checkpoint(
            args.output, build_model(out, args.input), out["model_name"], config["num_classes"], classes, **build
        )
    else:
        checkpoint.save(out, args.output)
    what = "state dict" if args.state_dict_only else "detection checkpoint" if args.detection else "checkpoint"
    print(f"wrote the {out['model_name']} student's {what} ({len(out['model'])} tensors) to {args.output}")
    return args.output


if __name__ == "__main__":
    main()
