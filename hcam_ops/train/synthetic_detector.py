"""A tiny detector trained on the synthetic detection set in CPU minutes: a
detector that sees something, for the CAM tests and the demo pictures.

``python -m hcam_ops.train.synthetic_detector --out demo/`` writes
``demo/detector.pth`` (a checkpoint ``python -m hcam_ops.cam.detect`` reads),
held-out images ``demo/images/*.png`` and their COCO file
``demo/annotations.json``.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from .._cli import CLIParser
from ..data.synthetic_detection import SyntheticDetection, collate, to_coco

# Fewer proposals than torchvision's defaults (2000/1000 for training): the
# synthetic images hold at most a handful of objects, and AblationCAM runs the
# heads once per ablated channel, so this is most of their CPU time.
_RCNN_SETTINGS = {
    "rpn_pre_nms_top_n_train": 300,
    "rpn_post_nms_top_n_train": 150,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 100,
    "box_batch_size_per_image": 64,
}


def synthetic_build_kwargs(name: str, image_size: int = 128, fpn_channels: int = 64) -> dict:
    """The ``build_detector`` keywords of the synthetic-set detectors."""
    from ..models.detection import family  # torchvision, timm: not for --help

    kwargs = {"min_size": image_size, "max_size": image_size, "fpn_channels": fpn_channels}
    if family(name) in ("fasterrcnn", "maskrcnn"):
        kwargs.update(_RCNN_SETTINGS)
    return kwargs


def train_on_synthetic(
    name: str = "fasterrcnn_resnet18_fpn",
    steps: int = 120,
    batch_size: int = 4,
    image_size: int = 128,
    num_classes: int = 3,
    fpn_channels: int = 64,
    lr: float = 0.02,
    seed: int = 0,
    threads: int | None = None,
    log_every: int = 0,
):
    """``(detector in eval mode, build keywords)`` after ``steps`` SGD steps on
    fresh synthetic images (seed ``seed``; never the same image twice).
    ``threads`` sets torch's CPU threads for the run and restores them: on a
    small, busy machine one thread is several times faster than two."""
    from ..models.detection import build_detector, family

    build = synthetic_build_kwargs(name, image_size, fpn_channels)
    data = SyntheticDetection(steps * batch_size, image_size, num_classes, seed=seed, masks=family(name) == "maskrcnn")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        # A forked RNG: the same weights for the same seed, and the caller's
        # random stream left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            detector = build_detector(name, num_classes + 1, **build)
            _fit(detector, data, steps, batch_size, lr, log_every)
    finally:
        torch.set_num_threads(previous_threads)
    return detector.eval(), build


def _fit(detector: nn.Module, data: SyntheticDetection, steps: int, batch_size: int, lr: float, log_every: int):
    params = [p for p in detector.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    detector.train()
    start = time.time()
    for step in range(steps):
        images, targets = collate([data[step * batch_size + i] for i in range(batch_size)])
        loss = sum(detector(images, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Random init and a high rate: clipping keeps the first steps from diverging.
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        schedule.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d}  loss {loss.item():.3f}  {time.time() - start:.0f}s", flush=True)


@torch.no_grad()
def recall(detector: nn.Module, data: SyntheticDetection, score_thr: float = 0.5, iou_thr: float = 0.5) -> float:
    """The share of true boxes found: a detection of the same label above
    ``score_thr`` overlapping it by more than ``iou_thr``."""
    from torchvision.ops import box_iou

    detector.eval()
    found = total = 0
    for index in range(len(data)):
        image, target = data[index]
        out = detector([image])[0]
        keep = out["scores"] > score_thr
        boxes, labels = out["boxes"][keep], out["labels"][keep]
        for box, label in zip(target["boxes"], target["labels"]):
            total += 1
            same = labels == label
            if same.any() and box_iou(box[None], boxes[same]).max() > iou_thr:
                found += 1
    return found / max(total, 1)


def main(argv=None):
    ap = CLIParser(prog="python -m hcam_ops.train.synthetic_detector", description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="fasterrcnn_resnet18_fpn")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=8, help="held-out images to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    from ..models.detection import save_checkpoint

    detector, build = train_on_synthetic(
        args.model, args.steps, image_size=args.image_size, seed=args.seed, threads=args.threads, log_every=25
    )
    held_out = SyntheticDetection(args.images, args.image_size, seed=args.seed + 1_000_000)
    print(f"recall@0.5 on {len(held_out)} held-out images: {recall(detector, held_out):.3f}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "detector.pth")
    save_checkpoint(path, detector, args.model, held_out.num_classes + 1, held_out.classes, **build)
    to_coco(held_out, os.path.join(args.out, "annotations.json"), image_dir=os.path.join(args.out, "images"))
    print(f"wrote {path}, {len(held_out)} images and annotations.json to {args.out}")


if __name__ == "__main__":
    main()
