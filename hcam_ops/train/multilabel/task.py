"""The multi-label task (``python -m hcam_ops.train multilabel``): an
ArcFace-PSA-Swin (or the Swin + focal baseline) on CSVs of one-hot labels, or
on a synthetic multi-label set made on the fly (the default). Minority
oversampling, validation macro F1 as the monitored metric; at the end the
per-class thresholds are searched on validation and applied unchanged to the
test split, whose report is printed, plotted and saved (``report.json``)."""

from __future__ import annotations

import argparse
import json
import math
import os

import torch

from ...metrics import format_table, multilabel_report, predict_tta, save_plots, search_thresholds
from ...models import LEAF_CLASSES
from ..distributed import ShardSampler, World, gather_rows, sum_across
from ..errors import CLIError, check_dir, check_file, parse_json
from .data import CsvMultiLabel, SyntheticMultiLabel, eval_transform, oversample_weights, train_transform

MODELS = ("arc_psa_swin_tiny", "arc_psa_swin_base", "arc_psa_swin_base_384", "swin_focal_tiny")
SWIN_STRIDE = 32  # patch 4, then three 2x merges


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--train-csv", help="image,<class>,... with 0/1 cells (default: synthetic data)")
    ap.add_argument("--val-csv", help="required with --train-csv")
    ap.add_argument("--test-csv", help="default: the validation CSV")
    ap.add_argument("--images", help="folder the CSV image paths are relative to (default: the CSV's folder)")
    ap.add_argument("--classes", default=",".join(LEAF_CLASSES), help="comma-separated class names (CSV columns)")
    ap.add_argument("--synthetic-size", type=int, default=256)
    ap.add_argument("--model", default="arc_psa_swin_tiny", help=f"one of {', '.join(MODELS)}")
    ap.add_argument("--img-size", type=int, default=224, help=f"a multiple of {SWIN_STRIDE}")
    ap.add_argument("--backbone-checkpoint", help="local Swin weights")
    ap.add_argument(
        "--backbone-kwargs", default="{}", help='JSON for timm\'s Swin, e.g. {"embed_dim": 24, "depths": [1, 1, 1, 1]}'
    )
    ap.add_argument("--oversample", default="", help="class names to oversample, comma-separated")
    ap.add_argument(
        "--oversample-factor",
        type=float,
        default=3.0,
        help="duplicate: copies of each such image (an integer); weighted: its sampling weight",
    )
    ap.add_argument("--oversample-mode", default="duplicate", choices=["duplicate", "weighted"])
    ap.add_argument("--tta", action="store_true", help="flip test-time augmentation in the final evaluation")
    ap.set_defaults(epochs=20, batch_size=32, lr=1e-4, out="runs/multilabel", patience=5)


