"""hcam_ops.train: hierarchy, losses, metrics, and the CLI on synthetic data."""

import csv

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("torchvision", reason="the torchvision package is not installed here")
pytest.importorskip("tqdm", reason="the tqdm package is not installed here")
pytest.importorskip("skimage", reason="the skimage package is not installed here")
import torch
import torch.nn.functional as F

from hcam_ops.train import Hierarchy, HierarchyMetrics, global_kl, main
from hcam_ops.train.data import SyntheticHierarchical, synthetic_hierarchy


def test_hierarchy_from_file(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("# fine,family,maker\na320,a32x,airbus\na321,a32x,airbus\nb737,b737,boeing\nb747,b747,boeing\n")
    h = Hierarchy.from_file(str(path))
    assert h.num_classes == [4, 3, 2]
    labels = h.labels(torch.tensor([0, 2, 3]))
    assert [h.names[1][i] for i in labels[1]] == ["a32x", "b737", "b747"]
    assert [h.names[2][i] for i in labels[2]] == ["airbus", "boeing", "boeing"]
    with pytest.raises(ValueError, match="two parents"):
        Hierarchy.from_rows([["f1", "fam", "m1"], ["f2", "fam", "m2"]])
    with pytest.raises(ValueError, match="listed twice"):
        Hierarchy.from_rows([["a", "x"], ["a", "y"]])


def test_global_kl_is_zero_for_consistent_predictions():
    h = synthetic_hierarchy((4, 2))
    fine = torch.randn(3, 4)
    implied = torch.zeros(3, 2).index_add_(1, h.parents[0], fine.softmax(-1))
    assert float(global_kl([fine, implied.log()], h)) < 1e-6
    other = torch.randn(3, 2)
    want = F.kl_div(other.log_softmax(-1), implied, reduction="batchmean")
    torch.testing.assert_close(global_kl([fine, other], h), want)


def test_metrics():
    h = synthetic_hierarchy((4, 2))
    m = HierarchyMetrics(h)
    fine_logits = F.one_hot(torch.tensor([0, 1, 2, 3]), 4).float()
    coarse_logits = F.one_hot(torch.tensor([0, 1, 1, 0]), 2).float()  # parents are 0, 0, 1, 1
    m.update([fine_logits, coarse_logits], h.labels(torch.tensor([0, 1, 2, 2])))
    out = m.compute()
    assert out["acc_l0"] == 0.75 and out["acc_l1"] == 0.5
    # full path: samples 0 and 2; consistent: parents of the fine predictions
    # (0, 0, 1, 1) against the coarse ones (0, 1, 1, 0)
    assert out["full_path_acc"] == 0.5 and out["consistency"] == 0.5


def test_synthetic_data_is_deterministic_and_not_constant():
    ds = SyntheticHierarchical(synthetic_hierarchy(), size=32, length=10)
    a, ya = ds[3]
    b, yb = ds[3]
    assert torch.equal(a, b) and ya == yb == 3 and a.std() > 0.1


def test_cli_two_tiny_epochs(tmp_path):
    out = tmp_path / "run"
    best = main(["--img-size", "64", "--embed-dim", "48", "--depths", "1,1,1,1", "--num-heads", "4",
                 "--num-clusters", "16,8,4,2", "--num-segments", "16", "--max-segments", "24", "--epochs", "2",
                 "--batch-size", "16", "--synthetic-size", "48", "--cam-consist", "--globalkl", "--amp",
                 "--out", str(out), "--no-progress"])
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 2 and float(rows[0]["cam_loss"]) > 0 and float(rows[0]["gk_loss"]) > 0
    assert (out / "last.pth").exists() and (out / "best.pth").exists() and 0 <= best <= 1
    ckpt = torch.load(out / "last.pth")
    assert ckpt["epoch"] == 1
    # resume for one more epoch
    main(["--img-size", "64", "--embed-dim", "48", "--depths", "1,1,1,1", "--num-heads", "4",
          "--num-clusters", "16,8,4,2", "--num-segments", "16", "--max-segments", "24", "--epochs", "3",
          "--batch-size", "16", "--synthetic-size", "48", "--out", str(out), "--no-progress",
          "--resume", str(out / "last.pth")])
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 3
