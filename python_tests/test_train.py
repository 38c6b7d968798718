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
from _train_helpers import TINY_HCAST  # noqa: E402

from hcam_ops import checkpoint
from hcam_ops.train import Hierarchy, HierarchyMetrics, build_model, main, sync_bn
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


def test_metrics():
    h = synthetic_hierarchy((4, 2))
    m = HierarchyMetrics(h)
    fine_logits = torch.tensor([[4.0, 3, 2, 1], [1, 4, 3, 2], [1, 2, 4, 3], [3, 2, 1, 4]])
    coarse_logits = F.one_hot(torch.tensor([0, 1, 1, 0]), 2).float()  # parents are 0, 0, 1, 1
    m.update([fine_logits, coarse_logits], h.labels(torch.tensor([0, 1, 2, 2])))
    out = m.compute()
    # top-1: fine predictions 0, 1, 2, 3 against 0, 1, 2, 2; coarse 0, 1, 1, 0 against 0, 0, 1, 1
    assert out["acc_l0"] == 0.75 and out["acc_l1"] == 0.5
    # top-5 of a 4-class level is top-4 (all right); top-2 of the coarse level
    assert out["top5_l0"] == 1.0 and out["top5_l1"] == 1.0
    # full path: samples 0 and 2; the predicted paths (0,0) (1,1) (2,1) (3,0): two are not in the tree
    assert out["full_path_acc"] == 0.5 and out["tice"] == 0.5 and out["consistency"] == 0.5
    h3 = synthetic_hierarchy((4, 2, 1))
    m3 = HierarchyMetrics(h3)
    preds = [F.one_hot(torch.tensor(v), n).float() for v, n in (([0, 2], 4), ([0, 0], 2), ([0, 0], 1))]
    m3.update(preds, h3.labels(torch.tensor([0, 2])))
    out3 = m3.compute()
    # sample 1: fine 2 (parent 1) vs coarse 0 breaks one of its two pairs
    assert out3["tice"] == 0.5 and out3["consistency"] == 0.75 and out3["top5_l2"] == 1.0


def test_synthetic_data_is_deterministic_and_not_constant():
    ds = SyntheticHierarchical(synthetic_hierarchy(), size=32, length=10)
    a, ya = ds[3]
    b, yb = ds[3]
    assert torch.equal(a, b) and ya == yb == 3 and a.std() > 0.1


TINY = [
    *TINY_HCAST,
    "--synthetic-size",
    "48",
    "--no-progress",
]


def test_cli_two_tiny_epochs_then_resume(tmp_path):
    out = tmp_path / "run"
    common = [*TINY, "--batch-size", "16", "--cam-consist", "--globalkl", "--model-ema", "--out", str(out)]
    best = main(["hierarchical", *common, "--epochs", "2", "--amp"])
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert len(rows) == 2 and float(rows[0]["train_cam_loss"]) > 0 and float(rows[0]["train_gk_loss"]) > 0
    want = {"val_full_path_acc", "val_tice", "val_consistency", "val_cam_iou", "val_loss", "lr", "val_top5_l2"}
    assert want | {"val_acc_l0", "train_ce_l1", "val_ema_full_path_acc"} <= set(rows[0])
    for name in ("last.pth", "best.pth", "history.png", "args.json", "predictions.csv"):
        assert (out / name).exists(), name
    assert any((out / "tb").iterdir())
    assert 0 <= best <= 1
    record = json.loads((out / "args.json").read_text())
    assert record["world_size"] == 1 and record["lr"] == pytest.approx(5e-4 * 16 / 512)  # lr * global batch / 512
    predictions = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(predictions) == 12 and predictions[0]["l2_true_name"].startswith("L2_")
    # plain data only: loads with weights_only=True, and names the model
    ckpt = torch.load(out / "last.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["task"] == "hierarchical" and ckpt["model_name"] == "cast_small"
    assert ckpt["model_config"]["embed_dim"] == 48 and ckpt["model_config"]["num_classes"] == (8, 4, 2)
    assert {"optimizer", "scheduler", "scaler", "best", "stale"} <= set(ckpt)
    ema = ckpt["task_state"]["model_ema"]
    assert ema.keys() == ckpt["model"].keys()
    assert any(not torch.equal(ema[k], ckpt["model"][k]) for k in ema)  # an average, not a copy
    model = build_model(ckpt)  # from the file alone
    assert sum(p.numel() for p in model.parameters()) > 0
    # evaluation only (--epochs 0, the published --eval) of best.pth reproduces the run's predictions
    main(["hierarchical", *TINY, "--epochs", "0", "--finetune", str(out / "best.pth"), "--out", str(tmp_path / "ev")])
    assert (tmp_path / "ev" / "predictions.csv").read_text() == (out / "predictions.csv").read_text()
    # resume for one more epoch: rows appended, the epoch counter continues, the EMA goes on from the file's
    from hcam_ops.train.cli import parser
    from hcam_ops.train.hierarchical.task import HierarchicalTask

    resume = ["--task=hierarchical", *common, "--epochs", "3", "--resume", str(out / "last.pth")]
    task = HierarchicalTask(parser().parse_args(route(resume)))
    task.load_state(torch.load(out / "last.pth", weights_only=True)["task_state"])  # as the engine does on resume
    assert all(torch.equal(task.ema.state[k], ema[k]) for k in ema)
    main(resume)
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] == 2


