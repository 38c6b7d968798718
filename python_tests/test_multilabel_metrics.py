"""hcam_ops.metrics: the threshold search and the multi-label report."""

import pytest

pytest.importorskip("torchmetrics", reason="the torchmetrics package is not installed here")
import torch  # noqa: E402

from hcam_ops.metrics import format_table, multilabel_report, save_plots, search_thresholds  # noqa: E402


def test_threshold_search_picks_the_f1_optimum():
    # A score above the threshold is positive. Class 0: positives 0.6-0.7,
    # negatives up to 0.55: 0.55 is the only perfect grid point. Class 1:
    # positives at 0.3, a negative at 0.35 above them and one at 0.1: F1 is
    # 0.857 for thresholds 0.1 .. 0.25 (the lowest wins the tie), 0.75 at 0.05,
    # 0 from 0.3 up.
    probs = torch.tensor([[0.6, 0.3], [0.7, 0.3], [0.65, 0.3], [0.2, 0.35], [0.55, 0.1], [0.3, 0.05]])
    labels = torch.tensor([[1, 1], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0]])
    t = search_thresholds(probs, labels)
    torch.testing.assert_close(t, torch.tensor([0.55, 0.1]))


def test_report_values(tmp_path, gen):
    probs = torch.rand(40, 3, generator=gen)
    labels = (torch.rand(40, 3, generator=gen) < 0.4).int()
    labels[0] = 1  # each class has a positive
    thr = torch.tensor([0.5, 0.3, 0.7])
    rep = multilabel_report(probs, labels, thr, ["a", "b", "c"])
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
    assert "macro" in format_table(rep)
    paths = save_plots(rep, str(tmp_path))
    assert all(p.endswith(".png") for p in paths)
