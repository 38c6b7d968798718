"""The hierarchical task (``python -m hcam_ops.train hierarchical``): an H-CAST
model on an ImageFolder tree with a hierarchy file, or on a synthetic
hierarchical set made on the fly (the default, no download). The loss is
cross-entropy per level, plus the label-hierarchy KL (``--globalkl``) and
the CAM consistency on ``centroid1`` (``--cam-consist``); validation reports
accuracy per level, full-path accuracy (the monitored metric), the
hierarchical consistency ratio and the fine/coarse CAM IoU."""

from __future__ import annotations

import argparse
import os

import torch

from ..distributed import World, sum_across
from ..errors import CLIError, check_dir, check_file, parse_ints
from .data import SyntheticHierarchical, image_folder, synthetic_hierarchy
from .hierarchy import Hierarchy
from .losses import hierarchical_loss
from .metrics import HierarchyMetrics, cam_iou

MODELS = ("hcast_small", "hcast_base", "cast_small_cam", "cast_base_cam")
STEM_STRIDE = 8  # the ConvStem's: the token grid is img_size / 8


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", help="ImageFolder root with train/ and val/ (default: synthetic data)")
    ap.add_argument("--hierarchy", help="CSV: fine,parent[,grandparent] per line (with --data)")
    ap.add_argument("--synthetic-levels", default="8,4,2", help="classes per level of the synthetic set")
    ap.add_argument("--synthetic-size", type=int, default=256, help="synthetic training images")
    ap.add_argument("--model", default="hcast_small", help=f"one of {', '.join(MODELS)}")
    ap.add_argument("--img-size", type=int, default=224, help=f"a multiple of {STEM_STRIDE}")
    ap.add_argument("--num-segments", type=int, default=196, help="superpixels per image (target)")
    ap.add_argument("--max-segments", type=int, default=256, help="the model's token budget")
    ap.add_argument("--superpixels", default="seeds", choices=["seeds", "slic"])
    ap.add_argument("--embed-dim", type=int, default=None)
    ap.add_argument("--depths", default=None, help="blocks per stage, e.g. 3,3,3,2")
    ap.add_argument("--num-heads", type=int, default=None)
    ap.add_argument("--num-clusters", default=None, help="graph-pooling clusters per stage, e.g. 64,32,16,8")
    ap.add_argument("--cam-consist", "--cam_consist", action="store_true", help="add the CAM consistency loss")
    ap.add_argument("--cam-weight", "--cam_weight", type=float, default=0.1)
    ap.add_argument("--globalkl", action="store_true", help="add the label-hierarchy KL term")
    ap.add_argument("--gk-weight", "--gk_weight", type=float, default=1.0)
    ap.set_defaults(epochs=30, batch_size=64, lr=5e-4, out="runs/hcast", patience=0)


