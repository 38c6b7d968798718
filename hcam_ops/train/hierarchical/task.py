"""H-CAST training (``python -m hcam_ops.train hierarchical``): the published
CAST with hierarchical heads, trained as ``deit/main_suppix_hier.py`` does,
with the CAM-consistency term (docs/ops/cam.md) on top.

Data: a synthetic hierarchical set (default, no download), an ImageFolder
tree with a hierarchy file, or the published CUB-200 / FGVC-Aircraft layouts
(``--data-set cub|aircraft``, see ``data.py``). Loss: per-level cross-entropy
(soft targets under mixup, label smoothing otherwise) + ``--globalkl`` L_gk +
``--cam-consist`` L_cons. Validation: top-1 / top-5 per level, full-path
accuracy (monitored), TICE, consistency ratio, CAM IoU, each epoch in
``log.csv``; at the end ``predictions.csv`` (one row per validation image,
from the best checkpoint).

The published recipe, mapped onto the engine:
- optimizer, cosine schedule with warm-up, AMP, DDP, distributed evaluation:
  the engine's; this task sets the published defaults (AdamW, lr 5e-4,
  weight decay 0.05, 5 warm-up epochs from 1e-6, min lr 1e-5, no clipping,
  drop path 0.1).
- lr scaled by the global batch: the constructor sets ``args.lr = lr *
  batch_size * accumulate * WORLD_SIZE / 512`` (torchrun's WORLD_SIZE; the
  published rule, with accumulation counted in the batch), before the engine
  builds the optimizer; ``--unscale-lr`` keeps ``--lr``. ``args.base_lr``
  records the unscaled value.
- mixup / cutmix (0.8 / 1.0) with label smoothing 0.1: ``train_step`` mixes
  each process's batch with one lambda and pairing for every level
  (``mixup.py``).
- repeated augmentation over several processes (DeiT's RASampler, timm's
  ``RepeatAugSampler``): ``train_sampler``; ``--no-repeated-aug`` for the
  engine's ``DistributedSampler``.
- EMA (``--model-ema``, decay 0.99996): kept by the task (``ema.py``),
  evaluated each epoch (``ema_*`` columns) and saved in the checkpoint's
  ``task_state["model_ema"]``.
"""

from __future__ import annotations

import argparse
import csv
import os

import torch

from ..._cli import (
    CLIError,
    check_dir,
    check_file,
    finite_non_negative_float,
    image_side,
    parse_ints,
    positive_int,
)
from ..distributed import ShardSampler, World, gather_rows, launched_by_torchrun, sum_across
from ..engine import Task
from .data import (
    SyntheticHierarchical,
    WithSegments,
    aircraft,
    aircraft_hierarchy,
    cub,
    cub_hierarchy,
    cub_species_folders,
    image_folder,
    synthetic_hierarchy,
)
from .ema import TaskEma
from .hierarchy import Hierarchy
from .losses import CAM_PAIRS, hierarchical_loss
from .metrics import HierarchyMetrics, cam_iou, path_checks

VARIANTS = ("cast_small", "cast_small_deep", "cast_base", "cast_base_deep")
MODELS = VARIANTS + tuple(f"{v}_cam" for v in VARIANTS)
STEM_STRIDE = 8  # the ConvStem's: the token grid is img_size / 8
# The published --data-set names are accepted too.
DATA_SETS = {
    "folder": "folder",
    "cub": "cub",
    "aircraft": "aircraft",
    "BIRD-HIER-SUPERPIXEL": "cub",
    "AIR-HIER-SUPERPIXEL": "aircraft",
}
REFERENCE_BATCH = 512  # the published linear lr scaling: lr * global batch / 512


