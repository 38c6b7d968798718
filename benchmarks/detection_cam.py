"""Seconds per image of each detection-CAM method (hcam_ops.cam.detection)
at 800 x 1333, the detector's own default resolution.

    python benchmarks/detection_cam.py [--model fasterrcnn_resnet50_fpn] [--images 2]
        [--methods eigencam,featmapam,...] [--ratio-channels-to-ablate 1.0] [--threads 1]

One image = what ``DetCAMVisualizer.explain`` does for it: the detection pass
(``score_thr`` 0, the top ``--topk`` boxes) and the CAM of those boxes with
the method's default target layer (gradient-free: the FPN output; gradient:
the last backbone stage). The detector has random weights (nothing is
downloaded) and keeps every score so that it has boxes to explain; its work
per image is that of a trained one (fixed proposal and detection counts).
AblationCAM runs the heads once per ablated FPN channel (1280 for the ResNet-50
FPN): ``--ratio-channels-to-ablate`` samples a share of them (pytorch-grad-cam
ablates ``2 x ratio`` of the channels, the most and least salient), and the
table shows the full-ablation time extrapolated from it alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from hcam_ops.cam.detection import METHODS, DetCAMModel, DetCAMVisualizer, build_detector
from hcam_ops.data.synthetic_detection import SyntheticDetection
from hcam_ops.models.detection import family


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fasterrcnn_resnet50_fpn")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--images", type=int, default=2, help="timed images per method (after one warm-up)")
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1333)
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16, help="AblationCAM: ablated channels per forward")
    ap.add_argument("--ratio-channels-to-ablate", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", help="also write the rows here")
    return ap.parse_args(argv)


def build(args):
    fam = family(args.model)
    # Keep every score: random weights give low ones, and the benchmark needs
    # boxes to explain.
    keep_all = {"box_score_thresh": 0.0} if fam in ("fasterrcnn", "maskrcnn") else {"score_thresh": 0.0}
    torch.manual_seed(0)
    detector = build_detector(
        args.model, 4, min_size=min(args.height, args.width), max_size=max(args.height, args.width), **keep_all
    )
    return DetCAMModel(detector.to(args.device).eval(), score_thr=0.0)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_method(model, method, images, args):
    vis = DetCAMVisualizer(
        model, method, batch_size=args.batch_size, ratio_channels_to_ablate=args.ratio_channels_to_ablate
    )
    vis.explain(images[0], topk=args.topk)  # warm-up: allocator, caches
    seconds = []
    for image in images[1:]:
        sync(args.device)
        start = time.perf_counter()
        ex = vis.explain(image, topk=args.topk)
        sync(args.device)
        seconds.append(time.perf_counter() - start)
        assert np.isfinite(ex.cam).all()
    return float(np.mean(seconds)), float(np.std(seconds))


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        # numpy's BLAS too (EigenCAM's SVD): on a busy small machine its idle
        # threads spin and cost seconds.
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    model = build(args)
    data = SyntheticDetection(args.images + 1, (args.height, args.width), seed=0)
    images = [data[i][0] for i in range(len(data))]
    channels = sum(level.shape[1] for level in _levels(model, images[0]))
    print(
        f"{args.model}, {args.height}x{args.width}, {args.images} images, top {args.topk} boxes, "
        f"device {args.device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}, FPN channels {channels}"
    )
    rows = []
    print("| method | s / image | std | note |")
    print("|---|---|---|---|")
    for method in methods:
        mean, std = time_method(model, method, images, args)
        note = ""
        if method == "ablationcam" and args.ratio_channels_to_ablate < 1.0:
            # pytorch-grad-cam ablates the int(ratio * C) most and as many least salient channels.
            ablated = 2 * int(channels * args.ratio_channels_to_ablate)
            note = f"{ablated} ablations of {channels} channels; all {channels}: ~{mean * channels / ablated:.0f} s"
        rows.append({"method": method, "seconds_per_image": mean, "std": std, "note": note})
        print(f"| {method} | {mean:.2f} | {std:.2f} | {note} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


def _levels(model, image):
    with torch.no_grad():
        batch = model.detector.transform([image.to(model.device)])[0]
        return list(model.detector.backbone(batch.tensors).values())


if __name__ == "__main__":
    main()
