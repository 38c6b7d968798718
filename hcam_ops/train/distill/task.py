"""Detector distillation (``python -m hcam_ops.train distill``): a RetinaNet
or FCOS student on a ResNet-18 FPN learns from a frozen ResNet-50 FPN teacher
of the same head family through FGD (``--preset fgd``) or DistillBEV's terms
(``--preset distillbev``) on the P3-P7 features, on the synthetic detection
set or a COCO folder. ``--no-distill`` trains one detector alone (the teacher,
or with ``--student-alone`` the student-sized baseline). Validation: COCO box
mAP of the student (monitored: ``map``). docs/distill.md has the commands."""

from __future__ import annotations

import argparse
import os

import torch

from ... import checkpoint
from ..._cli import CLIError, finite_non_negative_float, image_side, parse_json, positive_int
from ...nn.fgd_presets import has_skipped_levels, presets
from ..distributed import World
from ..engine import Task
from . import data as D
from .evaluation import evaluate

# The detectors of this tool: a ResNet-50 FPN teacher and a ResNet-18 FPN
# student of one head family, whose P3-P7 levels match one to one.
FAMILIES = ("retinanet", "fcos")
SIZES = {"teacher": "resnet50", "student": "resnet18"}
DETECTOR_NAMES = tuple(f"{f}_{b}_fpn" for f in FAMILIES for b in SIZES.values())


def detector_name(family: str, size: str) -> str:
    """``retinanet``/``fcos`` and ``teacher``/``student`` -> the model name."""
    return f"{family}_{SIZES[size]}_fpn"


def detector_config(num_classes: int, image_size: tuple[int, int]) -> dict:
    """``model_config`` of a detector: classes with the background, and
    ``min_size``/``max_size`` set to the image size (no resizing)."""
    return {"num_classes": int(num_classes), "min_size": min(image_size), "max_size": max(image_size)}


def add_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("distillation")
    g.add_argument("--data", default="synthetic", help="synthetic, or a COCO folder (annotations.json + images)")
    g.add_argument(
        "--synthetic-size",
        type=positive_int,
        default=64,
        help="synthetic training images (val: a quarter)",
    )
    g.add_argument(
        "--image-size",
        type=image_side,
        help="synthetic image side (default 128); COCO: override the size",
    )
    g.add_argument("--num-classes", type=int, default=3, help="synthetic object classes (1-4)")
    g.add_argument("--val-fraction", type=float, default=0.2, help="COCO single file: share held out for val")
    g.add_argument("--teacher-arch", choices=FAMILIES, help="head family (default: the --teacher's, else retinanet)")
    g.add_argument("--teacher", help="the teacher: a checkpoint of a --no-distill run (best.pth)")
    g.add_argument(
        "--preset", default="fgd", help=f"FGDLoss preset: {', '.join(presets())} (fgd-retinanet/fgd-fcos: per head)"
    )
    g.add_argument(
        "--distill-weight",
        type=distill_weight,
        default=1.0,
        help="scales every distillation term; auto (ours): one factor from the first --auto-weight-batches "
        "batches, so that the largest term matches the detection loss",
    )
    g.add_argument(
        "--auto-weight-batches",
        type=positive_int,
        default=10,
        help="with --distill-weight auto: the training batches that set the factor",
    )
    g.add_argument("--loss-kwargs", default="{}", help='JSON overrides of the preset, e.g. {"fg_weight": 2e-3}')
    g.add_argument("--no-distill", action="store_true", help="train one detector alone (the teacher by default)")
    g.add_argument(
        "--arch-size",
        choices=("teacher", "student"),
        help="with --no-distill: ResNet-50 (teacher, default) or ResNet-18 (student) FPN",
    )
    g.add_argument("--student-alone", action="store_true", help="= --no-distill --arch-size student (the baseline)")
    ap.set_defaults(
        epochs=12, batch_size=8, opt="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4, clip_grad=10.0,
        warmup_epochs=1, out="runs/distill",
    )  # fmt: skip


def distill_weight(text: str) -> float | str:
    """--distill-weight: "auto" or a finite number >= 0."""
    if text.strip().lower() == "auto":
        return "auto"
    return finite_non_negative_float(text)


class _EpochSampler(torch.utils.data.Sampler):
    """The engine's own sampler (DistributedSampler), whose ``set_epoch``
    (called by the engine at the start of each epoch) also reaches the
    model's ``set_epoch`` (FGDLoss's, where it has one)."""

    def __init__(self, inner, on_epoch):
        self.inner, self.on_epoch = inner, on_epoch

    def __iter__(self):
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)
        self.on_epoch(epoch)


