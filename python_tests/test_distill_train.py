"""python -m hcam_ops.train distill (docs/distill.md): a teacher alone, FGD
and DistillBEV students from it, convert, dump, COCO folders and one-line
errors; 64 px images, two steps of one image per run (the DistillBEV run:
two epochs, for its false-positive term from the second), for CPU CI."""

import csv
import json
import os

import pytest
import torch
from _train_helpers import exits_with_one_line

from hcam_ops import checkpoint
from hcam_ops.data.synthetic_detection import SyntheticDetection, to_coco
from hcam_ops.models import build_model
from hcam_ops.models.detection import DISTILLER_NAME, Distiller
from hcam_ops.models.detection import build_detector as build
from hcam_ops.nn.fgd_presets import PRESETS, uses_heatmaps
from hcam_ops.train import cli
from hcam_ops.train.distill import convert, dump
from hcam_ops.train.distill.task import DistillTask


def main(argv):
    return cli.main(["distill", *argv])


TINY = [
    "--image-size", "64", "--synthetic-size", "2", "--batch-size", "1", "--epochs", "1",
    "--no-tensorboard", "--no-progress",
]  # fmt: skip


def run(out, *flags):
    main([*TINY, "--out", str(out), *flags])
    return os.path.join(out, "last.pth")


def distill_task(out, *flags):
    """The task ``hcam_ops.train distill`` would build (its checks run), without training."""
    return DistillTask(cli.parser().parse_args(["distill", *TINY, "--out", str(out), *flags]))


def one_line_error(argv_or_fn, *needles):
    return exits_with_one_line(argv_or_fn if callable(argv_or_fn) else lambda: main(argv_or_fn), *needles)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    teacher = run(root / "teacher", "--no-distill")
    fgd = run(root / "fgd", "--teacher", teacher, "--preset", "fgd")
    # Two epochs, DistillBEV's false-positive term on from the second
    # (fp_epoch 1), with a threshold far below the nearly untrained teacher's
    # scores (about 0.01, RetinaNet's prior) and above the ground-truth
    # heatmap's zeros away from the boxes: every background cell is a false
    # positive, so the term is > 0 once FGDLoss.set_epoch(1) has been called.
    fp = {"fp_weight": 1.0, "fp_epoch": 1, "output_threshold": 0.001}
    bev = run(
        root / "bev", "--teacher", teacher, "--preset", "distillbev", "--distill-weight", "0.5",
        "--loss-kwargs", json.dumps(fp), "--epochs", "2",
    )  # fmt: skip
    auto = run(root / "auto", "--teacher", teacher, "--distill-weight", "auto", "--auto-weight-batches", "1")
    return {"root": root, "teacher": teacher, "fgd": fgd, "distillbev": bev, "auto": auto}


def test_teacher_then_students(runs):
    teacher = checkpoint.load(runs["teacher"])
    assert teacher["model_name"] == "retinanet_resnet50_fpn"
    assert teacher["model_config"] == {"num_classes": 4, "min_size": 64, "max_size": 64}
    for preset in ("fgd", "distillbev"):
        ckpt = checkpoint.load(runs[preset])
        assert ckpt["model_name"] == DISTILLER_NAME and ckpt["model_config"]["preset"] == preset
        assert ckpt["model_config"]["student"]["name"] == "retinanet_resnet18_fpn"
        assert "val_map" in ckpt["metrics"] and "train_loss_fg" in ckpt["metrics"]
        if preset == "distillbev":  # the last (second) epoch, with the FP term on
            assert ckpt["epoch"] == 1 and ckpt["metrics"]["train_loss_fp"] > 0
        # The teacher is frozen: its weights and BatchNorm statistics are the checkpoint's.
        # (as FrozenBatchNorm2d, without num_batches_tracked)
        for k, v in teacher["model"].items():
            if not k.endswith("num_batches_tracked"):
                assert torch.equal(ckpt["model"][f"teacher.{k}"], v), k
        assert os.path.isfile(os.path.join(os.path.dirname(runs[preset]), "history.png"))


def test_frozen_teacher_not_in_optimizer(runs):
    from argparse import Namespace

    from hcam_ops.train.engine import _optimizer

    distiller = build_model(checkpoint.load(runs["fgd"]))
    assert isinstance(distiller, Distiller)
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    distiller.train()
    assert distiller.student.training and not distiller.teacher.training
    args = Namespace(opt="sgd", lr=0.01, weight_decay=1e-4, momentum=0.9)
    optimized = {id(p) for g in _optimizer(distiller, args).param_groups for p in g["params"]}
    assert not optimized & {id(p) for p in distiller.teacher.parameters()}
    assert {id(p) for p in distiller.student.parameters()} <= optimized


