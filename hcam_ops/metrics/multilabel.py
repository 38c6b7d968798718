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


def save_table(report: dict, path: str) -> str:
    """The report's table as CSV: class, threshold, P, R, F1, AP, AUC,
    accuracy per class, then the macro and micro rows."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "threshold", *METRICS])
        for name, vals in report["per_class"].items():
            w.writerow([name, f"{report['thresholds'][name]:.2f}", *(f"{vals[m]:.4f}" for m in METRICS)])
        for avg in ("macro", "micro"):
            w.writerow([f"{avg}-avg", "", *(f"{report[avg][m]:.4f}" for m in METRICS)])
    return path


def save_plots(report: dict, out_dir: str, prefix: str = "") -> list[str]:
    """The report's evaluation pictures (its ``visualize_results``), PNG:
    ``{prefix}metrics_heatmap.png`` (classes x metrics), one bar chart per
    metric ``{prefix}{metric}_per_class.png``, the line chart of every metric
    across the classes ``{prefix}all_metrics.png``, the macro and micro
    averages ``{prefix}averages.png``; and the table ``{prefix}metrics.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    names = list(report["per_class"])
    table = torch.tensor([[report["per_class"][n][m] for m in METRICS] for n in names])
    paths = []

    def save(fig, name):
        path = os.path.join(out_dir, f"{prefix}{name}")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)

    fig, ax = plt.subplots(figsize=(1.2 * len(METRICS) + 2, 0.5 * len(names) + 1.5))
    im = ax.imshow(table.numpy(), vmin=0, vmax=1, cmap="YlOrRd")
    ax.set_xticks(range(len(METRICS)), METRICS)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(METRICS)):
            ax.text(j, i, f"{table[i, j]:.3f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im)
    ax.set_title(f"{prefix}metrics".strip("_ "))
    save(fig, "metrics_heatmap.png")
    for j, metric in enumerate(METRICS):
        fig, ax = plt.subplots(figsize=(0.9 * len(names) + 2, 3.5))
        ax.bar(names, table[:, j].numpy(), color=plt.cm.viridis(torch.linspace(0.1, 0.9, len(names)).numpy()))
        ax.set_ylim(0, 1)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per class")
        ax.tick_params(axis="x", rotation=30)
        save(fig, f"{metric}_per_class.png")
    fig, ax = plt.subplots(figsize=(0.9 * len(names) + 4, 4))
    for j, metric in enumerate(METRICS):
        ax.plot(names, table[:, j].numpy(), marker="o", label=metric)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("class")
    ax.set_ylabel("score")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    ax.grid(alpha=0.3)
    save(fig, "all_metrics.png")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.4
    xs = torch.arange(len(METRICS)).float()
    for i, avg in enumerate(("macro", "micro")):
        ax.bar((xs + (i - 0.5) * width).numpy(), [report[avg][m] for m in METRICS], width, label=f"{avg}-avg")
    ax.set_xticks(xs.numpy(), METRICS)
    ax.set_ylim(0, 1)
    ax.legend()
    save(fig, "averages.png")
    paths.append(save_table(report, os.path.join(out_dir, f"{prefix}metrics.csv")))
    return paths


TTA_VIEWS = {
    "hflip": lambda x: torch.flip(x, dims=[3]),
    "vflip": lambda x: torch.flip(x, dims=[2]),
    "rot90": lambda x: torch.rot90(x, k=1, dims=[2, 3]),
}


def parse_views(text: str | bool | None) -> tuple[str, ...]:
    """``"hflip,vflip,rot90"`` -> the views; ``True``: the horizontal flip;
    ``False`` / ``None`` / ``""``: none."""
    if text is True:
        return ("hflip",)
    if not text:
        return ()
    views = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in views if v not in TTA_VIEWS]
    if unknown:
        raise ValueError(f"unknown test-time view {unknown[0]!r} (views: {', '.join(TTA_VIEWS)})")
    return views


@torch.no_grad()
def predict_tta(model, images: torch.Tensor, views=("hflip",)) -> torch.Tensor:
    """Probabilities with test-time augmentation: the model's logits averaged
    over the image and its ``views`` (the report's: ``"hflip"``, ``"vflip"``,
    ``"rot90"``; a comma-separated string, a sequence, or ``True`` for the
    horizontal flip), then the sigmoid. The report averages its models'
    outputs: the logits for the BCE models; for the ArcFace model the
    features, where this averages their cosine logits. Models without
    ``logits`` average ``predict``."""
    views = parse_views(views) if isinstance(views, (str, bool)) or views is None else tuple(views)
    if not hasattr(model, "logits"):
        p = model.predict(images)
        for v in views:
            p = p + model.predict(TTA_VIEWS[v](images))
        return p / (1 + len(views))
    z = model.logits(images).float()
    for v in views:
        z = z + model.logits(TTA_VIEWS[v](images)).float()
    return torch.sigmoid(z / (1 + len(views)))
