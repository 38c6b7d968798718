"""python -m hcam_ops.distill.train (docs/distill.md): a teacher alone, FGD
and DistillBEV students from it, convert, dump, COCO folders and one-line
errors; 64 px images, two steps of one image per run, for CPU CI."""

import json
import os

import pytest
import torch

from hcam_ops.data.synthetic_detection import SyntheticDetection, to_coco
from hcam_ops.distill import convert, dump
from hcam_ops.distill.train import main
from hcam_ops.nn.fgd import PRESETS
from hcam_ops.train import build_model, checkpoint
from hcam_ops.train.distill import DISTILLER_NAME, Distiller
from hcam_ops.train.distill.detectors import build

TINY = [
    "--image-size", "64", "--synthetic-size", "2", "--batch-size", "1", "--epochs", "1",
    "--no-tensorboard", "--no-progress",
]  # fmt: skip


def run(out, *flags):
    main([*TINY, "--out", str(out), *flags])
    return os.path.join(out, "last.pth")


def one_line_error(argv_or_fn, *needles):
    with pytest.raises(SystemExit) as e:
        argv_or_fn() if callable(argv_or_fn) else main(argv_or_fn)
    message = str(e.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    teacher = run(root / "teacher", "--no-distill")
    fgd = run(root / "fgd", "--teacher", teacher, "--preset", "fgd")
    # With DistillBEV's false-positive term on from the first epoch (where
    # FGDLoss has it) and a threshold the untrained teacher's scores (about
    # 0.01, RetinaNet's prior) pass: the heatmaps reach the loss.
    fp = {"fp_weight": 1.0, "fp_epoch": 0, "output_threshold": 0.005} if "fp_weight" in PRESETS["distillbev"] else {}
    bev = run(
        root / "bev", "--teacher", teacher, "--preset", "distillbev", "--distill-weight", "0.5",
        "--loss-kwargs", json.dumps(fp),
    )  # fmt: skip
    return {"root": root, "teacher": teacher, "fgd": fgd, "distillbev": bev}


def test_teacher_then_students(runs):
    teacher = checkpoint.load(runs["teacher"])
    assert teacher["model_name"] == "retinanet_resnet50_fpn"
    assert teacher["model_config"] == {"num_classes": 4, "min_size": 64, "max_size": 64}
    for preset in ("fgd", "distillbev"):
        ckpt = checkpoint.load(runs[preset])
        assert ckpt["model_name"] == DISTILLER_NAME and ckpt["model_config"]["preset"] == preset
        assert ckpt["model_config"]["student"]["name"] == "retinanet_resnet18_fpn"
        assert "val_map" in ckpt["metrics"] and "train_loss_fg" in ckpt["metrics"]
        if preset == "distillbev" and "train_loss_fp" in ckpt["metrics"]:
            assert ckpt["metrics"]["train_loss_fp"] > 0
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
    from hcam_ops.train.distill.task import _EpochSampler

    seen = []
    distiller = build_model(checkpoint.load(runs["distillbev"]))
    distiller.distill_loss.set_epoch = seen.append  # whether or not FGDLoss has one
    sampler = _EpochSampler(torch.utils.data.DistributedSampler(range(4), 1, 0), distiller.set_epoch)
    sampler.set_epoch(3)
    assert seen == [3] and len(sampler) == 4


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
