"""hcam_ops.metrics: the threshold search, the multi-label report and its
pictures, test-time augmentation, the training curves."""

import csv

import pytest

pytest.importorskip("torchmetrics", reason="the torchmetrics package is not installed here")
import torch  # noqa: E402

from hcam_ops import metrics  # noqa: E402


def test_threshold_search_picks_the_f1_optimum():
    # A score above the threshold is positive. Class 0: positives 0.6-0.7,
    # negatives up to 0.55: 0.55 is the only perfect grid point. Class 1:
    # positives at 0.3, a negative at 0.35 above them and one at 0.1: F1 is
    # 0.857 for thresholds 0.1 .. 0.25 (the lowest wins the tie), 0.75 at 0.05,
    # 0 from 0.3 up.
    probs = torch.tensor([[0.6, 0.3], [0.7, 0.3], [0.65, 0.3], [0.2, 0.35], [0.55, 0.1], [0.3, 0.05]])
    labels = torch.tensor([[1, 1], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0]])
    t = metrics.search_thresholds(probs, labels)
    torch.testing.assert_close(t, torch.tensor([0.55, 0.1]))


def test_report_values(tmp_path, gen):
    probs = torch.rand(40, 3, generator=gen)
    labels = (torch.rand(40, 3, generator=gen) < 0.4).int()
    labels[0] = 1  # each class has a positive
    thr = torch.tensor([0.5, 0.3, 0.7])
    rep = metrics.multilabel_report(probs, labels, thr, ["a", "b", "c"])
    pred = (probs > thr).int()
    tp = (pred & labels).sum(0).float()
    prec, rec = tp / pred.sum(0).clamp_min(1), tp / labels.sum(0)
    for k, n in enumerate("abc"):
        assert rep["per_class"][n]["precision"] == pytest.approx(float(prec[k]), abs=1e-6)
        assert rep["per_class"][n]["recall"] == pytest.approx(float(rec[k]), abs=1e-6)
        assert rep["per_class"][n]["accuracy"] == pytest.approx(
            float((pred[:, k] == labels[:, k]).float().mean()), abs=1e-6
        )
    micro_p = float(tp.sum() / pred.sum())
    assert rep["micro"]["precision"] == pytest.approx(micro_p, abs=1e-6)
    assert rep["macro"]["recall"] == pytest.approx(float(rec.mean()), abs=1e-6)
    assert "macro" in metrics.format_table(rep)
    paths = metrics.save_plots(rep, str(tmp_path), prefix="test_")
    names = sorted(p.rsplit("/", 1)[-1] for p in paths)
    per_metric = [f"test_{m}_per_class.png" for m in ("precision", "recall", "f1", "ap", "auc", "accuracy")]
    want = ["test_all_metrics.png", "test_averages.png", "test_metrics.csv", "test_metrics_heatmap.png", *per_metric]
    assert names == sorted(want)
    rows = list(csv.reader(open(tmp_path / "test_metrics.csv")))
    assert rows[0] == ["class", "threshold", "precision", "recall", "f1", "ap", "auc", "accuracy"]
    assert [r[0] for r in rows[1:]] == ["a", "b", "c", "macro-avg", "micro-avg"]
    assert float(rows[2][1]) == 0.3 and float(rows[1][3]) == pytest.approx(float(rec[0]), abs=1e-4)


class _Scores(torch.nn.Module):
    """logits = the mean of the image's top-left quarter per channel (so
    flips and turns change them)."""

    def logits(self, x):
        return x[:, :, : x.shape[2] // 2, : x.shape[3] // 2].mean((2, 3)) * 4

    def predict(self, x):
        return torch.sigmoid(self.logits(x))


def test_tta_averages_the_logits_over_the_views(gen):
    m, x = _Scores(), torch.randn(2, 3, 8, 8, generator=gen)
    views = [x, x.flip(3), x.flip(2), torch.rot90(x, 1, (2, 3))]
    want = torch.sigmoid(torch.stack([m.logits(v) for v in views]).mean(0))
    torch.testing.assert_close(metrics.predict_tta(m, x, "hflip,vflip,rot90"), want)
    torch.testing.assert_close(metrics.predict_tta(m, x, True), torch.sigmoid((m.logits(x) + m.logits(x.flip(3))) / 2))
    torch.testing.assert_close(metrics.predict_tta(m, x, ()), m.predict(x))
    assert metrics.parse_views("") == () and metrics.parse_views(True) == ("hflip",)
    with pytest.raises(ValueError, match="unknown test-time view 'flop'"):
        metrics.parse_views("hflip,flop")


def test_history_curves(tmp_path):
    rows = [
        {"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_map": 0.5 + 0.1 * e, "val_acc_a": 0.7}
        for e in range(3)
    ]
    with open(tmp_path / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    back = metrics.read_log(str(tmp_path / "log.csv"))
    assert back == [{k: float(v) for k, v in r.items()} for r in rows]
    paths = metrics.save_history_curves(back, str(tmp_path / "curves"), classes=["a"])
    # The map curve has its validation half only (no train_map column); nothing for the F1 panel.
    names = [p.rsplit("/", 1)[-1] for p in paths]
    assert names == ["loss_curve.png", "map_curve.png", "training_curves.png", "class_accuracy_curves.png"]
    assert metrics.save_history_curves(back, str(tmp_path / "none"), classes=["b"])[-1].endswith("training_curves.png")