def add_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("data")
    g.add_argument("--data", "--data-path", dest="data", help="dataset root (default: synthetic data)")
    g.add_argument(
        "--data-set",
        default="folder",
        choices=list(DATA_SETS),
        help="folder: ROOT/train, ROOT/val ImageFolders with --hierarchy; cub: ROOT/{train,test}/NNN.Name; "
        "aircraft: ROOT/fgvc-aircraft-2013b (published layouts and hierarchies)",
    )
    g.add_argument("--hierarchy", help="CSV: fine,parent[,grandparent] per line (with --data-set folder)")
    g.add_argument(
        "--synthetic-levels",
        default="8,4,2",
        type=_synthetic_levels,
        help="classes per level of the synthetic set, fine to coarse (each level fewer than the one before)",
    )
    g.add_argument("--synthetic-size", type=positive_int, default=256, help="synthetic training images")
    g.add_argument(
        "--img-size",
        "--input-size",
        dest="img_size",
        type=image_side,
        default=224,
        help="a multiple of 8",
    )
    g.add_argument("--num-segments", "--num-superpixels", dest="num_segments", type=int, default=196)
    g.add_argument("--max-segments", type=int, default=256, help="superpixel ids are merged below this bound")
    g.add_argument(
        "--fixed-tokens",
        action="store_true",
        help="always --max-segments segment tokens (static shapes, each image independent of its batch); "
        "published: as many as the batch's largest superpixel id + 1",
    )
    g.add_argument("--superpixels", default="seeds", choices=["seeds", "slic"])
    g.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="timm auto-augment policy ('' for none)")
    g.add_argument("--color-jitter", type=float, default=0.3)
    g.add_argument("--reprob", type=float, default=0.25, help="random erasing probability")
    g.add_argument("--remode", default="pixel")
    g.add_argument("--recount", type=int, default=1)
    g.add_argument("--train-interpolation", default="bicubic")
    g.add_argument("--eval-crop-ratio", type=float, default=0.875)

    g = ap.add_argument_group("model")
    g.add_argument("--model", default="cast_small", help=f"one of {', '.join(MODELS)}")
    g.add_argument("--finetune", help="a published CAST / H-CAST checkpoint (or a state dict) to start from")
    g.add_argument("--embed-dim", type=int, default=None)
    g.add_argument("--depths", default=None, help="blocks per stage, e.g. 3,3,3,2")
    g.add_argument("--num-heads", type=int, default=None)
    g.add_argument("--num-clusters", default=None, help="graph-pooling clusters per stage, e.g. 64,32,16,8")
    g.add_argument("--drop", type=float, default=0.0, help="dropout (timm 0.4 drop_rate)")
    g.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    g.add_argument("--pool-drop", type=float, default=0.1, help="dropout in the graph poolings' fc1")

    g = ap.add_argument_group("loss")
    g.add_argument("--cam-consist", "--cam_consist", action="store_true", help="add the CAM consistency loss")
    g.add_argument("--cam-weight", "--cam_weight", type=finite_non_negative_float, default=0.1)
    g.add_argument(
        "--cam-pairs", choices=CAM_PAIRS, default="first", help="first: species/family only; adjacent: every pair"
    )
    g.add_argument("--globalkl", action="store_true", help="add H-CAST's label-hierarchy KL term L_gk")
    g.add_argument("--gk-weight", "--gk_weight", type=float, default=0.5)
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing")
    g.add_argument("--mixup", type=float, default=0.8, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, default=1.0, help="cutmix alpha (0: off)")
    g.add_argument("--cutmix-minmax", type=float, nargs=2, default=None)
    g.add_argument("--mixup-prob", type=float, default=1.0)
    g.add_argument("--mixup-switch-prob", type=float, default=0.5)
    g.add_argument("--mixup-mode", default="batch", choices=["batch", "pair", "elem"])

    g = ap.add_argument_group("recipe")
    g.add_argument("--model-ema", action="store_true", help="keep, evaluate and save an EMA of the weights")
    g.add_argument("--model-ema-decay", type=float, default=0.99996)
    g.add_argument("--unscale-lr", action="store_true", help="use --lr as is (default: lr * global batch / 512)")
    g.add_argument(
        "--repeated-aug",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="several processes: DeiT's repeated-augmentation sampler (3 augmented copies of each image per epoch "
        "over the processes), as published",
    )
    ap.set_defaults(**ENGINE_DEFAULTS)