class HierarchicalTask:
    name = "hierarchical"
    monitor = "full_path_acc"
    # The last graph pooling feeds nothing the class token reads afterwards.
    find_unused_parameters = True

    def __init__(self, args):
        self.args = args
        self.hierarchy = self._hierarchy(args)
        if args.cam_consist and len(self.hierarchy.num_classes) < 2:
            raise CLIError("--cam-consist needs at least two levels in the hierarchy")
        self.model_name = args.model
        self.model_config = self._model_config(args)

    @staticmethod
    def _hierarchy(args) -> Hierarchy:
        if args.data:
            check_dir(args.data, "--data")
            path = check_file(args.hierarchy, "--hierarchy (with --data)")
            try:
                return Hierarchy.from_file(path)
            except ValueError as e:
                raise CLIError(f"--hierarchy {e}") from None
        levels = parse_ints(args.synthetic_levels, "--synthetic-levels")
        if len(levels) < 1:
            raise CLIError("--synthetic-levels: give at least one level")
        return synthetic_hierarchy(levels)

    def _model_config(self, args) -> dict:
        if args.model not in MODELS:
            raise CLIError(f"--model {args.model}: not a hierarchical model (one of {', '.join(MODELS)})")
        if args.img_size <= 0 or args.img_size % STEM_STRIDE:
            raise CLIError(
                f"--img-size {args.img_size}: must be a positive multiple of the stem's stride {STEM_STRIDE}"
            )
        if args.num_segments <= 0 or args.max_segments <= 0:
            raise CLIError("--num-segments and --max-segments must be positive")
        config = dict(
            num_classes=tuple(self.hierarchy.num_classes), img_size=args.img_size, num_segments=args.max_segments
        )
        depths = parse_ints(args.depths, "--depths")
        clusters = parse_ints(args.num_clusters, "--num-clusters")
        if clusters is not None:
            if clusters[0] > args.max_segments:
                raise CLIError(
                    f"--num-clusters {args.num_clusters}: {clusters[0]} clusters from at most "
                    f"{args.max_segments} segment tokens (--max-segments)"
                )
            if any(b > a for a, b in zip(clusters, clusters[1:])):
                raise CLIError(
                    f"--num-clusters {args.num_clusters}: each stage must pool to at most the previous count"
                )
        stages = len(depths or clusters or (3, 3, 3, 2))
        if len(clusters or (64, 32, 16, 8)) != stages:
            raise CLIError(f"--num-clusters needs one entry per stage ({stages}, as --depths)")
        if clusters is None and args.max_segments < 64:
            raise CLIError(
                f"--max-segments {args.max_segments}: the default first pooling keeps 64 clusters; give --num-clusters"
            )
        embed = args.embed_dim or (768 if "base" in args.model else 384)
        heads = args.num_heads or 12
        if embed % heads or embed % 8:
            raise CLIError(f"--embed-dim {embed}: must be divisible by --num-heads {heads} and by 8")
        for key, value in (
            ("embed_dim", args.embed_dim),
            ("depths", depths),
            ("num_heads", args.num_heads),
            ("num_clusters", clusters),
        ):
            if value is not None:
                config[key] = value
        return config

    def build_model(self) -> torch.nn.Module:
        import timm

        from ... import models  # noqa: F401  (registers the timm names)

        return timm.create_model(self.model_name, **self.model_config)

    def datasets(self):
        from ...superpixels import Superpixels, WithSuperpixels

        args, h = self.args, self.hierarchy
        if args.data:
            try:
                train = image_folder(os.path.join(args.data, "train"), h, args.img_size, True)
                val = image_folder(os.path.join(args.data, "val"), h, args.img_size, False)
            except (FileNotFoundError, ValueError) as e:
                raise CLIError(f"--data {args.data}: {e}") from None
        else:
            train = SyntheticHierarchical(h, args.img_size, args.synthetic_size, seed=args.seed)
            val = SyntheticHierarchical(h, args.img_size, max(args.synthetic_size // 4, 8), seed=args.seed + 1)
        sp = Superpixels(args.num_segments, args.superpixels, args.max_segments)
        return WithSuperpixels(train, sp), WithSuperpixels(val, sp)

    def train_sampler(self, dataset, world: World, seed: int):
        return None  # the engine's DistributedSampler

    def _forward(self, model, bare, batch, device):
        images, segments, fine = (t.to(device, non_blocking=True) for t in batch)
        labels = self.hierarchy.labels(fine)
        logits, inter = model(images, segments, return_intermediates=True)
        a = self.args
        parts = hierarchical_loss(
            bare,
            logits,
            inter,
            labels,
            self.hierarchy,
            a.cam_weight if a.cam_consist else 0.0,
            a.gk_weight if a.globalkl else 0.0,
        )
        return parts, logits, inter, labels

    def train_step(self, model, bare, batch, device):
        parts, *_ = self._forward(model, bare, batch, device)
        return parts, batch[2].numel()

    def evaluate(self, bare, loader, device, world: World) -> dict[str, float]:
        bare.eval()
        metrics = HierarchyMetrics(self.hierarchy)
        loss = 0.0
        for batch in loader:
            parts, logits, inter, labels = self._forward(bare, bare, batch, device)
            loss += float(parts["loss"]) * labels[0].numel()
            metrics.update(logits, labels, cam_iou(bare, logits, inter) if len(logits) > 1 else None)
        counts = sum_across({**metrics.counts(), "loss": loss}, world, device)
        out = HierarchyMetrics.from_counts(counts)
        out["loss"] = counts["loss"] / max(counts["n"], 1)
        return out

    def state(self) -> dict:
        a = self.args
        return {
            "hierarchy": {"names": self.hierarchy.names, "parents": [p.tolist() for p in self.hierarchy.parents]},
            "superpixels": {"num_segments": a.num_segments, "method": a.superpixels, "max_segments": a.max_segments},
        }

    def finish(self, bare, device, world: World, out_dir: str):
        return None