class DistillTask(Task):
    name = "distill"
    monitor = "map"

    def __init__(self, args):
        from ...models.detection import DISTILLER_NAME, family  # timm, torchvision: not for --help
        from ...models.detection.features import NUM_LEVELS

        self.args = args
        if args.student_alone:
            if args.arch_size == "teacher":
                raise CLIError("--student-alone contradicts --arch-size teacher")
            args.no_distill, args.arch_size = True, "student"
        if args.arch_size and not args.no_distill:
            raise CLIError("--arch-size: only with --no-distill (a distilled student is always ResNet-18)")
        if args.preset not in presets():
            raise CLIError(f"--preset {args.preset!r}: one of {', '.join(presets())}")
        self.loss_overrides = parse_json(args.loss_kwargs, "--loss-kwargs")
        self.train_set, self.val_set, self.spec = self._data(args)
        self.image_size = tuple(self.spec["image_size"])
        self.num_classes = self.spec["num_classes"] + 1  # torchvision counts the background
        config = detector_config(self.num_classes, self.image_size)
        self.teacher_ckpt = None
        if args.no_distill:
            if args.teacher:
                raise CLIError("--teacher: not used with --no-distill")
            self.model_name = detector_name(args.teacher_arch or "retinanet", args.arch_size or "teacher")
            self.model_config = config
        else:
            teacher = self._teacher(args)
            head = family(teacher["name"])
            self.model_name = DISTILLER_NAME
            self.model_config = {
                "student": {"name": detector_name(head, "student"), "config": config},
                "teacher": teacher,
                "preset": args.preset,
                "distill_weight": args.distill_weight,
                "auto_batches": args.auto_weight_batches,
                "loss_overrides": self.loss_overrides,
            }
            try:  # a bad --loss-kwargs fails here, on one line, rather than inside the engine
                from ...nn import FGDLoss

                # The distiller's levels (P3-P7), so per-level weights (a list a level) pass.
                FGDLoss.from_preset(args.preset, [256] * NUM_LEVELS, [256] * NUM_LEVELS, **self.loss_overrides)
            except (TypeError, ValueError) as e:
                raise CLIError(f"--loss-kwargs {args.loss_kwargs}: {e}") from None
            # Levels FGDLoss skips before multi_scale_epoch leave their adapters
            # and GcBlocks without gradients: DDP's reducer must expect that.
            self.find_unused_parameters = has_skipped_levels(args.preset, self.loss_overrides)
        self._model = None

    # -- data -------------------------------------------------------------
    @staticmethod
    def _data(args):
        if args.data == "synthetic":
            side = args.image_size or 128  # --image-size and --synthetic-size are checked when parsed
            train, val = D.synthetic_splits(args.synthetic_size, side, args.num_classes, args.seed)
            spec = {"data": "synthetic", "synthetic_size": args.synthetic_size, "seed": args.seed}
            size = (side, side)
        else:
            train, val = D.coco_splits(args.data, args.val_fraction)
            spec = {"data": os.path.abspath(args.data), "val_fraction": args.val_fraction}
            size = (args.image_size, args.image_size) if args.image_size else train.image_size()
        if min(size) < 32:
            raise CLIError(f"--image-size {min(size)}: must be at least 32 (the detectors' P5 stride)")
        spec.update(image_size=list(size), num_classes=train.num_classes, classes=list(train.classes))
        return train, val, spec

    def datasets(self):
        return D.padded(self.train_set), D.padded(self.val_set)

    # -- teacher ----------------------------------------------------------
    def _teacher(self, args) -> dict:
        """The teacher's ``{"name", "config"}`` from ``--teacher``; its weights
        are loaded in build_model."""
        from ...models.detection import DISTILLER_NAME, family

        if not args.teacher:
            raise CLIError("--teacher is required (a checkpoint of a --no-distill run), or give --no-distill")
        path = args.teacher
        ckpt = checkpoint.load(path, "--teacher")
        if not checkpoint.is_model_checkpoint(ckpt):
            raise CLIError(f"--teacher {path}: not a checkpoint of hcam_ops (no model name and config in it)")
        name = ckpt.get("model_name")
        if name == DISTILLER_NAME:
            raise CLIError(
                f"--teacher {path}: a distillation run's checkpoint (student + teacher); give a --no-distill run's"
            )
        if name not in DETECTOR_NAMES:
            raise CLIError(
                f"--teacher {path}: holds a {name!r}, not a detector of this tool ({', '.join(DETECTOR_NAMES)})"
            )
        if args.teacher_arch and family(name) != args.teacher_arch:
            raise CLIError(f"--teacher {path}: a {family(name)} detector, but --teacher-arch {args.teacher_arch}")
        have = int(ckpt["model_config"].get("num_classes", -1))
        if have != self.num_classes:
            raise CLIError(
                f"--teacher {path}: trained for {have - 1} object classes, the data has {self.num_classes - 1}"
            )
        self.teacher_ckpt = ckpt
        config = {**ckpt["model_config"], **detector_config(self.num_classes, self.image_size)}
        return {"name": name, "config": config}

    # -- model ------------------------------------------------------------
    def build_model(self) -> torch.nn.Module:
        import timm

        from ...models.detection import check_fpn  # importing it registers the detector names with timm

        model = timm.create_model(self.model_name, **self.model_config)
        if self.teacher_ckpt is not None:
            try:
                model.teacher.load_state_dict(self.teacher_ckpt["model"])
            except RuntimeError as e:
                first = str(e).strip().splitlines()[0]
                raise CLIError(f"--teacher {self.args.teacher}: its weights do not fit ({first})") from None
            check_fpn(model.teacher, f"--teacher {self.args.teacher}")
        self._model = model
        return model

    def train_sampler(self, dataset, world: World, seed: int):
        inner = torch.utils.data.DistributedSampler(dataset, world.size, world.rank, shuffle=True, seed=seed)
        return _EpochSampler(inner, self._set_epoch)

    def _set_epoch(self, epoch: int) -> None:
        if self._model is not None and hasattr(self._model, "set_epoch"):
            self._model.set_epoch(epoch)

    def train_step(self, model, bare, batch, device):
        images, targets = D.unpad(batch, device)
        parts = model(images, targets)
        loss = sum(parts.values())
        return {"loss": loss, **parts}, len(images)

    def evaluate(self, bare, loader, device, world: World) -> dict[str, float]:
        return evaluate(bare, loader, device, world)

    def state(self) -> dict:
        return dict(self.spec)