def _synthetic_levels(text: str) -> str:
    """``--synthetic-levels`` checked when parsed: positive integers, fine
    to coarse, each level with fewer classes than the one before (a coarse
    level groups the finer one's classes)."""
    levels = parse_ints(text, "--synthetic-levels")
    if not levels:
        raise CLIError("--synthetic-levels: give at least one level")
    for fine, coarse in zip(levels, levels[1:]):
        if coarse >= fine:
            raise CLIError(
                f"--synthetic-levels {text}: each level, fine to coarse, needs fewer classes than the one "
                f"before ({coarse} after {fine})"
            )
    return text


# The published recipe's values of the engine's flags (main_suppix_hier.py;
# 100 epochs as its README runs).
ENGINE_DEFAULTS = dict(
    epochs=100,
    batch_size=64,
    lr=5e-4,
    warmup_epochs=5,
    min_lr=1e-5,
    clip_grad=0.0,
    out="runs/hcast",
    patience=0,
)


class HierarchicalTask(Task):
    name = "hierarchical"
    monitor = "full_path_acc"
    # Every trainable parameter reaches the loss; the last pooling, whose
    # output nothing reads, is frozen (published).

    def __init__(self, args):
        self.args = args
        self.data_set = DATA_SETS[args.data_set]
        self.hierarchy = self._hierarchy(args)
        self.levels = len(self.hierarchy.num_classes)
        if self.levels > 3:
            raise CLIError(f"the hierarchy has {self.levels} levels; H-CAST has heads for 1 to 3")
        if args.cam_consist and self.levels < 2:
            raise CLIError("--cam-consist needs at least two levels in the hierarchy")
        self.model_name = args.model
        self.model_config = self._model_config(args)
        self.mixup = self._mixup(args, self.hierarchy.num_classes)
        self.ema = TaskEma(args.model_ema_decay) if args.model_ema else None
        if args.finetune:
            check_file(args.finetune, "--finetune")
        if args.epochs == 0:
            # Evaluation only (the published --eval): predictions.csv from the
            # --finetune / --resume weights; no schedule over zero epochs.
            args.sched = "none"
            if not (args.finetune or args.resume) and int(os.environ.get("RANK", "0")) == 0:
                print("--epochs 0 without --finetune or --resume: evaluating randomly initialised weights", flush=True)
        self._scale_lr(args)
        self._val = None

    # -- configuration ------------------------------------------------------------

    def _hierarchy(self, args) -> Hierarchy:
        if not args.data:
            # Checked when parsed (_synthetic_levels).
            return synthetic_hierarchy(parse_ints(args.synthetic_levels, "--synthetic-levels"))
        check_dir(args.data, "--data")
        if self.data_set != "folder" and args.hierarchy:
            raise CLIError(f"--hierarchy: --data-set {args.data_set} brings its own (published) hierarchy")
        try:
            if self.data_set == "cub":
                return cub_hierarchy(cub_species_folders(args.data))
            if self.data_set == "aircraft":
                return aircraft_hierarchy(args.data)
        except (FileNotFoundError, ValueError) as e:
            raise CLIError(f"--data {args.data}: {e}") from None
        path = check_file(args.hierarchy, "--hierarchy (with --data)")
        try:
            return Hierarchy.from_file(path)
        except ValueError as e:
            raise CLIError(f"--hierarchy {e}") from None

    def _model_config(self, args) -> dict:
        if args.model not in MODELS:
            raise CLIError(f"--model {args.model}: not a hierarchical model (one of {', '.join(MODELS)})")
        if args.img_size <= 0 or args.img_size % STEM_STRIDE:
            raise CLIError(
                f"--img-size {args.img_size}: must be a positive multiple of the stem's stride {STEM_STRIDE}"
            )
        if args.num_segments <= 0 or args.max_segments <= 0:
            raise CLIError("--num-segments and --max-segments must be positive")
        for flag, value in (("--drop", args.drop), ("--drop-path", args.drop_path), ("--pool-drop", args.pool_drop)):
            if not 0 <= value < 1:
                raise CLIError(f"{flag} {value}: must be in [0, 1)")
        depths = parse_ints(args.depths, "--depths")
        clusters = parse_ints(args.num_clusters, "--num-clusters")
        for flag, text, value in (("--depths", args.depths, depths), ("--num-clusters", args.num_clusters, clusters)):
            if value is not None and len(value) != 4:
                raise CLIError(f"{flag} {text}: CAST has four stages: give one entry per stage")
        first = (clusters or (64,))[0]
        cells = (args.img_size // STEM_STRIDE) ** 2
        if first > args.max_segments:
            raise CLIError(
                f"--num-clusters {args.num_clusters or '64,32,16,8'}: {first} clusters from at most "
                f"{args.max_segments} segment tokens (--max-segments)"
            )
        if first > cells:
            raise CLIError(
                f"--num-clusters {args.num_clusters or '64,32,16,8'}: {first} clusters from at most {cells} "
                f"segment tokens (the {args.img_size // STEM_STRIDE}x{args.img_size // STEM_STRIDE} grid of "
                f"--img-size {args.img_size})"
            )
        if clusters and any(b > a for a, b in zip(clusters, clusters[1:])):
            raise CLIError(f"--num-clusters {args.num_clusters}: each stage must pool to at most the previous count")
        embed = args.embed_dim or (768 if "base" in args.model else 384)
        heads = args.num_heads or 12
        if embed % heads or embed % 8:
            raise CLIError(f"--embed-dim {embed}: must be divisible by --num-heads {heads} and by 8")
        config = dict(
            num_classes=tuple(self.hierarchy.num_classes),
            img_size=args.img_size,
            drop_rate=args.drop,
            drop_path_rate=args.drop_path,
            pool_drop_rate=args.pool_drop,
        )
        if args.fixed_tokens:
            config["num_segments"] = args.max_segments
        for key, value in (
            ("embed_dim", args.embed_dim),
            ("depths", depths),
            ("num_heads", args.num_heads),
            ("num_clusters", clusters),
        ):
            if value is not None:
                config[key] = value
        return config

    @staticmethod
    def _mixup(args, num_classes):
        if not 0 <= args.smoothing < 1:
            raise CLIError(f"--smoothing {args.smoothing}: must be in [0, 1)")
        if args.mixup < 0 or args.cutmix < 0:
            raise CLIError("--mixup and --cutmix are Beta alphas: must be >= 0 (0: off)")
        if not 0 <= args.mixup_prob <= 1 or not 0 <= args.mixup_switch_prob <= 1:
            raise CLIError("--mixup-prob and --mixup-switch-prob must be in [0, 1]")
        if args.cutmix_minmax is not None and not 0 < args.cutmix_minmax[0] < args.cutmix_minmax[1] <= 1:
            raise CLIError(f"--cutmix-minmax {args.cutmix_minmax}: need 0 < min < max <= 1")
        if not (args.mixup > 0 or args.cutmix > 0 or args.cutmix_minmax is not None):
            return None
        from .mixup import HierarchicalMixup  # timm's Mixup: imported only when training

        return HierarchicalMixup(
            num_classes,
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
            cutmix_minmax=args.cutmix_minmax,
            prob=args.mixup_prob,
            switch_prob=args.mixup_switch_prob,
            mode=args.mixup_mode,
            label_smoothing=args.smoothing,
        )

    @staticmethod
    def _scale_lr(args) -> None:
        args.base_lr = args.lr
        if args.unscale_lr:
            return
        world = int(os.environ["WORLD_SIZE"]) if launched_by_torchrun() else 1
        args.lr = args.lr * args.batch_size * args.accumulate * world / REFERENCE_BATCH

    # -- the engine's Task protocol -----------------------------------------------

    def build_model(self) -> torch.nn.Module:
        import timm

        from ... import models  # noqa: F401  (registers the timm names)

        model = timm.create_model(self.model_name, **self.model_config)
        if self.args.finetune:
            try:
                model.load_pretrained(self.args.finetune)
            except (ValueError, FileNotFoundError) as e:
                raise CLIError(f"--finetune {self.args.finetune}: {e}") from None
        return model

    def datasets(self):
        from ...superpixels import Superpixels

        args, h = self.args, self.hierarchy
        sp = Superpixels(args.num_segments, args.superpixels, args.max_segments)
        if not args.data:
            train = SyntheticHierarchical(h, args.img_size, args.synthetic_size, seed=args.seed)
            val = SyntheticHierarchical(h, args.img_size, max(args.synthetic_size // 4, 8), seed=args.seed + 1)
            normalized = False
        else:
            build = {
                "folder": lambda split, t: image_folder(os.path.join(args.data, split), h, args.img_size, t, args),
                "cub": lambda split, t: cub(args.data, t, args.img_size, args),
                "aircraft": lambda split, t: aircraft(args.data, t, args.img_size, args),
            }[self.data_set]
            try:
                train, val = build("train", True), build("val", False)
            except (FileNotFoundError, ValueError) as e:
                raise CLIError(f"--data {args.data}: {e}") from None
            normalized = True
        self._val = WithSegments(val, sp, normalized)
        return WithSegments(train, sp, normalized), self._val

    def train_sampler(self, dataset, world: World, seed: int):
        if world.distributed and self.args.repeated_aug:
            from timm.data.distributed_sampler import RepeatAugSampler

            return RepeatAugSampler(dataset, world.size, world.rank, shuffle=True, num_repeats=3)
        return None  # the engine's DistributedSampler (one process: a shuffle)

    def _forward(self, model, images, segments):
        from ...models import split_outputs

        return split_outputs(model(images, segments, return_intermediates=True), self.levels)

    def _loss(self, bare, logits, inter, targets, smoothing):
        a = self.args
        return hierarchical_loss(
            bare.heads,
            logits,
            inter,
            targets,
            self.hierarchy.num_classes,
            smoothing=smoothing,
            gk_weight=a.gk_weight if a.globalkl else 0.0,
            cam_weight=a.cam_weight if a.cam_consist else 0.0,
            cam_pairs=a.cam_pairs,
        )

    def train_step(self, model, bare, batch, device):
        if self.ema is not None:
            self.ema.attach(bare)
        images, segments, fine = (t.to(device, non_blocking=True) for t in batch)
        targets = self.hierarchy.labels(fine)
        smoothing = self.args.smoothing
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
            smoothing = 0.0  # already in the mixed targets
        logits, inter = self._forward(model, images, segments)
        return self._loss(bare, logits, inter, targets, smoothing), fine.numel()

    def _evaluate(self, model, heads, loader, device, world: World, rows: list | None = None):
        model.eval()
        metrics = HierarchyMetrics(self.hierarchy)
        loss = 0.0
        for batch in loader:
            images, segments, fine = (t.to(device, non_blocking=True) for t in batch)
            labels = self.hierarchy.labels(fine)
            logits, inter = self._forward(model, images, segments)
            loss += float(self._loss(model, logits, inter, labels, 0.0)["loss"]) * fine.numel()
            metrics.update(logits, labels, cam_iou(heads, logits, inter) if self.levels > 1 else None)
            if rows is not None:
                rows.append(self._rows(logits, labels))
        counts = sum_across({**metrics.counts(), "loss": loss}, world, device)
        out = HierarchyMetrics.from_counts(counts)
        out["loss"] = counts["loss"] / max(counts["n"], 1)
        return out

    def evaluate(self, bare, loader, device, world: World) -> dict[str, float]:
        out = self._evaluate(bare, bare.heads, loader, device, world)
        if self.ema is not None and self.ema.module is not None:
            ema = self.ema.module
            out.update({f"ema_{k}": v for k, v in self._evaluate(ema, ema.heads, loader, device, world).items()})
        return out

    def after_step(self, bare) -> None:
        if self.ema is not None:
            self.ema.update(bare)

    def load_state(self, state: dict) -> None:
        if self.ema is not None and state.get("model_ema") is not None:
            self.ema.state = state["model_ema"]

    def state(self) -> dict:
        a = self.args
        out = {
            "hierarchy": {"names": self.hierarchy.names, "parents": [p.tolist() for p in self.hierarchy.parents]},
            "superpixels": {"num_segments": a.num_segments, "method": a.superpixels, "max_segments": a.max_segments},
            "data_set": self.data_set,
        }
        if self.ema is not None and self.ema.state_dict() is not None:
            out["model_ema"] = self.ema.state_dict()
        return out

    # -- predictions ----------------------------------------------------------------

    def _rows(self, logits, labels) -> torch.Tensor:
        """Per sample: for each level true class, predicted class, its
        probability; then full path right, path consistent with the tree."""
        preds = [lg.argmax(1) for lg in logits]
        cols = []
        for lg, y, p in zip(logits, labels, preds):
            prob = lg.float().softmax(1).gather(1, p[:, None])[:, 0]
            cols += [y.double(), p.double(), prob.double()]
        right = torch.stack([p == y for p, y in zip(preds, labels)]).all(0)
        cols += [right.double(), path_checks(self.hierarchy, preds).all(1).double()]
        return torch.stack(cols, 1)

    def finish(self, bare, device, world: World, out_dir: str):
        """``predictions.csv`` over the validation set, one row per image, with
        the weights the engine ends with: best.pth's when the run made one."""
        if self._val is None:
            self.datasets()
        sampler = ShardSampler(len(self._val), world)
        loader = torch.utils.data.DataLoader(
            self._val, self.args.batch_size, sampler=sampler, num_workers=self.args.workers
        )
        rows = []
        with torch.no_grad():
            final = self._evaluate(bare, bare.heads, loader, device, world, rows)
        mine = torch.cat(rows) if rows else torch.zeros(0, 3 * self.levels + 2, dtype=torch.float64)
        index = torch.tensor(list(sampler.indices), dtype=torch.float64)[:, None]
        table = gather_rows(torch.cat([index, mine.cpu()], 1).to(device), world).cpu()
        if world.main:
            os.makedirs(out_dir, exist_ok=True)
            self._write_predictions(os.path.join(out_dir, "predictions.csv"), table[table[:, 0].argsort()])
            print(
                "final validation (best.pth when the run made one): "
                + " ".join(f"{k} {v:.4f}" for k, v in final.items() if not k.startswith("loss")),
                flush=True,
            )
        return None

    def _write_predictions(self, path: str, table: torch.Tensor) -> None:
        names = self.hierarchy.names
        header = ["index"]
        for l in range(self.levels):
            header += [f"l{l}_true", f"l{l}_true_name", f"l{l}_pred", f"l{l}_pred_name", f"l{l}_prob"]
        header += ["full_path_correct", "consistent"]
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for r in table.tolist():
                row = [int(r[0])]
                for l in range(self.levels):
                    y, p, prob = int(r[1 + 3 * l]), int(r[2 + 3 * l]), r[3 + 3 * l]
                    row += [y, names[l][y], p, names[l][p], f"{prob:.6f}"]
                row += [int(r[-2]), int(r[-1])]
                w.writerow(row)
