"""The picture of issue 27, item 4: each level's CAM (hcam_ops.cam.hierarchy_cams)
of two H-CAST runs of benchmarks/methods/cam_consistency.py, one without the
CAM-consistency term and one with it, on the same validation images.

  python benchmarks/methods/cam_consistency_figure.py --off runs/cam_consistency/off-seed0 \\
      --on runs/cam_consistency/on-0.1-seed0 --out docs/images/cam_consistency.png
"""

from __future__ import annotations

import argparse
import json
import os

import torch


def _val_images(args_json: dict, count: int):
    """The first ``count`` validation images of the run's synthetic set, with
    their superpixels, exactly as the run made them."""
    from hcam_ops.superpixels import Superpixels
    from hcam_ops.train.hierarchical.data import SyntheticHierarchical, WithSegments, synthetic_hierarchy

    levels = tuple(int(v) for v in str(args_json["synthetic_levels"]).split(","))
    size, n, seed = args_json["img_size"], args_json["synthetic_size"], args_json["seed"]
    val = SyntheticHierarchical(synthetic_hierarchy(levels), size, max(n // 4, 8), seed=seed + 1)
    sp = Superpixels(args_json["num_segments"], args_json["superpixels"], args_json["max_segments"])
    data = WithSegments(val, sp, normalized=False)
    items = [data[i] for i in range(count)]
    raw = torch.stack([val[i][0] for i in range(count)])
    return raw, torch.stack([x for x, _, _ in items]), torch.stack([s for _, s, _ in items])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--off", required=True, help="run folder without the term (best.pth, args.json)")
    ap.add_argument("--on", required=True, help="run folder with the term")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hcam_ops import checkpoint
    from hcam_ops.cam.hierarchy_cam import hierarchy_cams
    from hcam_ops.models import build_model

    runs = {}
    for name, folder in (("without", args.off), ("with (0.1)", args.on)):
        with open(os.path.join(folder, "args.json")) as f:
            run_args = json.load(f)
        model = build_model(checkpoint.load(os.path.join(folder, "best.pth"))).eval()
        raw, images, segments = _val_images(run_args, args.images)
        cams, classes, _ = hierarchy_cams(model, images, segments)
        runs[name] = (raw, cams, classes)
    levels = next(iter(runs.values()))[1].shape[1]
    rows = args.images * len(runs)
    fig, axes = plt.subplots(rows, levels + 1, figsize=(1.9 * (levels + 1), 1.9 * rows))
    for r, (img_i, (name, (raw, cams, classes))) in enumerate(
        (i, item) for i in range(args.images) for item in runs.items()
    ):
        picture = raw[img_i].permute(1, 2, 0).numpy()
        axes[r, 0].imshow(picture)
        axes[r, 0].set_ylabel(f"image {img_i}\n{name}", fontsize=8)
        for level in range(levels):
            ax = axes[r, level + 1]
            ax.imshow(picture)
            ax.imshow(cams[img_i, level].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if r == 0:
                ax.set_title(f"level {level} CAM", fontsize=9)
            ax.set_xlabel(f"class {int(classes[img_i, level])}", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Each level's CAM without and with the CAM-consistency term (same images)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=72)
    print(args.out)


if __name__ == "__main__":
    main()
