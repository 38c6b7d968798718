"""The loss curves of the distillation benchmark's runs (one seed): per epoch,
each run's detection loss (classification + box regression), each
distillation term as logged (already times the run's weight) and the
student's validation mAP; and a table of the terms against the detection loss
in the first and the last epoch.

  python benchmarks/methods/distillation_figure.py --runs-dir runs/distillation --seed 0 \\
      --out docs/images/distillation_curves.png
"""

from __future__ import annotations

import argparse
import csv
import os

from distillation import DEFAULT_RUNS

DETECTION = ("train_classification", "train_bbox_regression")


def read_log(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def terms(rows: list[dict]) -> list[str]:
    """The logged distillation terms the run has (not zero throughout)."""
    return [k for k in rows[0] if k.startswith("train_loss_") and any(r[k] != 0 for r in rows)]


def balance_table(logs: dict[str, list[dict]]) -> str:
    """Per run: the detection loss and each term, first and last epoch."""
    lines = [
        "| run | epoch | detection loss | distillation terms (as weighted in the loss) | val mAP |",
        "|---|---|---|---|---|",
    ]
    for name, rows in logs.items():
        for row in (rows[0], rows[-1]):
            det = sum(row.get(k, 0.0) for k in DETECTION)
            parts = ", ".join(f"{k[len('train_') :]} {row[k]:.3g}" for k in terms(rows)) or "-"
            lines.append(f"| {name} | {int(row['epoch'])} | {det:.3f} | {parts} | {row['val_map']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", default="runs/distillation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="the benchmark's runs (default: all seven)")
    ap.add_argument("--out", default="docs/images/distillation_curves.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {}
    for name in args.runs.split(","):
        path = os.path.join(args.runs_dir, f"{name}-seed{args.seed}", "log.csv")
        if os.path.isfile(path):
            logs[name] = read_log(path)
    teacher = os.path.join(args.runs_dir, "teacher", "log.csv")
    if not logs:
        raise SystemExit(f"error: no run of seed {args.seed} under {args.runs_dir}")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, (name, rows) in enumerate(logs.items()):
        colour = f"C{i}"
        epochs = [r["epoch"] + 1 for r in rows]
        axes[0].plot(epochs, [sum(r.get(k, 0.0) for k in DETECTION) for r in rows], "-o", color=colour, label=name)
        for j, k in enumerate(terms(rows)):
            axes[1].plot(
                epochs, [r[k] for r in rows], ("-", "--", ":", "-.")[j % 4], marker="o", ms=3, color=colour,
                label=f"{name}: {k[len('train_loss_'):]}",
            )  # fmt: skip
        axes[2].plot(epochs, [r["val_map"] for r in rows], "-o", color=colour, label=name)
    if os.path.isfile(teacher):
        t = read_log(teacher)
        axes[2].axhline(t[-1]["val_map"], color="k", ls="--", lw=1, label="teacher (final)")
    axes[0].set_title("detection loss (cls + box), train")
    axes[1].set_title("distillation terms, as weighted")
    axes[1].set_yscale("log")
    axes[2].set_title("student val COCO mAP")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=5, ncol=2)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"distillation benchmark, seed {args.seed}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(balance_table(logs))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
