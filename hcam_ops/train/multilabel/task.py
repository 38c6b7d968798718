"""The multi-label task (``python -m hcam_ops.train multilabel``): the Plant
Pathology 2021 report's systems (ArcFace-PSA-Swin, Swin + focal,
EfficientNet-B0 and its grouped variant, EVA-CLIP with or without its STN)
on CSVs of one-hot labels (``--data`` for the folder of
``python -m hcam_ops.data.plant_pathology``), or on a synthetic multi-label
set made on the fly (the default). ``--preset plant-pathology-2021`` sets the
report's run configuration. The report's augmentations, oversampling by
duplication (a weighted sampler as option), validation macro F1 as the
monitored metric; per epoch train loss, accuracy (overall and per class),
F1 and mAP, validation loss, F1, mAP and accuracy. At the end the per-class
thresholds are searched on validation and applied unchanged to the test
split, whose report is printed, plotted and saved (``report.json``)."""

from __future__ import annotations

import argparse
import json
import math
import os

import torch

from ..._cli import CLIError, check_dir, check_file, image_side, parse_json, positive_int
from ...data.plant_pathology import LEAF_CLASSES
from ..distributed import ShardSampler, World, gather_rows, sum_across
from ..engine import Task
from . import preset
from .data import (
    AUGMENTS,
    CsvMultiLabel,
    SyntheticMultiLabel,
    duplicate,
    eval_transform,
    oversample_weights,
    train_transform,
)

# timm name -> family (what its --img-size must satisfy, which knobs it has).
MODELS = {
    "arc_psa_swin_tiny": "swin",
    "arc_psa_swin_base": "swin",
    "arc_psa_swin_base_384": "swin",
    "arc_psa_swinv2_base_384": "swin",
    "swin_focal_tiny": "swin",
    "efficientnet_b0_bce": "efficientnet",
    "efficientnet_b0_g16_bce": "efficientnet",
    "eva_clip_bce": "eva",
    "eva_clip_stn_bce": "eva",
}
SWIN_STRIDE = 32  # patch 4, then three 2x merges
SPLIT_FILES = ("train.csv", "val.csv", "test.csv")  # what the label tool writes


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--preset", choices=sorted(preset.PRESETS), help="a published run configuration as defaults")
    ap.add_argument("--data", help="a folder of python -m hcam_ops.data.plant_pathology (train/val/test.csv)")
    ap.add_argument("--train-csv", help="image,<class>,... with 0/1 cells (default: synthetic data)")
    ap.add_argument("--val-csv", help="required with --train-csv")
    ap.add_argument("--test-csv", help="default: the validation CSV")
    ap.add_argument("--images", help="folder the CSV image paths are relative to (default: the CSV's folder)")
    ap.add_argument("--classes", default=",".join(LEAF_CLASSES), help="comma-separated class names (CSV columns)")
    ap.add_argument("--synthetic-size", type=positive_int, default=256)
    ap.add_argument("--model", default="arc_psa_swin_tiny", help=f"one of {', '.join(MODELS)}")
    ap.add_argument("--img-size", type=image_side, default=224, help=f"Swin models: a multiple of {SWIN_STRIDE}")
    ap.add_argument("--backbone-checkpoint", help="local backbone weights (Swin, EVA tower)")
    ap.add_argument(
        "--backbone-kwargs",
        default="{}",
        help='JSON for the timm backbone, e.g. {"embed_dim": 24, "depths": [1, 1, 1, 1]} '
        '(EfficientNet: {"channel_multiplier": 0.5})',
    )
    ap.add_argument(
        "--model-kwargs",
        default="{}",
        help='JSON for the model, e.g. {"neck": "compact"}, {"stn": "pooled"}, '
        '{"tower": "eva02_base_patch16_clip_224"}',
    )
    ap.add_argument("--augment", default="report", choices=AUGMENTS, help="report: section 3.2's list")
    ap.add_argument("--vflip", action="store_true", help="add a vertical flip to the report's augmentations")
    ap.add_argument("--oversample", default="", help="class names to oversample, comma-separated")
    ap.add_argument(
        "--oversample-factor",
        type=float,
        default=6.0,
        help="duplicate: times each such image appears in all (an integer; 6 = the original + the report's 5 "
        "copies); weighted: its sampling weight",
    )
    ap.add_argument("--oversample-mode", default="duplicate", choices=["duplicate", "weighted"])
    ap.add_argument(
        "--oversample-val",
        action="store_true",
        help="duplicate in the validation split too (the report's code does; its text only for training)",
    )
    ap.add_argument(
        "--tta",
        nargs="?",
        const="hflip",
        default="",
        help="test-time views in the final evaluation: hflip (bare --tta), or a list such as hflip,vflip,rot90",
    )
    # The engine's --amp cannot be switched off once a preset turns it on.
    ap.add_argument("--no-amp", dest="amp", action="store_false", default=argparse.SUPPRESS, help="no mixed precision")
    ap.set_defaults(epochs=20, batch_size=32, lr=1e-4, out="runs/multilabel", patience=5)
    preset.install(ap)


