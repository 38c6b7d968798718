"""Issue 27, item 4: does seed 000's CAM-consistency term make the levels'
CAMs agree? H-CAST (a small CAST) on the generated hierarchical set, without
the term and with it at several weights, several seeds each; the final
epoch's validation metrics of each run go to one JSON list and a table.

  python benchmarks/methods/cam_consistency.py                       # the recipe below, 3 seeds
  python benchmarks/methods/cam_consistency.py --weights 0.1 --seeds 0 --epochs 1   # a quick check

Each run is ``python -m hcam_ops.train hierarchical`` with RECIPE (ours: a
CAST small enough for a CPU, 64 px images, 40 epochs) plus ``--seed`` and,
for "on-W", ``--cam-consist --cam-weight W``. The metrics are the engine's
own (hcam_ops.train.hierarchical.metrics): full-path accuracy, top-1 per
level, the hierarchical consistency ratio and the fine/coarse CAM IoU.
Writes ``--out``/cam_consistency.json: one object per run and seed,
``{"run", "seed", "full_path_acc", "consistency", "cam_iou", "top1": [...]}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from seeds import by_run, mean_std

# Ours: the README's first run (a small CAST on 64 px images of the
# generated set) on 512 images (128 held out), 40 epochs: about 70 s a run
# on a 2-core CPU.
RECIPE = [
    "--img-size", "64", "--embed-dim", "48", "--depths", "1,1,1,1", "--num-heads", "4",
    "--num-clusters", "16,8,4,2", "--num-segments", "16", "--max-segments", "24",
    "--synthetic-size", "512", "--batch-size", "32", "--lr", "2e-3", "--warmup-epochs", "0",
    "--no-progress", "--no-tensorboard",
]  # fmt: skip
METRICS = ("full_path_acc", "consistency", "cam_iou")


def run_name(weight: float | None) -> str:
    return "off" if weight is None else f"on-{weight:g}"


def last_validation(log_csv: str) -> dict:
    """The last epoch's row of the engine's log.csv, its val_* metrics by name."""
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"error: {log_csv}: no epoch logged")
    row = rows[-1]
    out = {k: float(row[f"val_{k}"]) for k in METRICS}
    levels = sorted(k for k in row if k.startswith("val_acc_l"))
    out["top1"] = [float(row[k]) for k in levels]
    return out


def one_run(out_dir: str, seed: int, weight: float | None, epochs: int) -> dict:
    from hcam_ops.train import cli

    argv = ["hierarchical", *RECIPE, "--epochs", str(epochs), "--seed", str(seed), "--out", out_dir]
    if weight is not None:
        argv += ["--cam-consist", "--cam-weight", f"{weight:g}"]
    print("# python -m hcam_ops.train " + " ".join(argv), file=sys.stderr, flush=True)
    cli.main(argv)
    return {"run": run_name(weight), "seed": seed, **last_validation(os.path.join(out_dir, "log.csv"))}


def table(results: list[dict]) -> str:
    """Mean and spread (population std over seeds) per run."""
    lines = [
        "| run | seeds | full-path acc | consistency | fine/coarse CAM IoU | top-1 per level |",
        "|---|---|---|---|---|---|",
    ]
    for name, rs in by_run(results):
        top1 = " / ".join(mean_std([r["top1"][i] for r in rs]) for i in range(len(rs[0]["top1"])))
        lines.append(
            f"| {name} | {len(rs)} | " + " | ".join(mean_std([r[m] for r in rs]) for m in METRICS) + f" | {top1} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="off,0.03,0.1,0.3", help="comma list: off and/or --cam-weight values")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results"))
    ap.add_argument("--runs", default="runs/cam_consistency", help="the training runs' folders")
    args = ap.parse_args(argv)
    try:
        weights = [None if w.strip() == "off" else float(w) for w in args.weights.split(",")]
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as e:
        ap.error(f"--weights / --seeds: {e}")
    results = []
    for weight in weights:
        for seed in seeds:
            out_dir = os.path.join(args.runs, f"{run_name(weight)}-seed{seed}")
            print(f"# {run_name(weight)} seed {seed} -> {out_dir}", file=sys.stderr, flush=True)
            results.append(one_run(out_dir, seed, weight, args.epochs))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cam_consistency.json")
    with open(path + ".tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
