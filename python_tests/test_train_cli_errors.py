"""Bad input to the training and CAM CLIs ends in one line that names the flag,
or the file and row, never a traceback from inside torch or argparse."""

import pytest

pytest.importorskip("timm", reason="the timm package is not installed here")
pytest.importorskip("skimage", reason="the skimage package is not installed here")
import torch  # noqa: E402
from _train_helpers import QUICK, TINY_HCAST, TINY_MULTILABEL, exits_with_one_line  # noqa: E402

from hcam_ops.train import main  # noqa: E402

TINY_H = ["hierarchical", *TINY_HCAST, *QUICK]
TINY_M = ["multilabel", *TINY_MULTILABEL, *QUICK]


def _fails(argv, *expected):
    return exits_with_one_line(lambda: main(argv), *expected)


def _csv(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_on_a_cpu_machine(tmp_path):
    _fails([*TINY_H, "--device", "cuda", "--out", str(tmp_path)], "--device cuda", "CUDA is not available")


def test_simple_flag_errors(tmp_path):
    out = ["--out", str(tmp_path / "o")]
    _fails([*TINY_H, "--device", "gpu0", *out], "--device 'gpu0'")
    _fails(["--task", "bogus"], "--task 'bogus'")
    _fails(["--task"], "--task")
    _fails(["--task", "multilabel", "hierarchical"], "contradicts")
    _fails([*TINY_H, "--img-size", "100", *out], "--img-size 100", "stride 8")
    _fails([*TINY_H, "--num-clusters", "64,32,16,8", *out], "--num-clusters", "24 segment tokens")
    _fails([*TINY_H, "--num-clusters", "16,x", *out], "--num-clusters '16,x'")
    _fails([*TINY_H, "--num-clusters", "16,8", *out], "one entry per stage")
    _fails([*TINY_H, "--data", str(tmp_path / "nowhere"), *out], "--data", "no such folder")
    _fails([*TINY_H, "--accumulate", "0", *out], "--accumulate 0")
    _fails([*TINY_H, "--sched", "bogus", *out], "--sched", "invalid choice")
    _fails([*TINY_M, "--img-size", "100", *out], "--img-size 100", "stride 32")
    _fails([*TINY_M, "--backbone-kwargs", "{bad json", *out], "--backbone-kwargs", "not valid JSON")
    _fails([*TINY_M, "--backbone-kwargs", "[1]", *out], "--backbone-kwargs", "JSON object")
    _fails([*TINY_M, "--oversample", "rusty", *out], "--oversample", "'rusty' is not a class")
    _fails([*TINY_M, "--oversample", "rust", "--oversample-factor", "2.5", *out], "--oversample-factor 2.5")
    _fails([*TINY_M, "--oversample-mode", "bogus", *out], "--oversample-mode", "invalid choice")
    _fails([*TINY_M, "--model", "cast_small", *out], "--model cast_small", "not a multi-label model")
    _fails([*TINY_M, "--train-csv", str(tmp_path / "none.csv"), *out], "--train-csv", "no such file")


def test_hierarchy_file_errors(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    base = [*TINY_H, "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    _fails(base, "--hierarchy (with --data) is required")
    empty = _csv(tmp_path / "empty.csv", "# fine,family\n\n")
    _fails([*base, "--hierarchy", empty], "empty.csv", "no rows")
    ragged = _csv(tmp_path / "ragged.csv", "a,x,m\nb,y\n")
    _fails([*base, "--hierarchy", ragged], "ragged.csv line 2", "2 columns")
    twice = _csv(tmp_path / "twice.csv", "# header\na,x\nb,x\na,y\n")
    _fails([*base, "--hierarchy", twice], "twice.csv line 4", "listed twice", "line 2")


def test_hcast_flag_errors(tmp_path):
    out = ["--out", str(tmp_path / "o")]
    _fails([*TINY_H, "--model", "hcast_small", *out], "--model hcast_small", "not a hierarchical model")
    _fails([*TINY_H, "--depths", "1,1", *out], "--depths 1,1", "four stages")
    _fails([*TINY_H, "--img-size", "24", "--num-clusters", "16,8,4,2", *out], "--num-clusters", "3x3 grid")
    _fails([*TINY_H, "--synthetic-levels", "8,4,2,1", *out], "4 levels", "1 to 3")
    _fails([*TINY_H, "--synthetic-levels", "8", "--cam-consist", *out], "--cam-consist", "two levels")
    _fails([*TINY_H, "--cam-pairs", "all", *out], "--cam-pairs", "invalid choice")
    _fails([*TINY_H, "--smoothing", "1.5", *out], "--smoothing 1.5")
    _fails([*TINY_H, "--mixup", "-1", *out], "--mixup and --cutmix")
    _fails([*TINY_H, "--cutmix-minmax", "0.8", "0.2", *out], "--cutmix-minmax")
    _fails([*TINY_H, "--drop-path", "1", *out], "--drop-path 1")
    _fails([*TINY_H, "--finetune", str(tmp_path / "none.pth"), *out], "--finetune", "no such file")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    _fails([*TINY_H, "--finetune", str(junk), "--epochs", "1", *out], "--finetune", "junk.pth", "not a loadable")
    _fails([*TINY_H, "--data-set", "nabirds", *out], "--data-set", "invalid choice")
    (tmp_path / "cub" / "train" / "birds").mkdir(parents=True)
    _fails([*TINY_H, "--data-set", "cub", "--data-path", str(tmp_path / "cub"), *out], "--data", "not a CUB class")
    _fails(
        [*TINY_H, "--data-set", "cub", "--data", str(tmp_path / "cub"), "--hierarchy", "h.csv", *out],
        "--hierarchy",
        "its own",
    )
    _fails([*TINY_H, "--data-set", "aircraft", "--data", str(tmp_path), *out], "--data", "fgvc-aircraft-2013b")


def test_label_csv_errors(tmp_path):
    header = "image,scab,healthy,frog_eye_leaf_spot,rust,complex,powdery_mildew\n"
    good = _csv(tmp_path / "good.csv", header + "a.jpg,1,0,0,0,0,0\n")
    out = ["--out", str(tmp_path / "o")]
    _fails([*TINY_M, "--train-csv", good, *out], "--val-csv (with --train-csv) is required")
    yes = _csv(tmp_path / "yes.csv", header + "a.jpg,1,0,0,0,0,0\nb.jpg,0,0,0,yes,0,0\n")
    _fails([*TINY_M, "--train-csv", yes, "--val-csv", good, *out], "yes.csv line 3, column 'rust'", "'yes'")
    two = _csv(tmp_path / "two.csv", header + "a.jpg,2,0,0,0,0,0\n")
    _fails([*TINY_M, "--train-csv", good, "--val-csv", two, *out], "two.csv line 2, column 'scab'", "'2'")
    cols = _csv(tmp_path / "cols.csv", "image,scab\na.jpg,1\n")
    _fails([*TINY_M, "--train-csv", cols, "--val-csv", good, *out], "cols.csv", "no column for the classes")


def test_resume_errors(tmp_path):
    out = tmp_path / "run"
    main([*TINY_H, "--epochs", "1", "--out", str(out)])
    _fails(
        [*TINY_H, "--embed-dim", "32", "--epochs", "2", "--out", str(out), "--resume", str(out / "last.pth")],
        "--resume",
        "another configuration",
        "embed_dim 48 != 32",
    )
    _fails(
        [*TINY_M, "--epochs", "2", "--out", str(tmp_path / "m"), "--resume", str(out / "last.pth")],
        "task 'hierarchical' != 'multilabel'",
    )
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    _fails([*TINY_H, "--out", str(out), "--resume", str(junk)], "--resume", "junk.pth", "not a loadable checkpoint")
    _fails([*TINY_H, "--out", str(out), "--resume", str(tmp_path / "missing.pth")], "missing.pth: no such file")
