"""Multi-label evaluation: per-class threshold search on a validation split
(F1-optimal on a grid), applied unchanged to the test split; per-class and
macro/micro precision, recall, F1, AP, AUC and accuracy. The arithmetic is
torchmetrics'."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torchmetrics.functional.classification import (
    binary_f1_score,
    multilabel_accuracy,
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_f1_score,
    multilabel_precision,
    multilabel_recall,
)

GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
METRICS = ("precision", "recall", "f1", "ap", "auc", "accuracy")


def search_thresholds(probs: torch.Tensor, labels: torch.Tensor, grid: Sequence[float] = GRID) -> torch.Tensor:
    """Per class, the grid threshold with the highest F1 on ``(probs, labels)``
    ``[N, K]`` (a score above the threshold is positive); a tie goes to the
    lower threshold."""
    labels = labels.int()
    best = torch.empty(probs.shape[1])
    for k in range(probs.shape[1]):
        scores = torch.stack([binary_f1_score(probs[:, k], labels[:, k], threshold=t) for t in grid])
        best[k] = grid[int(torch.argmax(scores))]  # argmax: the first maximum
    return best


def binarize(probs: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Positive where the score is above the class threshold (strictly, as
    torchmetrics thresholds)."""
    return (probs > thresholds.to(probs.device)).int()


def multilabel_report(
    probs: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor, names: Sequence[str]
) -> dict:
    """``{"per_class": {name: {metric: value}}, "macro": {...}, "micro": {...}}``;
    thresholded metrics use the per-class thresholds, AP and AUC the scores."""
    K = probs.shape[1]
    y = labels.int()
    pred = binarize(probs, thresholds).float()  # 0/1 "probabilities": torchmetrics' 0.5 threshold keeps them
    out = {}
    for avg in ("none", "macro", "micro"):
        kw = dict(num_labels=K, average=avg)
        vals = {
            "precision": multilabel_precision(pred, y, **kw),
            "recall": multilabel_recall(pred, y, **kw),
            "f1": multilabel_f1_score(pred, y, **kw),
            "ap": multilabel_average_precision(probs, y, **kw),
            "auc": multilabel_auroc(probs, y, **kw),
            "accuracy": multilabel_accuracy(pred, y, **kw),
        }
        if avg == "none":
            out["per_class"] = {n: {m: float(vals[m][k]) for m in METRICS} for k, n in enumerate(names)}
        else:
            out[avg] = {m: float(vals[m]) for m in METRICS}
    out["thresholds"] = {n: float(t) for n, t in zip(names, thresholds)}
    return out


def format_table(report: dict) -> str:
    rows = [("class", "thresh", *METRICS)]
    for name, vals in report["per_class"].items():
        rows.append((name, f"{report['thresholds'][name]:.2f}", *(f"{vals[m]:.3f}" for m in METRICS)))
    for avg in ("macro", "micro"):
        rows.append((avg, "", *(f"{report[avg][m]:.3f}" for m in METRICS)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)


def save_plots(report: dict, out_dir: str) -> list[str]:
    """A heatmap of the per-class metrics and a per-class F1 bar chart (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    names = list(report["per_class"])
    table = torch.tensor([[report["per_class"][n][m] for m in METRICS] for n in names])
    fig, ax = plt.subplots(figsize=(1.2 * len(METRICS) + 2, 0.5 * len(names) + 1.5))
    im = ax.imshow(table.numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(METRICS)), METRICS)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(METRICS)):
            ax.text(j, i, f"{table[i, j]:.2f}", ha="center", va="center", color="w" if table[i, j] < 0.6 else "k")
    fig.colorbar(im)
    fig.tight_layout()
    heat = os.path.join(out_dir, "metrics_heatmap.png")
    fig.savefig(heat, dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(0.9 * len(names) + 2, 3.5))
    ax.bar(names, table[:, METRICS.index("f1")].numpy())
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    bars = os.path.join(out_dir, "f1_per_class.png")
    fig.savefig(bars, dpi=100)
    plt.close(fig)
    return [heat, bars]


@torch.no_grad()
def predict_tta(model, images: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """``model.predict`` averaged with its prediction on the horizontally
    flipped images (test-time augmentation)."""
    p = model.predict(images)
    return (p + model.predict(torch.flip(images, dims=[3]))) / 2 if flip else p
