"""The multi-label task of ``python -m hcam_ops.train --task multilabel``:
an ArcFace-PSA-Swin (or the Swin + focal baseline) on a CSV of one-hot
labels, or on a synthetic multi-label set made on the fly (the default).
AMP, gradient accumulation and clipping, minority oversampling, early
stopping on validation F1, checkpoints, a progress bar; at the end the
per-class thresholds are searched on validation and applied unchanged to
the test split, whose report is printed and plotted."""

from __future__ import annotations

import argparse
import csv
import json
import os

import timm
import torch
from tqdm import tqdm

from .. import models
from ..metrics import format_table, multilabel_report, predict_tta, save_plots, search_thresholds
from .multilabel_data import CsvMultiLabel, SyntheticMultiLabel, eval_transform, oversample_weights, train_transform


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hcam_ops.train --task multilabel", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="multilabel", choices=["multilabel"])
    ap.add_argument("--train-csv"), ap.add_argument("--val-csv"), ap.add_argument("--test-csv")
    ap.add_argument("--images", help="folder the CSV image paths are relative to")
    ap.add_argument("--classes", default=",".join(models.LEAF_CLASSES))
    ap.add_argument("--synthetic-size", type=int, default=256)
    ap.add_argument("--model", default="arc_psa_swin_tiny")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--backbone-checkpoint", help="local Swin weights")
    ap.add_argument("--backbone-kwargs", default="{}", help='JSON for timm\'s Swin, e.g. {"embed_dim": 24, "depths": [1, 1, 1, 1]}')
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--accumulate", type=int, default=1, help="gradient accumulation steps")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--clip-grad", type=float, default=1.0)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--oversample", default="", help="class names to oversample, comma-separated")
    ap.add_argument("--oversample-factor", type=float, default=3.0)
    ap.add_argument("--patience", type=int, default=5, help="early stopping on validation macro F1")
    ap.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="runs/multilabel")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def build_data(args, classes):
    if args.train_csv:
        root = args.images or os.path.dirname(args.train_csv)
        train = CsvMultiLabel(args.train_csv, root, classes, train_transform(args.img_size))
        val = CsvMultiLabel(args.val_csv, root, classes, eval_transform(args.img_size))
        test = CsvMultiLabel(args.test_csv or args.val_csv, root, classes, eval_transform(args.img_size))
        return train, val, test
    n = args.synthetic_size
    mk = lambda length, seed, train: SyntheticMultiLabel(len(classes), args.img_size, length, seed, train)  # noqa: E731
    return mk(n, args.seed, True), mk(max(n // 4, 8), args.seed + 1, False), mk(max(n // 4, 8), args.seed + 2, False)


@torch.no_grad()
def predict_all(model, loader, device, tta):
    model.eval()
    probs, labels = [], []
    for x, y in loader:
        probs.append(predict_tta(model, x.to(device), tta).float().cpu())
        labels.append(y)
    return torch.cat(probs), torch.cat(labels)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    classes = args.classes.split(",")
    train_set, val_set, test_set = build_data(args, classes)
    model = timm.create_model(args.model, num_classes=len(classes), img_size=args.img_size,
                              backbone_checkpoint=args.backbone_checkpoint,
                              backbone_kwargs=json.loads(args.backbone_kwargs)).to(device)
    labels = train_set.labels
    over = [classes.index(c) for c in filter(None, args.oversample.split(","))]
    sampler = torch.utils.data.WeightedRandomSampler(oversample_weights(labels, over, args.oversample_factor),
                                                     len(train_set)) if over else None
    train_loader = torch.utils.data.DataLoader(train_set, args.batch_size, shuffle=sampler is None, sampler=sampler,
                                               num_workers=args.workers, drop_last=len(train_set) > args.batch_size)
    val_loader = torch.utils.data.DataLoader(val_set, args.batch_size, num_workers=args.workers)
    test_loader = torch.utils.data.DataLoader(test_set, args.batch_size, num_workers=args.workers)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(args.epochs, 1))
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=1)
    log = open(os.path.join(args.out, "log.csv"), "w", newline="")
    writer = csv.writer(log)
    writer.writerow(["epoch", "lr", "loss", "val_macro_f1", "val_micro_f1"])
    best, stale = -1.0, 0
    for epoch in range(args.epochs):
        model.train()
        total, n = 0.0, 0
        opt.zero_grad(set_to_none=True)
        bar = tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=args.no_progress)
        for step, (x, y) in enumerate(bar):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
                loss, _ = model(x, y)
            scaler.scale(loss / args.accumulate).backward()
            if (step + 1) % args.accumulate == 0 or step + 1 == len(train_loader):
                if args.clip_grad:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
            total += float(loss.detach()) * y.shape[0]
            n += y.shape[0]
            bar.set_postfix(loss=f"{total / n:.4f}")
        sched.step()
        probs, y_val = predict_all(model, val_loader, device, False)
        rep = multilabel_report(probs, y_val, torch.full((len(classes),), 0.5), classes)
        writer.writerow([epoch, opt.param_groups[0]["lr"], total / max(n, 1), rep["macro"]["f1"], rep["micro"]["f1"]])
        log.flush()
        print(f"epoch {epoch}: loss {total / max(n, 1):.4f} val macro F1 {rep['macro']['f1']:.3f}")
        torch.save({"model": model.state_dict(), "epoch": epoch, "classes": classes}, os.path.join(args.out, "last.pth"))
        if rep["macro"]["f1"] > best:
            best, stale = rep["macro"]["f1"], 0
            torch.save({"model": model.state_dict(), "epoch": epoch, "classes": classes}, os.path.join(args.out, "best.pth"))
        else:
            stale += 1
            if stale >= args.patience:
                print(f"early stop: no better validation F1 for {args.patience} epochs")
                break
    log.close()
    model.load_state_dict(torch.load(os.path.join(args.out, "best.pth"), map_location=device)["model"])
    probs, y_val = predict_all(model, val_loader, device, args.tta)
    thresholds = search_thresholds(probs, y_val)
    probs, y_test = predict_all(model, test_loader, device, args.tta)
    report = multilabel_report(probs, y_test, thresholds, classes)
    print(format_table(report))
    save_plots(report, args.out)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report
