"""``python -m hcam_ops.train.distill.convert IN.pth OUT.pth``: the student alone.

IN is a checkpoint of a distillation run of ``python -m hcam_ops.train
distill`` (student + frozen teacher + FGD modules). OUT keeps only the
student, as ``pth_transfer.py`` at the root of yzd-v/FGD does (the teacher and
the distillation modules are dropped, the ``student.`` prefix removed):

- default: a checkpoint of the student alone (:mod:`hcam_ops.checkpoint`: its
  ``model_name``/``model_config``, class names, task state, epoch and
  metrics; no optimizer), which :func:`hcam_ops.models.build_model` rebuilds,
  ``--teacher`` accepts and ``python -m hcam_ops.cam.detect`` reads (CAMs of
  the student); ``--detection`` writes the same file (the flag is kept for
  scripts written when detectors had a checkpoint format of their own);
- ``--state-dict-only``: the bare torchvision state dict
  (``torchvision.models.detection.RetinaNet``/``FCOS`` ``load_state_dict``).
"""

from __future__ import annotations


def parse_args(argv=None):
    from ..._cli import CLIParser

    ap = CLIParser(prog="python -m hcam_ops.train.distill.convert", description=__doc__)
    ap.add_argument("input", metavar="IN", help="a distillation run's checkpoint (best.pth, last.pth)")
    ap.add_argument("output", metavar="OUT", help="the student's checkpoint to write")
    form = ap.add_mutually_exclusive_group()
    form.add_argument("--state-dict-only", action="store_true", help="write the bare torchvision state dict")
    form.add_argument("--detection", action="store_true", help="the default checkpoint (kept for old scripts)")
    return ap.parse_args(argv)


def student_checkpoint(ckpt: dict, path: str = "IN") -> dict:
    """The checkpoint of the student of a distiller checkpoint."""
    from ... import checkpoint
    from ..._cli import CLIError
    from ...models.detection import DISTILLER_NAME, student_state

    if not checkpoint.is_model_checkpoint(ckpt):
        raise CLIError(f"{path}: not a checkpoint of hcam_ops")
    if ckpt.get("model_name") != DISTILLER_NAME:
        raise CLIError(f"{path}: holds a {ckpt.get('model_name')!r}, not a distillation run's {DISTILLER_NAME}")
    config = ckpt["model_config"]
    task_state = ckpt.get("task_state") or {}
    return checkpoint.model_checkpoint(
        config["student"]["name"],
        config["student"]["config"],
        student_state(ckpt["model"]),
        classes=task_state.get("classes"),
        task=ckpt.get("task", "distill"),
        task_state=task_state,
        epoch=ckpt.get("epoch"),
        best=ckpt.get("best"),
        metrics=ckpt.get("metrics") or {},
        distilled_from={"teacher": config["teacher"]["name"], "preset": config["preset"]},
    )


def main(argv=None) -> str:
    from ... import checkpoint
    from ..._cli import check_out_file

    args = parse_args(argv)
    check_out_file(args.output, "OUT")
    out = student_checkpoint(checkpoint.load(args.input, "IN"), args.input)
    checkpoint.save(out["model"] if args.state_dict_only else out, args.output)
    what = "state dict" if args.state_dict_only else "checkpoint"
    print(f"wrote the {out['model_name']} student's {what} ({len(out['model'])} tensors) to {args.output}")
    return args.output


if __name__ == "__main__":
    main()