def test_set_epoch_reaches_the_loss(runs):
    # The engine's set_epoch reaches FGDLoss: no FP term in epoch 0, one in epoch 1 (fp_epoch).
    with open(os.path.join(os.path.dirname(runs["distillbev"]), "log.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[0]["train_loss_fp"]) == 0 and float(rows[1]["train_loss_fp"]) > 0
    assert float(rows[0]["train_loss_fg"]) > 0


def test_heatmaps_only_with_fp_or_regions():
    # DistillBEV's published config has fp_weight 0: no heatmaps unless overridden.
    assert PRESETS["distillbev"]["fp_weight"] == 0 and not uses_heatmaps("distillbev")
    assert not uses_heatmaps("distillbev", {"fp_weight": 0.0}) and not uses_heatmaps("fgd")
    assert uses_heatmaps("distillbev", {"fp_weight": 1.0}) and uses_heatmaps("fgd", {"fp_weight": 0.5})
    assert uses_heatmaps("fgd", {"region_weights": {"fp": 2.0}})


def test_per_image_img_shape(runs):
    # FGD's masks get each image's unpadded size (ImageList.image_sizes), no heatmaps for plain fgd.
    distiller = build_model(checkpoint.load(runs["fgd"])).train()
    assert not distiller.heatmaps
    seen, forward = {}, distiller.distill_loss.forward
    distiller.distill_loss.forward = lambda s, t, **kw: seen.update(kw) or forward(s, t, **kw)
    images = [torch.rand(3, 48, 64), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 8.0, 50.0, 60.0]]), "labels": torch.tensor([2])},
    ]
    parts = distiller(images, targets)
    assert seen["img_shape"] == [(48, 64), (64, 64)]
    assert "teacher_heatmap" not in seen and "gt_heatmap" not in seen
    assert all(torch.isfinite(v) for v in parts.values())


def _two_images(seed=0):
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(2 * seed + i)) for i in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 8.0, 50.0, 60.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


def test_auto_distill_weight_balances_the_largest_term(runs):
    """--distill-weight auto (ours): each calibration batch scales the terms
    by the running factor (sum of detection losses over sum of the largest
    terms); the first batch's largest term therefore equals its detection
    loss; after auto_batches batches the factor is frozen."""
    config = dict(checkpoint.load(runs["fgd"])["model_config"], distill_weight="auto", auto_batches=2)
    torch.manual_seed(0)
    distiller = Distiller.from_config(**config).train()
    factors = []
    for step in range(3):
        out = distiller(*_two_images(step))
        detection = sum(v for k, v in out.items() if not k.startswith("loss_"))  # RetinaNet's two losses
        terms = {k: v for k, v in out.items() if k.startswith("loss_")}
        factors.append(float(distiller.auto_weight.factor()))
        if len(factors) == 1:
            assert max(float(v) for v in terms.values()) == pytest.approx(float(detection), rel=1e-5)
    assert int(distiller.auto_weight.seen) == 2 and distiller.auto_weight.frozen
    assert factors[2] == factors[1] and factors[1] != factors[0]
    state = distiller.state_dict()
    assert int(state["auto_weight.seen"]) == 2 and float(state["auto_weight.term_sum"]) > 0


def test_auto_distill_weight_from_the_cli(runs):
    saved = checkpoint.load(runs["auto"])
    assert saved["model_config"]["distill_weight"] == "auto" and saved["model_config"]["auto_batches"] == 1
    assert int(saved["model"]["auto_weight.seen"]) == 1
    distiller = build_model(saved)
    assert distiller.auto_weight.frozen and float(distiller.auto_weight.factor()) > 0


def test_ddp_unused_parameters_with_multi_scale_epoch(runs):
    def task(*flags):
        return distill_task(runs["root"] / "unused", *flags)

    teacher = ["--teacher", runs["teacher"]]
    assert not task(*teacher).find_unused_parameters
    assert not task(*teacher, "--preset", "distillbev").find_unused_parameters
    assert not task(*teacher, "--loss-kwargs", '{"multi_scale_epoch": 0}').find_unused_parameters
    assert task(*teacher, "--loss-kwargs", '{"multi_scale_epoch": 2}').find_unused_parameters
    assert task(*teacher, "--preset", "distillbev", "--loss-kwargs", '{"multi_scale_epoch": 1}').find_unused_parameters
    assert not task("--no-distill").find_unused_parameters