def _names(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


class MultilabelTask(Task):
    name = "multilabel"
    monitor = "macro_f1"

    def __init__(self, args):
        self.args = args
        self.classes = _names(args.classes)
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise CLIError(f"--classes {args.classes!r}: give distinct, comma-separated class names")
        unknown = [c for c in _names(args.oversample) if c not in self.classes]
        if unknown:
            raise CLIError(f"--oversample: {unknown[0]!r} is not a class (classes: {', '.join(self.classes)})")
        self.oversample = [self.classes.index(c) for c in _names(args.oversample)]
        factor = args.oversample_factor
        if self.oversample and (factor < 1 or (args.oversample_mode == "duplicate" and factor != int(factor))):
            raise CLIError(f"--oversample-factor {factor}: must be >= 1 (an integer with --oversample-mode duplicate)")
        if args.oversample_val and args.oversample_mode != "duplicate":
            raise CLIError("--oversample-val: only with --oversample-mode duplicate")
        from ...metrics import parse_views  # torchmetrics: imported by a run, not by --help

        try:
            self.tta = parse_views(args.tta)
        except ValueError as e:
            raise CLIError(f"--tta {args.tta}: {e}") from None
        if args.model not in MODELS:
            raise CLIError(f"--model {args.model}: not a multi-label model (one of {', '.join(MODELS)})")
        self.family = MODELS[args.model]
        if args.img_size <= 0 or (self.family == "swin" and args.img_size % SWIN_STRIDE):
            raise CLIError(f"--img-size {args.img_size}: must be a positive multiple of Swin's stride {SWIN_STRIDE}")
        if args.img_size < 32:
            raise CLIError(f"--img-size {args.img_size}: must be at least 32")
        if args.data:
            self._use_data_folder(args)
        if args.train_csv:
            check_file(args.train_csv, "--train-csv")
            check_file(args.val_csv, "--val-csv (with --train-csv)")
            if args.test_csv:
                check_file(args.test_csv, "--test-csv")
            if args.images:
                check_dir(args.images, "--images")
        if args.backbone_checkpoint:
            check_file(args.backbone_checkpoint, "--backbone-checkpoint")
        model_kwargs = parse_json(args.model_kwargs, "--model-kwargs")
        clash = sorted(set(model_kwargs) & {"num_classes", "img_size", "backbone_kwargs", "backbone_checkpoint"})
        if clash:
            raise CLIError(f"--model-kwargs: {clash[0]!r} has its own flag")
        self.model_name = args.model
        self.model_config = dict(
            num_classes=len(self.classes),
            img_size=args.img_size,
            backbone_kwargs=parse_json(args.backbone_kwargs, "--backbone-kwargs"),
            **model_kwargs,
        )
        # This epoch's training (probs, labels) batches; the last finished epoch's.
        self._stash, self._finished = [], None

    def _use_data_folder(self, args) -> None:
        """``--data DIR``: its split CSVs, and the image folder its
        ``dataset.json`` names (unless --images)."""
        check_dir(args.data, "--data")
        paths = [os.path.join(args.data, f) for f in SPLIT_FILES]
        for path, flag in zip(paths, ("--train-csv", "--val-csv", "--test-csv")):
            if getattr(args, flag[2:].replace("-", "_")):
                raise CLIError(f"--data {args.data}: give either --data or {flag}")
            check_file(path, f"--data {args.data}:")
        args.train_csv, args.val_csv, args.test_csv = paths
        info = os.path.join(args.data, "dataset.json")
        if not args.images and os.path.isfile(info):
            try:
                with open(info) as f:
                    args.images = json.load(f)["images"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CLIError(f"{info}: not the label tool's dataset.json ({e})") from None

    def build_model(self) -> torch.nn.Module:
        import timm

        from ... import models  # noqa: F401  (registers the timm names)

        try:
            return timm.create_model(
                self.model_name, backbone_checkpoint=self.args.backbone_checkpoint, **self.model_config
            )
        except (TypeError, ValueError, AssertionError, RuntimeError) as e:
            weights = self.args.backbone_checkpoint
            if weights and str(e).startswith(f"{weights}:"):  # load_backbone names the file
                raise CLIError(f"--backbone-checkpoint {e}") from None
            raise CLIError(
                f"--model {self.model_name} with --backbone-kwargs {self.args.backbone_kwargs} "
                f"--model-kwargs {self.args.model_kwargs}: {e}"
            ) from None

    def _csv(self, path, transform):
        root = self.args.images or os.path.dirname(self.args.train_csv)
        try:
            return CsvMultiLabel(path, root, self.classes, transform, check_images=False)
        except ValueError as e:
            raise CLIError(str(e)) from None

    def _duplicate(self, dataset, split: str):
        copies = int(self.args.oversample_factor)
        before = int(dataset.labels[:, self.oversample].sum(0).max()) if self.oversample else 0
        dataset = duplicate(dataset, self.oversample, copies)
        if int(os.environ.get("RANK", "0")) == 0:  # the report prints these counts
            after = int(dataset.labels[:, self.oversample].sum(0).max())
            names = ",".join(self.classes[k] for k in self.oversample)
            print(f"{split}: {names} samples {before} -> {after} (x{copies})", flush=True)
        return dataset

    def datasets(self):
        a = self.args
        try:
            augment = train_transform(a.img_size, a.augment, a.vflip)
        except ValueError as e:
            raise CLIError(f"--augment {a.augment}: {e}") from None
        if a.train_csv:
            train = self._csv(a.train_csv, augment)
            val = self._csv(a.val_csv, eval_transform(a.img_size))
            self.test = self._csv(a.test_csv or a.val_csv, eval_transform(a.img_size))
            try:  # after every CSV's labels: a bad label is reported first, wherever it is
                for ds in (train, val, self.test):
                    ds.check_images()
            except ValueError as e:
                raise CLIError(str(e)) from None
        else:
            n, K = a.synthetic_size, len(self.classes)
            train = SyntheticMultiLabel(K, a.img_size, n, a.seed, True)
            val = SyntheticMultiLabel(K, a.img_size, max(n // 4, 8), a.seed + 1, False)
            self.test = SyntheticMultiLabel(K, a.img_size, max(n // 4, 8), a.seed + 2, False)
        if self.oversample and a.oversample_mode == "duplicate":
            train = self._duplicate(train, "train")
            if a.oversample_val:
                val = self._duplicate(val, "val")
        self.val = val
        return train, val

    def train_sampler(self, dataset, world: World, seed: int):
        if not (self.oversample and self.args.oversample_mode == "weighted"):
            return None
        # Each rank draws its own share with its own generator.
        weights = oversample_weights(dataset.labels, self.oversample, self.args.oversample_factor)
        gen = torch.Generator().manual_seed(seed + world.rank)
        return torch.utils.data.WeightedRandomSampler(weights, math.ceil(len(dataset) / world.size), generator=gen)

    def train_step(self, model, bare, batch, device):
        """The loss, and the report's running accuracy (a label counts as
        predicted at probability >= 0.5, on the training logits) overall and
        per class; the probabilities are kept for the epoch's F1 and mAP."""
        x, y = (t.to(device, non_blocking=True) for t in batch)
        loss, logits = model(x, y)
        with torch.no_grad():
            probs = torch.sigmoid(logits.detach().float())
            hits = ((probs >= 0.5).float() == y.float()).float().mean(0)
            self._stash.append((probs, y.detach().float()))
        parts = {"loss": loss, "acc": hits.mean()}
        parts.update({f"acc_{c}": hits[k] for k, c in enumerate(self.classes)})
        return parts, y.shape[0]

    def _take_stash(self):
        K = len(self.classes)
        if self._stash:
            probs, labels = (torch.cat(t) for t in zip(*self._stash))
        else:
            probs = labels = torch.empty(0, K)
        self._stash = []
        return probs, labels

    def train_metrics(self, world: World, device) -> dict[str, float]:
        """The finished training epoch's macro F1 (at 0.5) and mAP over every
        sample the ranks saw, as the report's ``calculate_metrics``; read by
        the engine after each epoch (as ``train_macro_f1``, ``train_map``)."""
        from torchmetrics.functional.classification import multilabel_average_precision, multilabel_f1_score

        if self._stash:  # asked before evaluate
            probs, labels = self._take_stash()
        elif self._finished is not None:  # asked after evaluate set them aside
            probs, labels = self._finished
        else:
            probs = labels = torch.empty(0, len(self.classes))
        self._finished = None
        probs, labels = gather_rows(probs.to(device), world).cpu(), gather_rows(labels.to(device), world).cpu()
        if probs.shape[0] == 0:
            return {"macro_f1": math.nan, "map": math.nan}
        K, y = len(self.classes), labels.int()
        return {
            "macro_f1": float(multilabel_f1_score(probs, y, num_labels=K, average="macro", zero_division=0)),
            "map": float(multilabel_average_precision(probs, y, num_labels=K, average="macro")),
        }

    @torch.no_grad()
    def _predict(self, bare, loader, device, world: World, views, with_loss: bool):
        from ...metrics import predict_tta

        bare.eval()
        probs, labels, loss = [], [], 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if with_loss:
                loss += float(bare(x, y)[0]) * y.shape[0]
            probs.append(predict_tta(bare, x, views).float())
            labels.append(y.float())
        K = len(self.classes)
        probs = torch.cat(probs) if probs else torch.empty(0, K, device=device)
        labels = torch.cat(labels) if labels else torch.empty(0, K, device=device)
        return gather_rows(probs, world).cpu(), gather_rows(labels, world).cpu(), loss

    def evaluate(self, bare, loader, device, world: World) -> dict[str, float]:
        # The training epoch is over: set its predictions aside for
        # train_metrics, whenever the engine asks (and never let them pile up).
        from ...metrics import multilabel_report

        if self._stash:
            self._finished = self._take_stash()
        probs, labels, loss = self._predict(bare, loader, device, world, (), True)
        rep = multilabel_report(probs, labels, torch.full((len(self.classes),), 0.5), self.classes)
        total = sum_across({"loss": loss}, world, device)["loss"]
        hits = (
            ((probs >= 0.5).float() == labels).float().mean(0)
            if len(labels)
            else torch.full((len(self.classes),), math.nan)
        )
        return {
            "loss": total / max(len(labels), 1),
            "macro_f1": rep["macro"]["f1"],
            "micro_f1": rep["micro"]["f1"],
            "map": rep["macro"]["ap"],
            "acc": float(hits.mean()),
        }

    def state(self) -> dict:
        return {"classes": list(self.classes)}

    def finish(self, bare, device, world: World, out_dir: str) -> dict:
        """Thresholds searched on validation, applied to the test split; the
        report's table, pictures and training curves."""
        from ...metrics import (
            format_table,
            multilabel_report,
            read_log,
            save_history_curves,
            save_plots,
            search_thresholds,
        )

        a = self.args

        def shard(ds):
            return torch.utils.data.DataLoader(
                ds, a.batch_size, sampler=ShardSampler(len(ds), world), num_workers=a.workers
            )

        probs, labels, _ = self._predict(bare, shard(self.val), device, world, self.tta, False)
        thresholds = search_thresholds(probs, labels)
        val_report = multilabel_report(probs, labels, thresholds, self.classes)
        probs, labels, _ = self._predict(bare, shard(self.test), device, world, self.tta, False)
        report = multilabel_report(probs, labels, thresholds, self.classes)
        if world.main:
            if a.train_csv and not a.test_csv:
                # The thresholds were searched on this very split: not a held-out test.
                print(f"test = the validation split {a.val_csv} (no --test-csv), the one the thresholds were tuned on")
            print(format_table(report))
            save_plots(val_report, out_dir, prefix="val_")
            save_plots(report, out_dir, prefix="test_")
            log = os.path.join(out_dir, "log.csv")
            if os.path.exists(log):
                save_history_curves(read_log(log), out_dir, self.classes)
            with open(os.path.join(out_dir, "val_report.json"), "w") as f:
                json.dump(val_report, f, indent=1)
            with open(os.path.join(out_dir, "report.json"), "w") as f:
                json.dump(report, f, indent=1)
        return report
