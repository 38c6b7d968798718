"""The training CLI: ``python -m hcam_ops.train [--cam-consist] [--globalkl] ...``.

Trains an H-CAST model on an ImageFolder tree with a hierarchy file, or on a
synthetic hierarchical set made on the fly (the default, no download). AMP,
gradient clipping, a cosine schedule with warm-up, checkpoints (last and best
by full-path accuracy), a progress bar, and a per-epoch log (CSV) with
``cam_loss`` as its own column.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time

import timm
import torch
from tqdm import tqdm

from .. import models  # noqa: F401  (registers the timm names)
from ..superpixels import Superpixels, WithSuperpixels
from .data import SyntheticHierarchical, image_folder, synthetic_hierarchy
from .hierarchy import Hierarchy
from .losses import hierarchical_loss
from .metrics import HierarchyMetrics, cam_iou

LOG_COLUMNS = ["epoch", "lr", "loss", "ce", "gk_loss", "cam_loss", "val_acc_l0", "val_full_path_acc",
               "val_consistency", "val_cam_iou", "seconds"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hcam_ops.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hierarchical", choices=["hierarchical", "multilabel"],
                    help="multilabel: the ArcFace-PSA-Swin task (see --task multilabel --help)")
    ap.add_argument("--data", help="ImageFolder root with train/ and val/ (default: synthetic data)")
    ap.add_argument("--hierarchy", help="CSV: fine,parent[,grandparent] per line (with --data)")
    ap.add_argument("--synthetic-levels", default="8,4,2", help="classes per level of the synthetic set")
    ap.add_argument("--synthetic-size", type=int, default=256, help="synthetic training images")
    ap.add_argument("--model", default="hcast_small")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--num-segments", type=int, default=196, help="superpixels per image (target)")
    ap.add_argument("--max-segments", type=int, default=256, help="the model's token budget")
    ap.add_argument("--superpixels", default="seeds", choices=["seeds", "slic"])
    ap.add_argument("--embed-dim", type=int, default=None)
    ap.add_argument("--depths", default=None, help="e.g. 3,3,3,2")
    ap.add_argument("--num-heads", type=int, default=None)
    ap.add_argument("--num-clusters", default=None, help="e.g. 64,32,16,8")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--warmup-epochs", type=float, default=1.0)
    ap.add_argument("--clip-grad", type=float, default=1.0, help="max gradient norm (0: off)")
    ap.add_argument("--amp", action="store_true", help="autocast (float16 on CUDA, bfloat16 on CPU)")
    ap.add_argument("--cam-consist", action="store_true", help="add the CAM consistency loss")
    ap.add_argument("--cam-weight", type=float, default=0.1)
    ap.add_argument("--globalkl", action="store_true", help="add the label-hierarchy KL term")
    ap.add_argument("--gk-weight", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="runs/hcast")
    ap.add_argument("--resume", help="a checkpoint to continue from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def _ints(text):
    return tuple(int(v) for v in text.split(",")) if text else None


def build_data(args):
    if args.data:
        if not args.hierarchy:
            raise SystemExit("--data needs --hierarchy")
        hierarchy = Hierarchy.from_file(args.hierarchy)
        train = image_folder(os.path.join(args.data, "train"), hierarchy, args.img_size, True)
        val = image_folder(os.path.join(args.data, "val"), hierarchy, args.img_size, False)
    else:
        hierarchy = synthetic_hierarchy(_ints(args.synthetic_levels))
        train = SyntheticHierarchical(hierarchy, args.img_size, args.synthetic_size, seed=args.seed)
        val = SyntheticHierarchical(hierarchy, args.img_size, max(args.synthetic_size // 4, 8), seed=args.seed + 1)
    sp = Superpixels(args.num_segments, args.superpixels, args.max_segments)
    return hierarchy, WithSuperpixels(train, sp), WithSuperpixels(val, sp)


def build_model(args, hierarchy):
    kw = dict(num_classes=tuple(hierarchy.num_classes), img_size=args.img_size, num_segments=args.max_segments)
    for key, value in (("embed_dim", args.embed_dim), ("depths", _ints(args.depths)),
                       ("num_heads", args.num_heads), ("num_clusters", _ints(args.num_clusters))):
        if value is not None:
            kw[key] = value
    return timm.create_model(args.model, **kw)


def cosine_lr(step, total, warmup, base):
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def run_epoch(model, loader, hierarchy, args, device, optimizer=None, scaler=None, schedule=None):
    train = optimizer is not None
    model.train(train)
    metrics = HierarchyMetrics(hierarchy)
    sums, n = {}, 0
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    bar = tqdm(loader, desc="train" if train else "val", leave=False, disable=args.no_progress)
    for images, segments, fine in bar:
        images, segments, fine = images.to(device), segments.to(device), fine.to(device)
        labels = hierarchy.labels(fine)
        if train:
            for group in optimizer.param_groups:
                group["lr"] = schedule()
        with torch.set_grad_enabled(train), torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            logits, inter = model(images, segments, return_intermediates=True)
            parts = hierarchical_loss(model, logits, inter, labels, hierarchy,
                                      args.cam_weight if args.cam_consist else 0.0,
                                      args.gk_weight if args.globalkl else 0.0)
        if train:
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(parts["loss"]).backward()
            if args.clip_grad:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            scaler.step(optimizer)
            scaler.update()
        else:
            metrics.update(logits, labels, cam_iou(model, logits, inter) if len(logits) > 1 else None)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * fine.numel()
        n += fine.numel()
        bar.set_postfix(loss=f"{sums['loss'] / n:.4f}")
    return {k: v / max(n, 1) for k, v in sums.items()}, metrics.compute()


def main(argv=None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--task" in argv and argv[argv.index("--task") + 1] == "multilabel":
        from .multilabel import main as multilabel_main

        return multilabel_main(argv)
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    hierarchy, train_set, val_set = build_data(args)
    if args.cam_consist and len(hierarchy.num_classes) < 2:
        raise SystemExit("--cam-consist needs at least two levels")
    model = build_model(args, hierarchy).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(train_set, args.batch_size, shuffle=True, num_workers=args.workers,
                                               drop_last=len(train_set) > args.batch_size)
    val_loader = torch.utils.data.DataLoader(val_set, args.batch_size, num_workers=args.workers)
    os.makedirs(args.out, exist_ok=True)
    start, best = 0, -1.0
    if args.resume:
        ckpt = torch.load(args.resume, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, best = ckpt["epoch"] + 1, ckpt.get("best", -1.0)
    steps_per_epoch = max(len(train_loader), 1)
    total, warmup = args.epochs * steps_per_epoch, int(args.warmup_epochs * steps_per_epoch)
    step = [start * steps_per_epoch]

    def schedule():
        lr = cosine_lr(step[0], total, warmup, args.lr)
        step[0] += 1
        return lr

    log_path = os.path.join(args.out, "log.csv")
    if not args.resume or not os.path.exists(log_path):
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(LOG_COLUMNS)
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=1)
    print(" ".join(f"{c:>12}" for c in LOG_COLUMNS))
    for epoch in range(start, args.epochs):
        t0 = time.time()
        losses, _ = run_epoch(model, train_loader, hierarchy, args, device, optimizer, scaler, schedule)
        with torch.no_grad():
            _, val = run_epoch(model, val_loader, hierarchy, args, device)
        row = dict(epoch=epoch, lr=optimizer.param_groups[0]["lr"], **{k: losses.get(k, 0.0) for k in ("loss", "ce", "gk_loss", "cam_loss")},
                   val_acc_l0=val["acc_l0"], val_full_path_acc=val["full_path_acc"], val_consistency=val["consistency"],
                   val_cam_iou=val["cam_iou"], seconds=time.time() - t0)
        with open(log_path, "a", newline="") as f:
            csv.writer(f).writerow([row[c] for c in LOG_COLUMNS])
        print(" ".join(f"{row[c]:>12.5g}" if isinstance(row[c], float) else f"{row[c]:>12}" for c in LOG_COLUMNS))
        ckpt = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch, best=best,
                    hierarchy=hierarchy.names, metrics=val)
        torch.save(ckpt, os.path.join(args.out, "last.pth"))
        if val["full_path_acc"] > best:
            best = ckpt["best"] = val["full_path_acc"]
            torch.save(ckpt, os.path.join(args.out, "best.pth"))
    return best
