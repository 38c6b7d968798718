"""The report's training-history pictures (its ``plot_training_history``,
``loss_curve.png`` and ``map_curve.png``): train against validation per
epoch, from the rows of a run's ``log.csv``."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence

# (file, title, the train and validation columns) of the report's curves.
CURVES = (
    ("loss_curve.png", "loss", "train_loss", "val_loss"),
    ("map_curve.png", "mAP", "train_map", "val_map"),
)
PANELS = (
    ("loss", "train_loss", "val_loss"),
    ("F1 (macro)", "train_macro_f1", "val_macro_f1"),
    ("mAP", "train_map", "val_map"),
    ("accuracy", "train_acc", "val_acc"),
)


def read_log(path: str) -> list[dict]:
    """``log.csv`` rows with numbers as floats (empty cells dropped)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append(row)
    return rows


def _plot(ax, rows, train_key, val_key, title):
    epochs = [int(r["epoch"]) + 1 for r in rows]  # the report counts epochs from 1
    drawn = False
    for key, label in ((train_key, "train"), (val_key, "validation")):
        ys = [r.get(key, math.nan) for r in rows]
        if not all(math.isnan(y) for y in ys):
            ax.plot(epochs, ys, marker="o", markersize=3, label=label)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return drawn


def save_history_curves(rows: list[dict], out_dir: str, classes: Sequence[str] = ()) -> list[str]:
    """Writes ``loss_curve.png`` and ``map_curve.png`` (the report's),
    ``training_curves.png`` (loss, F1, mAP, accuracy) and, with ``classes``,
    ``class_accuracy_curves.png`` (``*_acc_<class>``). A curve whose columns
    are not in the log is left out; a picture with none is not written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return []
    os.makedirs(out_dir, exist_ok=True)
    paths = []

    def save(fig, name, drawn):
        if drawn:
            fig.tight_layout()
            path = os.path.join(out_dir, name)
            fig.savefig(path, dpi=100)
            paths.append(path)
        plt.close(fig)

    for name, title, train_key, val_key in CURVES:
        fig, ax = plt.subplots(figsize=(6, 4))
        save(fig, name, _plot(ax, rows, train_key, val_key, title))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    drawn = [_plot(ax, rows, t, v, title) for ax, (title, t, v) in zip(axes.flat, PANELS)]
    save(fig, "training_curves.png", any(drawn))
    if classes:
        cols = min(3, len(classes))
        fig, axes = plt.subplots(
            math.ceil(len(classes) / cols),
            cols,
            figsize=(4.5 * cols, 3.2 * math.ceil(len(classes) / cols)),
            squeeze=False,
        )
        drawn = [
            _plot(ax, rows, f"train_acc_{c}", f"val_acc_{c}", f"{c} accuracy") for ax, c in zip(axes.flat, classes)
        ]
        for ax in list(axes.flat)[len(classes) :]:
            ax.axis("off")
        save(fig, "class_accuracy_curves.png", any(drawn))
    return paths
