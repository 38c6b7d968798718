"""What a run leaves besides checkpoints (written by rank 0 only): ``log.csv``
(one row per epoch), TensorBoard scalars under ``tb/``, and ``history.png``
(loss and each metric per epoch)."""

from __future__ import annotations

import csv
import math
import os


class History:
    def __init__(self, out_dir: str, resume: bool, tensorboard: bool = True, upto: int | None = None):
        """``resume``: continue the existing log; with ``upto`` (the epoch of
        the checkpoint resumed from), rows after that epoch are dropped and
        the file rewritten: a run killed after writing an epoch's row but
        before its checkpoint redoes that epoch, and the log keeps one row
        per epoch."""
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, "log.csv")
        self.rows: list[dict] = []
        self.columns: list[str] | None = None
        if resume and os.path.exists(self.path):
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or [])
                self.rows = [{k: _number(v) for k, v in r.items()} for r in reader]
            if upto is not None:
                kept = [r for r in self.rows if isinstance(r.get("epoch"), int) and r["epoch"] <= upto]
                if len(kept) != len(self.rows):
                    self.rows = kept
                    self._rewrite()
        elif os.path.exists(self.path):
            os.remove(self.path)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(os.path.join(out_dir, "tb"))

    def append(self, row: dict) -> None:
        if self.columns is None:
            self.columns = list(row)
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row.get(c, "") for c in self.columns])
        self.rows.append(row)
        if self.tb is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
            self.tb.flush()
        self.plot()

    def _rewrite(self) -> None:
        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(self.columns)
            w.writerows([r.get(c, "") for c in self.columns] for r in self.rows)  # floats as repr: exact
        os.replace(tmp, self.path)

    def plot(self) -> str | None:
        """``history.png``: one panel per logged quantity against the epoch."""
        keys = [c for c in (self.columns or []) if c not in ("epoch", "seconds")]
        if not self.rows or not keys:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        epochs = [r["epoch"] for r in self.rows]
        for ax, key in zip(axes.flat, keys):
            ax.plot(epochs, [r.get(key, float("nan")) for r in self.rows], marker="o", markersize=3)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys) :]:
            ax.axis("off")
        fig.tight_layout()
        path = os.path.join(self.out_dir, "history.png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _number(text: str):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return text
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v
