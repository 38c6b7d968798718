"""hcam_ops.train: hierarchy, losses, metrics, and the CLI on synthetic data."""

import csv
import json

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("torchvision", reason="the torchvision package is not installed here")
pytest.importorskip("tqdm", reason="the tqdm package is not installed here")
pytest.importorskip("skimage", reason="the skimage package is not installed here")
import torch
import torch.nn.functional as F

from hcam_ops.train import Hierarchy, HierarchyMetrics, build_model, checkpoint, global_kl, main, sync_bn
from hcam_ops.train.cli import route
from hcam_ops.train.hierarchical.data import SyntheticHierarchical, synthetic_hierarchy
from hcam_ops.train.history import History


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


TINY = [
    "--img-size",
    "64",
    "--embed-dim",
    "48",
    "--depths",
    "1,1,1,1",
    "--num-heads",
    "4",
    "--num-clusters",
    "16,8,4,2",
    "--num-segments",
    "16",
    "--max-segments",
    "24",
    "--synthetic-size",
    "48",
    "--no-progress",
]


def test_cli_two_tiny_epochs_then_resume(tmp_path):
    out = tmp_path / "run"
    best = main(
        [
            "hierarchical",
            *TINY,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--cam-consist",
            "--globalkl",
            "--amp",
            "--out",
            str(out),
        ]
    )
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 2 and float(rows[0]["train_cam_loss"]) > 0 and float(rows[0]["train_gk_loss"]) > 0
    assert {"val_full_path_acc", "val_consistency", "val_cam_iou", "val_loss", "lr"} <= set(rows[0])
    for name in ("last.pth", "best.pth", "history.png", "args.json"):
        assert (out / name).exists(), name
    assert any((out / "tb").iterdir())
    assert 0 <= best <= 1
    assert json.loads((out / "args.json").read_text())["world_size"] == 1
    # plain data only: loads with weights_only=True, and names the model
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["task"] == "hierarchical" and ckpt["model_name"] == "hcast_small"
    assert ckpt["model_config"]["embed_dim"] == 48 and ckpt["model_config"]["num_classes"] == (8, 4, 2)
    assert {"optimizer", "scheduler", "scaler", "best", "stale"} <= set(ckpt)
    model = build_model(ckpt)  # from the file alone
    assert sum(p.numel() for p in model.parameters()) > 0
    # resume for one more epoch: rows appended, the epoch counter continues
    main(
        [
            "--task=hierarchical",
            *TINY,
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--out",
            str(out),
            "--cam-consist",
            "--globalkl",
            "--resume",
            str(out / "last.pth"),
        ]
    )
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 2


def test_routing_of_task_and_subcommand():
    assert route(["--epochs", "1"]) == ["hierarchical", "--epochs", "1"]
    assert route(["--task", "multilabel", "--epochs", "1"]) == ["multilabel", "--epochs", "1"]
    assert route(["--epochs", "1", "--task=multilabel"]) == ["multilabel", "--epochs", "1"]
    assert route(["multilabel", "--epochs", "1"]) == ["multilabel", "--epochs", "1"]
    assert route(["--help"]) == ["--help"]


def test_history_plot_and_csv(tmp_path):
    h = History(str(tmp_path), resume=False, tensorboard=False)
    for e in range(3):
        h.append({"epoch": e, "lr": 0.1, "train_loss": 1.0 / (e + 1), "val_acc": 0.2 * e, "seconds": 1.0})
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [float(r["train_loss"]) for r in rows] == [1.0, 0.5, 1 / 3]
    assert (tmp_path / "history.png").stat().st_size > 0
    again = History(str(tmp_path), resume=True, tensorboard=False)
    assert len(again.rows) == 3 and again.columns == ["epoch", "lr", "train_loss", "val_acc", "seconds"]


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    checkpoint.save({"epoch": 1, "w": torch.ones(3)}, path)

    def killed(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"trunc")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1  # the old file is whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary left


def test_sync_batchnorm_is_plain_batchnorm_in_one_process(gen):
    bn = torch.nn.BatchNorm2d(5)
    bn.weight.data.uniform_(0.5, 1.5)
    model, n = sync_bn.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 5, 1), bn), torch.device("cpu"))
    assert n == 1 and isinstance(model[1], sync_bn.GlooSyncBatchNorm)
    assert set(model.state_dict()) == set(
        torch.nn.Sequential(torch.nn.Conv2d(3, 5, 1), torch.nn.BatchNorm2d(5)).state_dict()
    )
    x = torch.randn(4, 5, 3, 3, generator=gen)
    ref = torch.nn.BatchNorm2d(5)
    ref.load_state_dict(bn.state_dict())
    torch.testing.assert_close(model[1](x), ref(x))
