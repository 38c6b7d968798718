"""The CLIs' bad input that used to end in a traceback, a misleading line or
silence ("Training that never saves garbage"): each is one line naming the
flag, file or row, checked before any work; a checkpoint names its model
only among this package's models; the CAM overlay keeps the photo's size;
every CLI's --help loads none of the heavy libraries."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("skimage", reason="the skimage package is not installed here")
import timm  # noqa: E402
import torch  # noqa: E402
from _train_helpers import QUICK, TINY_HCAST, TINY_MULTILABEL, exits_with_one_line  # noqa: E402
from PIL import Image  # noqa: E402

from hcam_ops import checkpoint  # noqa: E402
from hcam_ops.data.plant_pathology import LEAF_CLASSES  # noqa: E402
from hcam_ops.train import main as train_main  # noqa: E402

TINY_H = ["hierarchical", *TINY_HCAST, *QUICK]
TINY_M = ["multilabel", *TINY_MULTILABEL, *QUICK]
DISTILL = ["distill", "--no-distill", "--image-size", "64", "--synthetic-size", "2", "--no-progress"]
HEADER = "image," + ",".join(LEAF_CLASSES) + "\n"


def _train_fails(argv, *expected):
    return exits_with_one_line(lambda: train_main(argv), *expected)


def _png(path, size=(64, 64)):
    Image.new("RGB", size, (90, 140, 60)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def multilabel_ckpt(tmp_path_factory):
    """A multi-label checkpoint of the tiny Swin (random weights), as the
    training CLI writes it."""
    config = {"num_classes": 6, "img_size": 64, "backbone_kwargs": {"embed_dim": 24, "depths": [1, 1, 1, 1],
              "num_heads": [1, 1, 2, 2], "window_size": 2}}  # fmt: skip
    torch.manual_seed(0)
    model = timm.create_model("arc_psa_swin_tiny", **config)
    path = tmp_path_factory.mktemp("ckpt") / "best.pth"
    ckpt = checkpoint.model_checkpoint(
        "arc_psa_swin_tiny", config, model.state_dict(), task="multilabel", task_state={"classes": list(LEAF_CLASSES)}
    )
    torch.save(ckpt, path)
    return str(path)


def test_cli_errors_survive_a_process_boundary():
    """A CLIError or InputError raised in a worker process (pickled back by
    multiprocessing) is the same one line, not "error: error: ..." or a
    TypeError from rebuilding it."""
    import pickle

    from hcam_ops._cli import CLIError, InputError

    e = pickle.loads(pickle.dumps(CLIError("--teacher x.pth: no such file")))
    assert type(e) is CLIError and str(e) == "error: --teacher x.pth: no such file" and e.code == str(e)
    i = pickle.loads(pickle.dumps(InputError("boxes", "expected [N, 4]")))
    assert type(i) is InputError and (i.argument, str(i)) == ("boxes", "boxes: expected [N, 4]")


# -- training: flags checked when parsed --------------------------------------------


def test_task_numeric_flags_are_checked_when_parsed(tmp_path):
    out = ["--out", str(tmp_path / "o")]
    _train_fails([*TINY_H, "--synthetic-size", "0", *out], "argument --synthetic-size", "0 must be > 0")
    _train_fails([*TINY_M, "--synthetic-size", "0", *out], "argument --synthetic-size", "0 must be > 0")
    _train_fails([*DISTILL, "--synthetic-size", "0", *out], "argument --synthetic-size", "0 must be > 0")
    _train_fails([*TINY_H, "--synthetic-levels", "4,8", *out], "--synthetic-levels 4,8", "fewer classes")
    _train_fails([*TINY_H, "--synthetic-levels", "4,4", *out], "--synthetic-levels 4,4")
    _train_fails([*TINY_H, "--cam-weight", "nan", *out], "argument --cam-weight", "'nan' is not a finite number")
    _train_fails([*TINY_H, "--cam-weight", "-0.5", *out], "argument --cam-weight", "-0.5 must be >= 0")
    _train_fails(
        [*DISTILL, "--distill-weight", "nan", *out], "argument --distill-weight", "'nan' is not a finite number"
    )
    _train_fails(
        [*DISTILL, "--distill-weight", "inf", *out], "argument --distill-weight", "'inf' is not a finite number"
    )
    _train_fails([*DISTILL, "--image-size", "0", *out], "argument --image-size", "0 must be > 0")
    _train_fails([*TINY_H, "--img-size", "100000", *out], "argument --img-size", "100000 must be at most 4096")
    _train_fails([*TINY_M, "--img-size", "100000", *out], "argument --img-size", "100000 must be at most 4096")


def test_train_out_that_is_a_file(tmp_path):
    out = tmp_path / "taken"
    out.write_text("a file")
    for argv in (TINY_H, TINY_M, DISTILL):
        _train_fails([*argv, "--epochs", "1", "--out", str(out)], f"--out {out}", "is a file")
    _train_fails([*TINY_H, "--epochs", "1", "--out", str(out / "run")], "--out", "is a file")


def test_csv_rows_naming_bad_images_are_named_before_training(tmp_path):
    good = _png(tmp_path / "a.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "text.png").write_text("not an image")
    val = tmp_path / "val.csv"
    val.write_text(HEADER + f"{os.path.basename(good)},1,0,0,0,0,0\n")
    out = ["--epochs", "1", "--out", str(tmp_path / "o")]
    for name, reason in (("missing.png", "no such file"), ("folder.png", "a folder"), ("text.png", "not an image")):
        train = tmp_path / f"train_{name}.csv"
        train.write_text(HEADER + "a.png,1,0,0,0,0,0\n" + f"{name},0,1,0,0,0,0\n")
        _train_fails([*TINY_M, "--train-csv", str(train), "--val-csv", str(val), *out], f"{train} line 3", name, reason)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + "caf\xe9.png,1,0,0,0,0,0\n".encode("latin-1"))
    _train_fails([*TINY_M, "--train-csv", str(latin), "--val-csv", str(val), *out], "latin.csv", "not UTF-8")


def test_backbone_checkpoint_that_is_a_text_file(tmp_path):
    text = tmp_path / "weights.txt"
    text.write_text("hello\n")
    _train_fails(
        [*TINY_M, "--backbone-checkpoint", str(text), "--epochs", "1", "--out", str(tmp_path / "o")],
        f"--backbone-checkpoint {text}",
        "not a loadable weights file",
    )


def test_epochs_0_without_weights_says_so(tmp_path, capsys):
    train_main([*TINY_H, "--synthetic-size", "8", "--epochs", "0", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert "--epochs 0 without --finetune or --resume: evaluating randomly initialised weights" in out
    # The banner names the model as built (--embed-dim 48 of the tiny run), not only its timm name.
    banner = next(line for line in out.splitlines() if line.startswith("hcam_ops.train hierarchical:"))
    assert "model cast_small(" in banner and "embed_dim=48" in banner, banner


def test_test_report_without_test_csv_is_labelled_validation(tmp_path, capsys):
    rows = "".join(f"{_png(tmp_path / f'{i}.png')},{i % 2},{1 - i % 2},0,0,0,0\n" for i in range(4))
    (tmp_path / "train.csv").write_text(HEADER + rows)
    (tmp_path / "val.csv").write_text(HEADER + rows)
    base = ["--train-csv", str(tmp_path / "train.csv"), "--val-csv", str(tmp_path / "val.csv"), "--epochs", "1"]
    train_main([*TINY_M, *base, "--batch-size", "4", "--out", str(tmp_path / "o")])
    assert "test = the validation split" in capsys.readouterr().out
    train_main(
        [*TINY_M, *base, "--batch-size", "4", "--test-csv", str(tmp_path / "val.csv"), "--out", str(tmp_path / "p")]
    )
    assert "test = the validation split" not in capsys.readouterr().out


# -- the CAM tools -------------------------------------------------------------------


def test_cam_bad_input_is_one_line(tmp_path, multilabel_ckpt):
    from hcam_ops.cam.__main__ import main as cam_main

    image = _png(tmp_path / "leaf.png")
    run = ["--checkpoint", multilabel_ckpt, "--image", image]
    taken = tmp_path / "taken"
    taken.write_text("a file")
    exits_with_one_line(lambda: cam_main([*run, "--out", str(taken)]), f"--out {taken}", "is a file")
    exits_with_one_line(lambda: cam_main([*run, "--out", str(tmp_path / "o"), "--img-size", "33"]), "--img-size 33")
    exits_with_one_line(
        lambda: cam_main([*run, "--out", str(tmp_path / "o"), "--img-size", "100000"]),
        "argument --img-size",
        "100000 must be at most 4096",
    )
    exits_with_one_line(
        lambda: cam_main([*run, "--out", str(tmp_path / "o"), "--classes", "a,b"]), "--classes a,b", "2 names", "6"
    )
    exits_with_one_line(
        lambda: cam_main([*run, "--out", str(tmp_path / "o"), "--method", "nocam"]), "--method 'nocam'", "gradcam"
    )


@pytest.mark.parametrize(
    "name, tool", [("hcam_distiller", "hcam_ops.train.distill.convert"), ("fcos_resnet18_fpn", "hcam_ops.cam.detect")]
)
def test_cam_names_the_tool_for_a_detector_checkpoint(tmp_path, name, tool):
    from hcam_ops.cam.__main__ import main as cam_main

    path = tmp_path / "det.pth"
    torch.save(checkpoint.model_checkpoint(name, {"num_classes": 4}, {}, task="distill"), path)
    argv = ["--checkpoint", str(path), "--image", _png(tmp_path / "x.png"), "--out", str(tmp_path)]
    exits_with_one_line(lambda: cam_main(argv), f"--checkpoint {path}", tool)


def test_detect_names_the_tool_for_a_training_checkpoint(tmp_path, multilabel_ckpt):
    from hcam_ops.cam.detect import main as detect_main

    image = _png(tmp_path / "x.png")
    argv = ["--checkpoint", multilabel_ckpt, "--image", image, "--out", str(tmp_path / "o")]
    exits_with_one_line(
        lambda: detect_main(argv), "python -m hcam_ops.train multilabel", "python -m hcam_ops.cam draws"
    )
    taken = tmp_path / "taken"
    taken.write_text("a file")
    exits_with_one_line(
        lambda: detect_main(["--checkpoint", multilabel_ckpt, "--image", image, "--out", str(taken)]), "is a file"
    )


def test_cam_overlay_keeps_the_photos_size(tmp_path, multilabel_ckpt):
    from hcam_ops.cam.__main__ import main as cam_main

    photo = _png(tmp_path / "photo.png", size=(128, 96))
    cam_main(["--checkpoint", multilabel_ckpt, "--image", photo, "--out", str(tmp_path / "o")])
    picture = Image.open(tmp_path / "o" / "cam_scab.png")
    assert picture.width == 128 and picture.height > 96  # the photo, with the caption band above it


# -- checkpoints name only this package's models -------------------------------------


@pytest.mark.parametrize(
    "name, config, expected",
    [
        ("resnet18", {}, "'resnet18' is not one of the models hcam_ops registers"),
        ("nothing_at_all", {}, "not one of the models"),
        ("arc_psa_swin_tiny", {"pretrained": True}, "'pretrained' is refused"),
        ("arc_psa_swin_tiny", {"checkpoint_path": "/etc/hostname"}, "'checkpoint_path' is refused"),
        ("arc_psa_swin_tiny", {"pretrained_cfg_overlay": {"file": "x"}}, "'pretrained_cfg_overlay' is refused"),
        ("arc_psa_swin_tiny", {"num_classes": 6, "bogus": 1}, "bogus"),
    ],
)
def test_build_model_takes_only_registered_models_and_their_keys(name, config, expected):
    from hcam_ops.models import build_model

    ckpt = checkpoint.model_checkpoint(name, config, {}, task="multilabel")
    exits_with_one_line(lambda: build_model(ckpt, "crafted.pth"), "crafted.pth", expected)


def test_load_backbone_reads_weights_only(tmp_path, monkeypatch):
    from hcam_ops.models._factory import load_backbone

    seen = {}

    def fake(path, **kwargs):
        seen.update(kwargs)
        return {}

    monkeypatch.setattr(timm.models, "load_state_dict", fake)
    with pytest.raises(ValueError, match="does not fit"):
        load_backbone(torch.nn.Linear(2, 2), "x.pth")
    assert seen.get("weights_only") is True


# -- the other tools -----------------------------------------------------------------


def test_convert_output_that_is_a_folder(tmp_path):
    from hcam_ops.train.distill import convert

    (tmp_path / "in.pth").write_bytes(b"x")
    exits_with_one_line(
        lambda: convert.main([str(tmp_path / "in.pth"), str(tmp_path)]), f"OUT {tmp_path}", "is a folder"
    )


def test_plant_pathology_out_file_and_non_utf8_csv(tmp_path):
    from hcam_ops.data.plant_pathology import main as pp_main

    (tmp_path / "train_images").mkdir()
    csv = tmp_path / "train.csv"
    csv.write_bytes(b"image,labels\n" + "caf\xe9.jpg,scab\n".encode("latin-1"))
    exits_with_one_line(lambda: pp_main([str(tmp_path), "--out", str(tmp_path / "o")]), "train.csv", "not UTF-8")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    exits_with_one_line(lambda: pp_main([str(tmp_path), "--out", str(taken)]), f"--out {taken}", "is a file")


# -- --help loads no heavy library ---------------------------------------------------

HEAVY = ("timm", "torchvision", "matplotlib", "pytorch_grad_cam", "cv2", "sklearn", "torchmetrics")
CLIS = [
    ["hcam_ops.train"],
    ["hcam_ops.train", "hierarchical"],
    ["hcam_ops.train", "multilabel"],
    ["hcam_ops.train", "distill"],
    ["hcam_ops.train.distill.convert"],
    ["hcam_ops.train.distill.dump"],
    ["hcam_ops.train.synthetic_detector"],
    ["hcam_ops.cam"],
    ["hcam_ops.cam.detect"],
    ["hcam_ops.cam.attention_gif"],
    ["hcam_ops.data.plant_pathology"],
]
# Runs the module as `python -m` does, then lists the heavy modules it loaded.
WRAPPER = """
import runpy, sys
module, heavy = sys.argv[1], sys.argv[2].split(",")
sys.argv = [module, *sys.argv[3:]]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert e.code in (0, None), e.code
print("LOADED:" + ",".join(h for h in heavy if h in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize("cli", CLIS, ids=" ".join)
def test_help_loads_no_heavy_library(cli):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, cli[0], ",".join(HEAVY), *cli[1:], "--help"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "LOADED:", done.stderr