def test_lr_is_scaled_by_the_global_batch(monkeypatch):
    from hcam_ops.train.cli import parser
    from hcam_ops.train.hierarchical.task import HierarchicalTask

    argv = ["hierarchical", *TINY, "--batch-size", "16", "--accumulate", "2", "--lr", "1e-3"]
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    args = parser().parse_args(argv)
    HierarchicalTask(args)
    assert args.lr == pytest.approx(1e-3 * 16 * 2 * 4 / 512) and args.base_lr == 1e-3
    args = parser().parse_args([*argv, "--unscale-lr"])
    HierarchicalTask(args)
    assert args.lr == 1e-3
    # the published recipe's defaults
    assert (args.warmup_epochs, args.min_lr, args.clip_grad, args.smoothing, args.mixup, args.cutmix) == (
        5,
        1e-5,
        0.0,
        0.1,
        0.8,
        1.0,
    )
    assert (args.drop_path, args.gk_weight, args.cam_weight, args.cam_pairs) == (0.1, 0.5, 0.1, "first")
    # several processes: DeiT's repeated-augmentation sampler (published), one process: the engine's
    from hcam_ops.train.distributed import World

    task, data = HierarchicalTask(args), list(range(600))
    sampler = task.train_sampler(data, World(rank=1, size=2, backend="gloo"), 0)
    # DeiT: per process, 3 copies of the data split over the processes, cut to whole 256s: 600 // 256 * 256 / 2
    assert sampler.num_repeats == 3 and len(sampler) == 256 and len(list(sampler)) == 256
    assert task.train_sampler(data, World(), 0) is None


def test_ema_follows_optimizer_steps_only():
    from hcam_ops.train.hierarchical.ema import TaskEma

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = TaskEma(0.9)
    ema.attach(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    for _step in range(3):
        for _ in range(2):  # two micro-batches per step: accumulation does not update the EMA
            model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)  # what the engine's after_step does, once per optimizer step
        for name, p in model.named_parameters():
            want[name] = 0.9 * want[name] + 0.1 * p.detach()
    assert ema.updates == 3
    got = ema.state_dict()
    for name, _ in model.named_parameters():
        torch.testing.assert_close(got[name], want[name])
    torch.testing.assert_close(got["1.running_mean"], model[1].running_mean)  # buffers are copied
    opt.step()
    assert ema.updates == 3
    # a resumed EMA starts from its saved weights, not from the model's
    resumed = TaskEma(0.9, state=got)
    resumed.attach(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)))
    assert all(torch.equal(resumed.module.state_dict()[k], v) for k, v in got.items())


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


def test_sync_batchnorm_keeps_a_frozen_batchnorm_frozen():
    """A BatchNorm whose parameters take no gradient (a frozen teacher's) stays
    so: DDP would wait for gradients that never come."""
    bn = torch.nn.BatchNorm2d(4).requires_grad_(False)
    model, _ = sync_bn.convert(torch.nn.Sequential(bn, torch.nn.BatchNorm2d(4)), torch.device("cpu"))
    assert [p.requires_grad for p in model[0].parameters()] == [False, False]
    assert [p.requires_grad for p in model[1].parameters()] == [True, True]