class MultilabelTask:
    name = "multilabel"
    monitor = "macro_f1"
    find_unused_parameters = False

    def __init__(self, args):
        self.args = args
        self.classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise CLIError(f"--classes {args.classes!r}: give distinct, comma-separated class names")
        unknown = [c for c in filter(None, (c.strip() for c in args.oversample.split(","))) if c not in self.classes]
        if unknown:
            raise CLIError(f"--oversample: {unknown[0]!r} is not a class (classes: {', '.join(self.classes)})")
        self.oversample = [self.classes.index(c) for c in filter(None, (c.strip() for c in args.oversample.split(",")))]
        factor = args.oversample_factor
        if self.oversample and (factor < 1 or (args.oversample_mode == "duplicate" and factor != int(factor))):
            raise CLIError(f"--oversample-factor {factor}: must be >= 1 (an integer with --oversample-mode duplicate)")
        if args.model not in MODELS:
            raise CLIError(f"--model {args.model}: not a multi-label model (one of {', '.join(MODELS)})")
        if args.img_size <= 0 or args.img_size % SWIN_STRIDE:
            raise CLIError(f"--img-size {args.img_size}: must be a positive multiple of Swin's stride {SWIN_STRIDE}")
        if args.train_csv:
            check_file(args.train_csv, "--train-csv")
            check_file(args.val_csv, "--val-csv (with --train-csv)")
            if args.test_csv:
                check_file(args.test_csv, "--test-csv")
            if args.images:
                check_dir(args.images, "--images")
        if args.backbone_checkpoint:
            check_file(args.backbone_checkpoint, "--backbone-checkpoint")
        self.model_name = args.model
        self.model_config = dict(
            num_classes=len(self.classes),
            img_size=args.img_size,
            backbone_kwargs=parse_json(args.backbone_kwargs, "--backbone-kwargs"),
        )

    def build_model(self) -> torch.nn.Module:
        import timm

        from ... import models  # noqa: F401  (registers the timm names)

        try:
            return timm.create_model(
                self.model_name, backbone_checkpoint=self.args.backbone_checkpoint, **self.model_config
            )
        except (TypeError, ValueError, AssertionError, RuntimeError) as e:
            raise CLIError(
                f"--model {self.model_name} with --backbone-kwargs {self.args.backbone_kwargs}: {e}"
            ) from None

    def _csv(self, path, transform):
        root = self.args.images or os.path.dirname(self.args.train_csv)
        try:
            return CsvMultiLabel(path, root, self.classes, transform)
        except ValueError as e:
            raise CLIError(str(e)) from None

    def datasets(self):
        a = self.args
        if a.train_csv:
            train = self._csv(a.train_csv, train_transform(a.img_size))
            val = self._csv(a.val_csv, eval_transform(a.img_size))
            self.test = self._csv(a.test_csv or a.val_csv, eval_transform(a.img_size))
        else:
            n, K = a.synthetic_size, len(self.classes)
            train = SyntheticMultiLabel(K, a.img_size, n, a.seed, True)
            val = SyntheticMultiLabel(K, a.img_size, max(n // 4, 8), a.seed + 1, False)
            self.test = SyntheticMultiLabel(K, a.img_size, max(n // 4, 8), a.seed + 2, False)
        self.val = val
        if self.oversample and a.oversample_mode == "duplicate":
            extra = int(a.oversample_factor) - 1
            hit = torch.nonzero(train.labels[:, self.oversample].sum(1) > 0)[:, 0].tolist()
            indices = list(range(len(train))) + hit * extra
            labels = train.labels[indices]
            train = torch.utils.data.Subset(train, indices)
            train.labels = labels
        return train, val

    def train_sampler(self, dataset, world: World, seed: int):
        if not (self.oversample and self.args.oversample_mode == "weighted"):
            return None
        # Each rank draws its own share with its own generator.
        weights = oversample_weights(dataset.labels, self.oversample, self.args.oversample_factor)
        gen = torch.Generator().manual_seed(seed + world.rank)
        return torch.utils.data.WeightedRandomSampler(weights, math.ceil(len(dataset) / world.size), generator=gen)

    def train_step(self, model, bare, batch, device):
        x, y = (t.to(device, non_blocking=True) for t in batch)
        loss, _ = model(x, y)
        return {"loss": loss}, y.shape[0]

    def _predict(self, bare, loader, device, world: World, tta: bool, with_loss: bool):
        bare.eval()
        probs, labels, loss = [], [], 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if with_loss:
                loss += float(bare(x, y)[0]) * y.shape[0]
            probs.append(predict_tta(bare, x, tta).float())
            labels.append(y.float())
        K = len(self.classes)
        probs = torch.cat(probs) if probs else torch.empty(0, K, device=device)
        labels = torch.cat(labels) if labels else torch.empty(0, K, device=device)
        return gather_rows(probs, world).cpu(), gather_rows(labels, world).cpu(), loss

    def evaluate(self, bare, loader, device, world: World) -> dict[str, float]:
        probs, labels, loss = self._predict(bare, loader, device, world, False, True)
        rep = multilabel_report(probs, labels, torch.full((len(self.classes),), 0.5), self.classes)
        total = sum_across({"loss": loss}, world, device)["loss"]
        return {
            "loss": total / max(len(labels), 1),
            "macro_f1": rep["macro"]["f1"],
            "micro_f1": rep["micro"]["f1"],
            "map": rep["macro"]["ap"],
        }

    def state(self) -> dict:
        return {"classes": list(self.classes)}

    def finish(self, bare, device, world: World, out_dir: str) -> dict:
        """Thresholds searched on validation, applied to the test split."""
        a = self.args

        def shard(ds):
            return torch.utils.data.DataLoader(
                ds, a.batch_size, sampler=ShardSampler(len(ds), world), num_workers=a.workers
            )

        probs, labels, _ = self._predict(bare, shard(self.val), device, world, a.tta, False)
        thresholds = search_thresholds(probs, labels)
        probs, labels, _ = self._predict(bare, shard(self.test), device, world, a.tta, False)
        report = multilabel_report(probs, labels, thresholds, self.classes)
        if world.main:
            print(format_table(report))
            save_plots(report, out_dir)
            with open(os.path.join(out_dir, "report.json"), "w") as f:
                json.dump(report, f, indent=1)
        return report