def test_convert_gives_the_same_student(runs, tmp_path):
    distiller = build_model(checkpoint.load(runs["fgd"])).eval()
    out = tmp_path / "student.pth"
    convert.main([runs["fgd"], str(out)])
    student = build_model(checkpoint.load(str(out))).eval()
    assert type(student).__name__ == "RetinaNet"
    image = SyntheticDetection(1, 64, 3, seed=5)[0][0]
    with torch.no_grad():
        a, b = distiller([image])[0], student([image])[0]
    for k in ("boxes", "scores", "labels"):
        assert torch.equal(a[k], b[k]), k
    # The bare state dict loads into the torchvision detector.
    convert.main([runs["fgd"], str(tmp_path / "sd.pth"), "--state-dict-only"])
    state = torch.load(tmp_path / "sd.pth", weights_only=True)
    plain = build("retinanet_resnet18_fpn", num_classes=4, min_size=64, max_size=64)
    plain.load_state_dict(state)
    assert not any(k.startswith(("teacher.", "distill_loss.", "student.")) for k in state)
    # A converted student is a plain detector: convert refuses it.
    one_line_error(lambda: convert.main([str(out), str(tmp_path / "again.pth")]), str(out))


def test_dump_writes_pngs(runs, tmp_path):
    paths = dump.main([runs["distillbev"], "--out", str(tmp_path / "maps"), "--batch", "2"])
    assert [os.path.basename(p) for p in paths] == [f"level{i}_P{i + 3}.png" for i in range(5)]
    assert all(os.path.getsize(p) > 1000 for p in paths)


def test_coco_folder(tmp_path):
    folder = tmp_path / "coco"
    to_coco(SyntheticDetection(3, 64, 2, seed=3), str(folder / "annotations.json"), image_dir=str(folder / "images"))
    last = run(tmp_path / "run", "--data", str(folder), "--student-alone", "--teacher-arch", "fcos")
    ckpt = checkpoint.load(last)
    assert ckpt["model_name"] == "fcos_resnet18_fpn" and ckpt["model_config"]["num_classes"] == 3
    assert ckpt["task_state"]["classes"] == ["circle", "square"]


def test_bad_inputs(runs, tmp_path):
    teacher = runs["teacher"]
    one_line_error([*TINY, "--teacher", teacher, "--preset", "fgdx"], "--preset 'fgdx'", "fgd", "distillbev")
    one_line_error([*TINY, "--teacher", str(tmp_path / "none.pth")], "--teacher", "no such file")
    one_line_error([*TINY, "--teacher", runs["fgd"]], "--teacher", "distillation run")
    other = tmp_path / "other.pth"
    torch.save({"format": checkpoint.FORMAT, "model_name": "cast_small", "model_config": {}, "model": {}}, other)
    one_line_error([*TINY, "--teacher", str(other)], "--teacher", "cast_small")
    one_line_error([*TINY, "--teacher", teacher, "--num-classes", "2"], "--teacher", "3 object classes")
    one_line_error([*TINY, "--teacher", teacher, "--teacher-arch", "fcos"], "--teacher-arch fcos")
    one_line_error([*TINY, "--loss-kwargs", "[1]", "--teacher", teacher], "--loss-kwargs")
    # Per-level weights are one a level of P3-P7: five pass, four are refused.
    five = '{"fg_weight": [1e-3, 1e-3, 1e-3, 0, 0]}'
    distill_task(tmp_path / "five", "--teacher", teacher, "--loss-kwargs", five)
    one_line_error(
        [*TINY, "--teacher", teacher, "--loss-kwargs", '{"fg_weight": [1, 1, 1, 1]}'],
        "--loss-kwargs",
        "4 values for 5 levels",
    )
    one_line_error([*TINY, "--teacher", teacher, "--distill-weight", "often"], "--distill-weight", "'often'")
    one_line_error([*TINY, "--teacher", teacher, "--auto-weight-batches", "0"], "--auto-weight-batches")
    # A bad annotation row names the file and the row.
    folder = tmp_path / "coco"
    to_coco(SyntheticDetection(3, 64, 2, seed=3), str(folder / "annotations.json"), image_dir=str(folder / "images"))
    coco = json.loads((folder / "annotations.json").read_text())
    coco["annotations"][1]["bbox"] = [4, 4, -3, 10]
    (folder / "annotations.json").write_text(json.dumps(coco))
    one_line_error([*TINY, "--no-distill", "--data", str(folder)], "annotations.json", "annotations[1]", "bbox")
    coco["annotations"][1]["bbox"] = [4, 4, "x", 10]
    (folder / "annotations.json").write_text(json.dumps(coco))
    one_line_error([*TINY, "--no-distill", "--data", str(folder)], "annotations[1]", "four numbers")
    one_line_error([*TINY, "--no-distill", "--data", str(tmp_path / "nowhere")], "--data", "no such folder")
